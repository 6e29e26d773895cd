"""Training recipes: budgets, stage chaining, checkpoint selection, preemption and NaN stops.

The exact-resume test runs the real CLI in subprocesses (one CPU device each, fp32): a run stopped by
SIGTERM and resumed must log bit-identical losses to an uninterrupted one.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

AGENT = [
    "model.preset=ee-1m", "model.d_model=32", "model.num_heads=4", "model.num_kv_heads=2", "model.ffn_dim=64",
    "model.num_layers=2", "model.max_seq_len=512", "tokenizer.vocab_size=400",
    "env.name=household", "env.difficulty=1", "experience.tasks.train=8", "experience.tasks.valid=4",
    "experience.explore.k=2", "prompt.history_window=1", "train.batch_size=8", "train.seq_len=384",
    "train.log_every=1", "optimizer.lr=1e-3", "optimizer.warmup_steps=2",
]


def _config(run_dir, *extra):
    from ee_jax.config import load_config

    return load_config(None, AGENT + [f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A collected household store (expert + transitions + grounded reflections) with its tokenizer."""
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.experience.collect import run_stage

    cfg = _config(str(tmp_path_factory.mktemp("recipes") / "base"))
    for stage in ("expert", "explore", "reflect"):
        run_stage(cfg, stage, progress=False)
    ensure_tokenizer(cfg)
    return cfg.run_dir


def _fresh_run(store, path):
    os.makedirs(path)
    for part in ("data", "tokenizer"):
        shutil.copytree(os.path.join(store, part), os.path.join(path, part))
    return str(path)


def test_budgets_follow_the_paper(store):
    """il: epochs x steps/epoch; iwm: a world-model stage then imitation, the same total; sr: epochs."""
    from ee_jax.agent.weights import run_tokenizer
    from ee_jax.train.budget import plan_method, steps_per_epoch

    cfg = _config(store, "recipe.epochs=3", "recipe.wm_epochs=1", "recipe.wm_max_fraction=0.5")
    tok = run_tokenizer(cfg)
    data = os.path.join(store, "data")
    spe_il, spe_iwm = steps_per_epoch(cfg, "il", tok, data), steps_per_epoch(cfg, "iwm", tok, data)
    assert 1 <= spe_il < spe_iwm  # K alternatives per state: more transitions than expert steps
    (il,) = plan_method(cfg, "il", tok, data)
    assert (il.stage, il.objective, il.steps, il.epochs) == ("il", "il", 3 * spe_il, 3.0)
    wm, imitation = plan_method(cfg, "iwm", tok, data)
    assert (wm.stage, wm.objective, imitation.stage, imitation.objective) == ("iwm_wm", "iwm", "iwm", "il")
    assert wm.steps + imitation.steps == il.steps  # the same number of updates as imitation
    assert wm.steps == min(spe_iwm, math.floor(0.5 * il.steps)) and imitation.init == "stage:iwm_wm"
    cfg0 = _config(store, "recipe.epochs=0", "train.steps=7")
    assert [p.steps for p in plan_method(cfg0, "il", tok, data)] == [7]
    assert sum(p.steps for p in plan_method(cfg0, "iwm", tok, data)) == 7


def test_il_matched_gets_exactly_srs_updates_and_every_method_the_same_selection_evaluations(store, tmp_path):
    """il_matched: imitation data, SR's update count. recipe.selection_evals: N evaluations per method at
    ceil(i * steps / N) of the reported stage, whatever the method's length."""
    from ee_jax.agent.weights import run_tokenizer
    from ee_jax.train.budget import plan_method, steps_per_epoch
    from ee_jax.train.recipes import selection_eval_steps, train_method

    assert selection_eval_steps(10, 4) == {3, 5, 8, 10} and selection_eval_steps(10, 0) is None
    assert selection_eval_steps(3, 8) == {1, 2, 3}  # a stage shorter than N: every step, once
    run = _fresh_run(store, tmp_path / "matched")
    cfg = _config(run, "recipe.epochs=1", "recipe.select=best", "recipe.select_metric=loss",
                  "recipe.selection_evals=4", "train.checkpoint_every=1000", "train.eval_every=1")
    tok, data = run_tokenizer(cfg), os.path.join(run, "data")
    (sr,), (matched,), (il,) = (plan_method(cfg, m, tok, data) for m in ("sr", "il_matched", "il"))
    spe_il = steps_per_epoch(cfg, "il", tok, data)
    assert sr.steps > il.steps and matched.steps == sr.steps  # the same number of updates as SR
    assert (matched.stage, matched.objective, matched.steps_per_epoch) == ("il_matched", "il", spe_il)
    assert sum(p.steps for p in plan_method(cfg, "iwm", tok, data)) == il.steps
    # trained: IL (short) and il_matched (long): the same evaluations at the same fractions of each run
    records = {m: train_method(cfg, m, progress=False) for m in ("il", "il_matched")}
    assert records["il_matched"]["updates"] == sr.steps and records["il"]["updates"] == il.steps
    for method, rec in records.items():
        final = rec["stages"][-1]
        steps = [e["step"] for e in final["selection"]["evaluations"]]
        assert steps == sorted(selection_eval_steps(final["steps"], 4)), (method, steps)  # 4, evenly spaced
        assert len(steps) == 4
    assert os.path.isdir(os.path.join(run, "ckpt", "il_matched"))


