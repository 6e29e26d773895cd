"""`ee-jax lm` end to end through the real command: it learns, resumes exactly, and samples."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["train.steps=100", "train.log_every=10", "train.eval_every=50", "train.checkpoint_every=50",
          "tokenizer.vocab_size=384", "--no-progress"]


def ee_jax(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", *args, "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # the JSON object is the last line


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {r["step"]: r["lm/train/loss"] for r in map(json.loads, f) if "lm/train/loss" in r}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("lm") / "full")
    return run_dir, ee_jax("lm", "train", f"run_dir={run_dir}", *COMMON)


def test_lm_learns(full_run):
    run_dir, summary = full_run
    assert summary["resumed_from"] is None and summary["vocab_size"] == 384
    losses = _losses(run_dir)
    # Loss falls clearly: far below the uniform-guess level and well below its first logged value.
    assert losses[100] < 0.35 * math.log(384)
    assert losses[100] < 0.6 * losses[10]
    assert summary["valid_loss"] < 0.4 * math.log(384)
    for name in ("config.yaml", "tokenizer/spm.model", "metrics.jsonl"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    import yaml

    with open(os.path.join(run_dir, "config.yaml")) as f:
        record = yaml.safe_load(f)["_run"]  # provenance: versions and the commit of the code that ran
    assert record["versions"]["ee_jax"] == "0.1.0" and len(record["git_commit"].split("-")[0]) == 40
    assert os.listdir(os.path.join(run_dir, "tb"))
    assert sorted(os.listdir(os.path.join(run_dir, "ckpt", "lm"))) == ["100", "50", "selection.json"]


def test_interrupted_run_resumes_with_identical_losses(full_run, tmp_path):
    run_dir, _ = full_run
    resumed = str(tmp_path / "resumed")
    first = ee_jax("lm", "train", f"run_dir={resumed}", *COMMON, "train.stop_after_steps=50")
    assert first["steps"] == 100 and max(_losses(resumed)) == 50
    second = ee_jax("lm", "train", f"run_dir={resumed}", *COMMON)
    assert second["resumed_from"] == 50
    # Data order, optimizer state and schedule all continue: the curve equals the uninterrupted one.
    assert _losses(resumed) == _losses(run_dir)


def test_sample_from_trained_run(full_run):
    run_dir, summary = full_run
    out = ee_jax("lm", "sample", run_dir, "--prompt", "count: 3 4", "--prompt", "the agent puts the",
                 "--max-new-tokens", "12")
    samples = out["samples"]
    assert [s["prompt"] for s in samples] == ["count: 3 4", "the agent puts the"]
    for s in samples:
        assert len(s["ids"]) == len(s["logprobs"]) <= 12 and all(lp <= 0 for lp in s["logprobs"])
        assert s["text"]
    # A 100-step model writes the corpus's own words (the tokenizer could spell anything).
    from ee_jax.data import synthetic_corpus

    vocab = set(" ".join(synthetic_corpus(seed=0)).replace(".", " ").replace(";", " ").split())
    words = " ".join(s["text"] for s in samples).replace(".", " ").replace(";", " ").split()
    assert words and sum(w in vocab for w in words) >= 0.8 * len(words)


def test_info_and_bad_config_exit_codes():
    info = ee_jax("info", "mesh.data=1")
    assert info["backend"] == "cpu" and info["versions"]["jax"] == "0.10.2"
    bad = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "lm", "train", "model.nope=1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "model.nope" in bad.stderr
