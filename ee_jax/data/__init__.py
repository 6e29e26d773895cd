"""Datasets: the built-in corpus and Grain pipelines."""

from ee_jax.data.corpus import read_corpus, synthetic_corpus
from ee_jax.data.lm_dataset import lm_batches, pack_windows

__all__ = ["lm_batches", "pack_windows", "read_corpus", "synthetic_corpus"]