def test_iwm_chains_stages_and_selects_the_best_valid_checkpoint(store, tmp_path):
    from ee_jax.agent.policy import load_policy
    from ee_jax.train.recipes import train_method

    run = _fresh_run(store, tmp_path / "run")
    cfg = _config(run, "recipe.epochs=0", "train.steps=8", "train.eval_every=2", "train.checkpoint_every=100",
                  "train.keep_checkpoints=1", "recipe.select=best", "recipe.select_metric=loss",
                  "recipe.wm_max_fraction=0.5", "optimizer.lr=3e-2", "recipe.selection_evals=0")
    rec = train_method(cfg, "iwm", progress=False)
    wm, imitation = rec["stages"]
    assert rec["updates"] == 8 and wm["steps"] + imitation["steps"] == 8 and rec["policy_stage"] == "iwm"
    assert wm["selection"]["rule"] == "last" and wm["selected_step"] == wm["steps"]
    sel = imitation["selection"]
    evals = sel["evaluations"]
    assert [e["step"] for e in evals] == list(range(2, imitation["steps"] + 1, 2))
    best = max(evals, key=lambda e: (e["score"], e["step"]))
    assert sel["rule"] == "best" and sel["step"] == best["step"] and best["score"] == -best["loss"]
    steps_kept = sorted(int(d) for d in os.listdir(os.path.join(run, "ckpt", "iwm")) if d.isdigit())
    assert best["step"] in steps_kept and imitation["steps"] in steps_kept  # best + newest (to resume)
    policy = load_policy(cfg=cfg, stage="iwm")
    assert policy.source.endswith(f"@{best['step']}")
    with open(os.path.join(run, "ckpt", "iwm", str(imitation["steps"]), "meta", "metadata")) as f:
        source = json.load(f)["init_source"]
    assert source == f"checkpoint:{os.path.join(os.path.abspath(run), 'ckpt', 'iwm_wm')}@{wm['steps']}"
    # Finished with the same settings: skipped; different settings: refused, naming the key.
    assert train_method(cfg, "iwm", progress=False)["skipped"]
    from ee_jax.rundir import StageMismatchError

    with pytest.raises(StageMismatchError, match="optimizer.lr"):
        train_method(_config(run, "recipe.epochs=0", "train.steps=8", "optimizer.lr=1e-2", "train.eval_every=2",
                             "recipe.select_metric=loss", "recipe.selection_evals=0"), "iwm", progress=False)


def test_nonfinite_loss_stops_with_step_batch_and_last_good_checkpoint(store, tmp_path):
    from ee_jax.checkpoint import Checkpointer
    from ee_jax.train import NonFiniteLossError
    from ee_jax.train.recipes import train_method

    run = _fresh_run(store, tmp_path / "nan")
    cfg = _config(run, "recipe.epochs=0", "train.steps=6", "train.checkpoint_every=1", "optimizer.lr=1e30",
                  "optimizer.warmup_steps=0", "optimizer.schedule=constant", "recipe.select=last",
                  "recipe.select_metric=loss", "train.eval_every=100")
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at step \d+ .*target tokens") as err:
        train_method(cfg, "il", progress=False)
    bad = int(str(err.value).split(" at step ")[1].split()[0])
    assert bad >= 2 and f"the last good checkpoint is kept in {os.path.join(run, 'ckpt', 'il')} (step {bad - 1})" \
        in str(err.value)
    with Checkpointer(os.path.join(run, "ckpt", "il"), async_save=False) as ck:
        assert ck.all_steps()[-1] == bad - 1  # nothing was saved after the bad step
    npz = os.path.join(run, "debug", f"nonfinite-il-step{bad}.npz")
    import numpy as np

    with np.load(npz, allow_pickle=False) as z:
        assert z["inputs"].shape == (8, 384) and z["weights"].sum() > 0
    with open(npz[:-4] + ".json") as f:
        assert json.load(f)["data_state"]["counters"]["batches"] == bad - 1  # the position before the batch


def _cli(*args):
    return [sys.executable, "-m", "ee_jax.cli.main", *args]


def _losses(run_dir):
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for rec in map(json.loads, f):
            for key in ("il/train/loss", "il/valid/loss"):
                if key in rec:
                    out[(key, rec["step"])] = rec[key]
    return out


def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(store, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = ["train", "--method", "il", "--no-progress", *AGENT, "recipe.epochs=0", "train.steps=40",
            "train.checkpoint_every=1000", "train.eval_every=20", "recipe.select_metric=loss",
            "recipe.selection_evals=0", "model.dtype=float32"]
    full = _fresh_run(store, tmp_path / "full")
    subprocess.run(_cli(*args, f"run_dir={full}"), check=True, env=env, capture_output=True)

    cut = _fresh_run(store, tmp_path / "cut")
    proc = subprocess.Popen(_cli(*args, f"run_dir={cut}"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = os.path.join(cut, "metrics.jsonl")
    deadline = time.monotonic() + 240
    while not (os.path.exists(metrics) and os.path.getsize(metrics)) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stage 'il' stopped at step" in err and "Run the same command again to resume" in err
    stopped = int(err.split("stopped at step ")[1].split(";")[0])
    assert 1 <= stopped < 40
    assert sorted(d for d in os.listdir(os.path.join(cut, "ckpt", "il")) if d.isdigit()) == [str(stopped)]

    subprocess.run(_cli(*args, f"run_dir={cut}"), check=True, env=env, capture_output=True)
    a, b = _losses(full), _losses(cut)
    assert len(a) == 40 + 2 and a == b  # every train loss and valid loss, bit for bit


def test_il_matched_makes_the_main_job_collect_reflections():
    """il_matched's budget is counted on SR's data, so the main job collects explore + reflect for it."""
    from ee_jax.pipeline.experiment import collection_stages

    assert collection_stages(_config("runs/x", "recipe.methods=[il]")) == ["expert"]
    assert collection_stages(_config("runs/x", "recipe.methods=[il,il_matched]")) == ["expert", "explore", "reflect"]
    assert collection_stages(_config("runs/x", "recipe.methods=[il,iwm]")) == ["expert", "explore"]
