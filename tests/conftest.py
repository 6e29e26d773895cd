"""Test session set-up: 8 simulated CPU devices, before JAX initialises its backend."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent compilation cache for the whole session, fresh each session (the controller makes it;
# xdist workers and the CLI subprocesses the tests start inherit it): the same tiny train and decode
# steps are compiled again and again by different tests and processes, and test_run.py alone went from
# 146 s to 96 s with it. Fresh, so no test passes on an executable an earlier checkout compiled.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ee_jax_tests_jit_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from absl import flags  # noqa: E402

# grain 0.2.18 reads absl flags in mp_prefetch workers (google/grain#1355).
flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

TINY = [
    "model.preset=ee-1m", "model.vocab_size=128", "model.d_model=32", "model.num_heads=4",
    "model.num_kv_heads=2", "model.ffn_dim=64", "model.num_layers=2", "model.max_seq_len=128",
    "train.batch_size=8", "train.seq_len=16",
]


@pytest.fixture
def tiny_config():
    """Factory: a validated tiny Config (2 layers, d=32) with extra dotted overrides."""
    from ee_jax.config import load_config

    def make(*overrides: str):
        return load_config(None, TINY + list(overrides))

    return make


def require(module: str):
    """Import an optional package for a test. Outside CI a missing package skips the test; in CI
    (``CI=true``, where ``.ci/run`` installs every extra) it fails, so nothing is silently skipped."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


def packaged_model_file(name: str) -> str:
    """The GGUF of packaged model ``name`` (``ee_jax.models.packaged``). A missing package skips the
    test outside CI and fails it in CI, like :func:`require`."""
    from ee_jax.models.packaged import packaged_gguf

    try:
        return packaged_gguf(name)
    except FileNotFoundError as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise
        pytest.skip(str(e))


# The files that take minutes, longest first (measured with --durations=0; BENCHMARKS.md "Test suite").
# pytest-xdist's loadfile scheduler hands files to the two workers in collection order (pyproject.toml
# turns off its default reordering by test count, which put these few-test files last), so sorting the
# longest to the front keeps both workers busy to the end instead of one finishing minutes early.
SLOW_FILES = ("test_rl.py", "test_gguf.py", "test_distributed.py", "test_run.py", "test_rl_learning.py",
              "test_recipes.py", "test_sweep.py", "test_lm.py", "test_models.py", "test_collection_determinism.py",
              "test_hf_parity.py", "test_plan.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept within a file
