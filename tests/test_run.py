"""``ee-jax run`` end to end on a tiny setting: every artifact, and report numbers that equal the logs."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.test_recipes import AGENT

TINY_RUN = AGENT + [
    "experience.reflect.alternatives=1", "recipe.epochs=1", "recipe.seeds=[0,1]", "recipe.valid_tasks=2",
    "recipe.selection_evals=2",
    "train.eval_every=4", "eval.tasks=3", "eval.max_new_tokens=16", "eval.wm_transitions=16",
    "train.log_every=2",
]


def _run(run_dir, *extra):
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "run", *TINY_RUN, f"run_dir={run_dir}", *extra,
                          "--no-progress", "--json"], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run") / "exp")
    return run_dir, _run(run_dir)


def test_every_artifact_exists(finished):
    run_dir, summary = finished
    assert summary["run_dir"] == run_dir and set(summary["collected"]) == {"expert", "explore", "reflect"}
    # every stage's resident memory: its peak, and what stays after release_memory between stages
    assert {"collect_expert", "train_il", "eval_il", "train_sr", "eval_sr"} <= set(summary["memory"])
    assert all(0 < m["after_gb"] <= m["peak_gb"] for m in summary["memory"].values()), summary["memory"]
    for name in ("config.yaml", "data/manifest.json", "tokenizer/spm.model", "report.md", "report.json",
                 "run_summary.json", "plots/success.png", "plots/learning_curves.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    for seed in ("0", "1"):
        s = os.path.join(run_dir, "seeds", seed)
        assert os.path.realpath(os.path.join(s, "data")) == os.path.realpath(os.path.join(run_dir, "data"))
        for method, stages in (("il", ["il"]), ("iwm", ["iwm_wm", "iwm"]), ("sr", ["sr"])):
            with open(os.path.join(s, "train", f"{method}.json")) as f:
                rec = json.load(f)
            assert [st["stage"] for st in rec["stages"]] == stages
            for st in stages:
                assert os.path.exists(os.path.join(s, "ckpt", st, "selection.json"))
            for split in ("test", "ood"):
                assert os.path.getsize(os.path.join(s, "eval", method, f"{split}.jsonl")) > 0
        with open(os.path.join(s, "train", "il.json")) as f, open(os.path.join(s, "train", "iwm.json")) as g:
            assert json.load(f)["updates"] == json.load(g)["updates"]  # iwm keeps imitation's budget


def test_report_numbers_equal_the_episode_logs(finished):
    from ee_jax.config import load_config
    from ee_jax.models.accounting import param_count
    from ee_jax.tokenizer import load_tokenizer

    run_dir, _ = finished
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    # The parameters of the model trained: the scratch tokenizer's vocabulary, not the preset's.
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    tok_cfg = dataclasses.replace(cfg.tokenizer, path=os.path.join(run_dir, "tokenizer", "spm.model"))
    vocab = load_tokenizer(tok_cfg).vocab_size
    assert vocab != cfg.model.vocab_size
    assert report["settings"]["model"]["params"] == param_count(dataclasses.replace(cfg.model, vocab_size=vocab))
    with open(os.path.join(run_dir, "report.md")) as f:
        text = f.read()
    checked = 0
    for method in ("il", "iwm", "sr"):
        for split in ("test", "ood"):
            per_seed = []
            for seed in ("0", "1"):
                with open(os.path.join(run_dir, "seeds", seed, "eval", method, f"{split}.jsonl")) as f:
                    eps = [json.loads(line) for line in f]
                assert len(eps) == 3 and all(len(e["transcript"]) == e["steps"] for e in eps)
                per_seed.append((sum(e["won"] for e in eps) / len(eps), sum(e["steps"] for e in eps) / len(eps),
                                 sum(e["invalid"] for e in eps) / sum(e["steps"] for e in eps)))
            cell = report["results"][method][split]
            for i, key in enumerate(("success", "steps", "invalid_rate")):
                assert [cell[key]["per_seed"][s] for s in ("0", "1")] == pytest.approx([p[i] for p in per_seed])
                assert cell[key]["mean"] == pytest.approx(sum(p[i] for p in per_seed) / 2)
            checked += 1
        assert method.upper() in text
    assert checked == 6


def test_rerun_skips_finished_stages(finished):
    run_dir, first = finished
    evals = [os.path.join(run_dir, "seeds", s, "eval", f"{m}.json") for s in ("0", "1") for m in ("il", "iwm", "sr")]
    stamps = [os.stat(p).st_mtime_ns for p in evals]
    again = _run(run_dir)
    assert all(r["skipped_training"] for r in again["results"].values())
    assert [os.stat(p).st_mtime_ns for p in evals] == stamps  # evaluations of unchanged checkpoints are kept
    strip = lambda res: {k: {x: y for x, y in v.items() if x != "skipped_training"} for k, v in res.items()}  # noqa: E731
    assert strip(again["results"]) == strip(first["results"])
    # The time ledger keeps both invocations: totals are the first run's times plus the re-check's.
    assert first["timings_total"] == pytest.approx(first["timings"], abs=0.01)
    for stage, seconds in again["timings"].items():
        assert again["timings_total"][stage] == pytest.approx(first["timings"][stage] + seconds, abs=0.01)
    from ee_jax.pipeline.timings import read_timings

    entries = read_timings(os.path.join(run_dir, "timings.jsonl"))
    il = [e for e in entries if e["stage"] == "train_il"]
    assert sorted(e["seed"] for e in il) == [0, 0, 1, 1]
    assert [bool(e.get("skipped")) for e in il] == [False, False, True, True]  # the re-run only re-checked


def test_results_without_checkpoints_or_data_resume_without_retraining(finished, tmp_path):
    """A run copied without its checkpoints, data and tokenizer (results resumed on a fresh machine):
    re-running collects the same data again (household's collection repeats exactly) and keeps every
    training and evaluation instead of redoing them, except a method trained but not yet evaluated,
    which has nothing to evaluate without its checkpoint and is trained again."""
    import shutil

    run_dir, first = finished
    copy = str(tmp_path / "results-only")
    shutil.copytree(run_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("ckpt", "data", "tokenizer"))
    for seed in ("0", "1"):  # the seed directories' links to the shared data and tokenizer come back dangling
        for name in ("data", "tokenizer"):
            os.symlink(os.path.join("..", "..", name), os.path.join(copy, "seeds", seed, name))
    # seed 1's IL was trained but not yet evaluated when the copy was made: it can only be trained again
    shutil.rmtree(os.path.join(copy, "seeds", "1", "eval", "il"))
    os.remove(os.path.join(copy, "seeds", "1", "eval", "il.json"))
    evals = [os.path.join(copy, "seeds", s, "eval", f"{m}.json") for s in ("0", "1") for m in ("il", "iwm", "sr")
             if (s, m) != ("1", "il")]
    stamps = [os.stat(p).st_mtime_ns for p in evals]
    again = _run(copy)
    assert {k for k, r in again["results"].items() if not r["skipped_training"]} == {"1/il"}, again["results"]
    assert [os.stat(p).st_mtime_ns for p in evals] == stamps
    strip = lambda res: {k: {x: y for x, y in v.items() if x != "skipped_training"} for k, v in res.items()}  # noqa: E731
    assert strip(again["results"]) == strip(first["results"])  # the retrained IL equals the first (same seed)
    assert not any(os.path.exists(os.path.join(copy, "seeds", "0", "ckpt", st)) for st in ("il", "iwm", "sr"))
    assert os.path.exists(os.path.join(copy, "seeds", "1", "ckpt", "il", "selection.json"))
    with open(os.path.join(run_dir, "report.json")) as f, open(os.path.join(copy, "report.json")) as g:
        assert json.load(f)["table"] == json.load(g)["table"]


def test_export_cli_writes_what_transformers_loads(finished, tmp_path):
    """``ee-jax export RUN --stage il``: an HF directory whose logits equal the run's policy."""
    import jax.numpy as jnp
    import numpy as np

    from tests.conftest import require

    torch, transformers = require("torch"), require("transformers")

    from ee_jax.agent.policy import load_policy
    from ee_jax.models import apply_model
    from ee_jax.parallel import use_mesh

    run_dir = os.path.join(finished[0], "seeds", "0")
    out = str(tmp_path / "il-hf")
    proc = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "export", run_dir, out, "--stage", "il", "--json"],
                          capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert payload["out_dir"] == out and payload["stage"] == "il"
    assert {"config.json", "model.safetensors", "spm.model"} <= set(os.listdir(out))
    policy = load_policy(run_dir, stage="il")
    ids = np.asarray([[policy.tokenizer.bos_id] + policy.tokenizer.encode("go to fridge 1")] * 8, np.int32)  # 8 devices
    with use_mesh(policy.mesh):
        ours = np.asarray(apply_model(policy.graphdef, policy.params, jnp.asarray(ids))[0])
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-4
