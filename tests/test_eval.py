"""Evaluation: metrics against hand-computed values, the episode loop (oracle replies through the real
environment, a real tiny untrained policy in lockstep batches), world-model metrics on a small household
store, and ``ee-jax eval`` end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from ee_jax.agent.episodes import advance_episode, start_episode
from ee_jax.envs import make_env
from ee_jax.eval import (
    pass_at_k,
    read_episodes,
    run_episodes,
    summarize_episodes,
    wilson_interval,
    world_model_metrics,
    write_episodes,
)
from ee_jax.eval.metrics import ENDED
from ee_jax.experience.expert import play_trajectory
from ee_jax.tokenizer import stop_token_ids
from tests.test_serve import make_run

# ------------------------------------------------------------------------------------------ metrics


def test_wilson_interval_hand_values():
    # 8/10 at z=1.96: center (0.8 + 0.19208) / 1.38416, half 1.96 * sqrt(0.016 + 0.009604) / 1.38416
    lo, hi = wilson_interval(8, 10)
    half = 1.96 * math.sqrt(0.025604)
    assert lo == pytest.approx((0.99208 - half) / 1.38416) and hi == pytest.approx((0.99208 + half) / 1.38416)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # the textbook values
    lo, hi = wilson_interval(0, 10)  # not degenerate at 0 successes
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 13.8416, abs=1e-9)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / 13.8416, abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 100, z=1.0)  # symmetric around 0.5
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(2 * math.sqrt(0.0025 + 0.000025) / 1.01)
    with pytest.raises(ValueError, match="successes=11, n=10"):
        wilson_interval(11, 10)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75)  # 1 - C(3,3)/C(4,3)
    assert pass_at_k(4, 2, 3) == 1.0  # n-c < k: every draw of 3 holds a success
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k=3"):
        pass_at_k(2, 1, 3)


def _ep(task, won, steps=2, invalid=0, ended=None, score=None, reward=None):
    return {"task_id": task, "split": "test", "won": won, "steps": steps, "invalid": invalid,
            "score": float(won) if score is None else score, "reward": float(won) if reward is None else reward,
            "ended": ended or ("won" if won else "max_steps")}


def test_summarize_episodes_hand_values():
    eps = [_ep("a", True, 3), _ep("a", False, 5, 2), _ep("a", True, 2),  # task a: 2 of 3
           _ep("b", False, 4, 4, "max_invalid", 0.5, 0.0), _ep("b", False, 6), _ep("b", False, 2, 1, "done")]
    s = summarize_episodes(eps, [1, 2])
    assert s["episodes"] == 6 and s["tasks"] == 2
    assert s["success"] == pytest.approx(2 / 6)
    assert s["success_ci95"] == pytest.approx(list(wilson_interval(2, 6)))
    assert s["score"] == pytest.approx((1 + 0 + 1 + 0.5 + 0 + 0) / 6)
    assert s["reward"] == pytest.approx(2 / 6)
    assert s["invalid_rate"] == pytest.approx(7 / 22) and s["steps"] == pytest.approx(22 / 6)
    assert s["pass@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["pass@2"] == pytest.approx((1 - 0 / 3 + 0) / 2)  # task a: C(1,2)=0 -> 1
    assert s["ended"] == {"won": 2, "done": 1, "max_steps": 2, "max_invalid": 1}
    assert list(s["ended"]) == list(ENDED)
    with pytest.raises(ValueError, match="pass@4 needs at least 4 episodes per task"):
        summarize_episodes(eps, [4])
    empty = summarize_episodes([], [1])
    assert empty["episodes"] == 0 and empty["success"] == 0.0 and empty["success_ci95"] == [0.0, 1.0]


# ------------------------------------------------------------------------------------------ episode loop


def _oracle_reply(env) -> str:
    return f"The goal needs this next.\nAction: {env.oracle_action()}"


def test_oracle_replies_win_and_states_match_expert_collection(tmp_path):
    env = make_env("household", max_steps=30)
    tasks = env.make_tasks("test", 3)
    episodes = []
    # task 0: the oracle, reflection-style replies; its states are those expert collection records
    ep = start_episode(env, tasks[0], 0, 0, seed=1)
    states = []
    while ep.ended is None:
        states.append(ep.state().to_json())
        advance_episode(ep, _oracle_reply(env), max_invalid=3)
    records, info = play_trajectory(make_env("household", max_steps=30), tasks[0], None, "oracle")
    assert info["won"] and ep.won and ep.ended == "won"
    assert states == [r["state"] for r in records]
    assert [t["action"] for t in ep.transcript] == [r["action"] for r in records]
    episodes.append(ep.to_json())
    # task 1: two invalid replies (one empty), then the oracle: won, two invalid actions counted
    ep = start_episode(env, tasks[1], 1, 0, seed=1)
    for reply in ("Action: dance with the fridge", ""):
        assert not advance_episode(ep, reply, max_invalid=3)
    while ep.ended is None:
        advance_episode(ep, env.oracle_action(), max_invalid=3)  # imitation-style replies: the action alone
    assert ep.won and ep.invalid == 2 and [t["valid"] for t in ep.transcript[:2]] == [False, False]
    assert ep.transcript[1]["action"] == "" and "dance" in ep.transcript[0]["action"]
    assert ep.history[0].observation == ep.transcript[1]["observation"]  # the invalid step is in the history
    episodes.append(ep.to_json())
    # task 2: three invalid replies exhaust a budget of 3
    ep = start_episode(env, tasks[2], 2, 0, seed=1)
    ended = [advance_episode(ep, "Action: fly", max_invalid=3) for _ in range(3)]
    assert ended == [False, False, True] and ep.ended == "max_invalid" and not ep.won
    episodes.append(ep.to_json())
    # task 2 again, valid but useless actions until the step limit (no invalid budget: 0)
    short = make_env("household", max_steps=3)
    ep = start_episode(short, tasks[2], 2, 1, seed=1)
    while ep.ended is None:
        advance_episode(ep, "look", max_invalid=0)
    assert ep.ended == "max_steps" and len(ep.transcript) == 3 and ep.transcript[-1]["done"]
    episodes.append(ep.to_json())

    path = str(tmp_path / "eval" / "x" / "test.jsonl")
    write_episodes(path, episodes)
    back = read_episodes(path)
    assert back == json.loads(json.dumps(episodes))
    s = summarize_episodes(back, [1])
    steps = [len(e["transcript"]) for e in back]
    assert [e["steps"] for e in back] == steps
    assert s["success"] == 0.5 and s["tasks"] == 3 and s["pass@1"] == pytest.approx((1 + 1 + 0) / 3)
    assert s["invalid_rate"] == pytest.approx(5 / sum(steps))
    assert s["ended"] == {"won": 2, "done": 0, "max_steps": 1, "max_invalid": 1}
    assert [e["score"] for e in back][:2] == [1.0, 1.0]
    for e in back:
        assert e["reward"] == pytest.approx(sum(t["reward"] for t in e["transcript"]))
        assert e["invalid"] == sum(not t["valid"] for t in e["transcript"])


# ------------------------------------------------------------------------------------------ real policy

POLICY_ARGS = ["model.max_seq_len=512", "eval.max_new_tokens=8", "env.max_steps=4", "eval.temperature=1.0",
               "eval.samples=2", "eval.pass_k=[1,2]", "eval.batch_size=8", "eval.max_invalid=2"]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from ee_jax.agent.policy import load_policy

    run_dir = str(tmp_path_factory.mktemp("eval_run"))
    make_run(run_dir)
    policy = load_policy(run_dir, stage="init", overrides=POLICY_ARGS)
    return policy, policy.sampler()


def _with_eval(cfg, **kw):
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **kw))


def test_prompt_ids_fit_the_context(tiny_policy):
    from ee_jax.records.prompts import policy_prompt
    from ee_jax.tokenizer import render_prompt

    policy, _ = tiny_policy
    env = make_env("household")
    task = env.make_tasks("test", 1)[0]
    ep = start_episode(env, task)
    full = render_prompt(policy.tokenizer, policy.template, policy_prompt(ep.state(), policy.cfg.prompt)).tolist()
    assert policy.prompt_ids(ep.state(), policy.cfg.prompt, 8) == full  # fits: rendered as is
    cut = policy.prompt_ids(ep.state(), policy.cfg.prompt, 512 - 40)  # 40 tokens left: last resort
    assert len(cut) == 40 and cut[0] == policy.tokenizer.bos_id and cut[1:] == full[len(full) - 39:]
    with pytest.raises(ValueError, match="max_new_tokens=512 leaves no room"):
        policy.prompt_ids(ep.state(), policy.cfg.prompt, 512)


def test_untrained_policy_episodes_are_consistent_and_deterministic(tiny_policy):
    policy, sampler = tiny_policy
    cfg = policy.cfg
    eps = run_episodes(policy, cfg, "test", n_tasks=3, sampler=sampler, progress=False)
    env = make_env("household", max_steps=4)
    tasks = env.make_tasks("test", 3)
    assert [(e["task_id"], e["sample"]) for e in eps] == [(t.id, s) for t in tasks for s in (0, 1)]
    for e, (t, _) in zip(eps, [(t, s) for t in tasks for s in (0, 1)]):
        assert e["goal"] == t.goal and e["split"] == "test"
        assert e["steps"] == len(e["transcript"]) and 1 <= e["steps"] <= 4
        assert e["invalid"] == sum(not s["valid"] for s in e["transcript"]) <= 2
        assert e["ended"] in ENDED and (e["ended"] == "won") == e["won"]
        assert e["transcript"][0]["observation"] == env.reset(t)
        assert e["reward"] == pytest.approx(sum(s["reward"] for s in e["transcript"]))
        if e["ended"] == "max_invalid":
            assert e["invalid"] == 2 and not e["transcript"][-1]["valid"]
    assert any(e["ended"] == "max_invalid" for e in eps)  # an untrained model mostly emits junk
    assert eps[0]["seed"] != eps[1]["seed"]  # samples of a task draw differently
    # the rollout engine plays exactly what one generate() call per step plays (sampled, temperature 1)
    stop = stop_token_ids(policy.tokenizer, policy.template)
    for e, (t, s) in zip(eps, [(t, s) for t in tasks for s in (0, 1)]):
        ep = start_episode(make_env("household", max_steps=4), t, tasks.index(t), s, cfg.seed)
        while ep.ended is None:
            prompt = policy.prompt_ids(ep.state(), cfg.prompt, cfg.eval.max_new_tokens)
            reply = sampler.generate([prompt], max_new_tokens=cfg.eval.max_new_tokens, temperature=1.0,
                                     stop_ids=stop, seed=[ep.step_seed()])[0]
            advance_episode(ep, reply.text or "", cfg.eval.max_invalid)
        assert ep.to_json() == e

    assert run_episodes(policy, cfg, "test", n_tasks=3, sampler=sampler, progress=False) == eps
    small = run_episodes(policy, _with_eval(cfg, batch_size=2), "test", n_tasks=3, sampler=sampler, progress=False)
    assert small == eps  # per-episode seeds: batching does not change an episode
    other = run_episodes(policy, cfg, "test", n_tasks=3, sampler=sampler, progress=False, seed=99)
    assert [e["transcript"][0]["reply"] for e in other] != [e["transcript"][0]["reply"] for e in eps]
    # without an invalid budget every episode runs to the step limit; its first replies are the same
    # (same states, same per-step seeds)
    longer = run_episodes(policy, _with_eval(cfg, max_invalid=0), "test", n_tasks=3, sampler=sampler,
                          progress=False)
    for a, b in zip(longer, eps):
        assert a["ended"] in ("max_steps", "won", "done") and (a["steps"] == 4 or a["ended"] != "max_steps")
        assert [s["reply"] for s in a["transcript"][:b["steps"]]] == [s["reply"] for s in b["transcript"]]


# ------------------------------------------------------------------------------------------ world model


@pytest.fixture(scope="module")
def wm_store(tmp_path_factory):
    from ee_jax.agent.policy import load_policy
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from tests.test_experience_pipeline import build_store, make_cfg

    run_dir = str(tmp_path_factory.mktemp("wm_run"))
    records = build_store(os.path.join(run_dir, "data"), n_tasks=2, splits=("train", "valid"), tasks_per_shard=2)
    cfg = make_cfg(run_dir, "train.batch_size=8")  # 8 rows over 8 data-parallel devices
    ensure_tokenizer(cfg)
    policy = load_policy(cfg=cfg, stage="init")
    return cfg, policy, [r for r in records["transition"] if r["split"] == "valid"]


def test_world_model_metrics(wm_store):
    from ee_jax.data.examples import render_record

    cfg, policy, valid = wm_store
    full = world_model_metrics(policy, cfg)
    assert full["split"] == "valid" and full["transitions"] == len(valid) and full["dropped_too_long"] == 0
    for key in ("token_accuracy", "exact_match"):
        assert 0.0 <= full[key] <= 1.0
    assert full["exact_match"] <= full["token_accuracy"] and full["loss"] > 0
    assert world_model_metrics(policy, cfg) == full  # deterministic

    five = world_model_metrics(policy, cfg, limit=5)
    assert five["transitions"] == 5
    # the loss of the first five transitions in store order, computed independently: the sampler's
    # teacher-forced log-likelihood of each rendered target given its prompt
    sampler = policy.sampler()
    nll = tokens = 0.0
    for rec in valid[:5]:
        ex = render_record(rec, "iwm", policy.tokenizer, cfg.tokenizer.template, cfg.prompt, cfg.train.seq_len + 1)
        n_prompt = ex.num_prompt_tokens
        nll -= float(sampler.score(ex.ids[:n_prompt].tolist(), [ex.ids[n_prompt:].tolist()])[0])
        tokens += len(ex.ids) - n_prompt
    assert five["target_tokens"] == tokens
    assert five["loss"] == pytest.approx(nll / tokens, rel=1e-4)
    assert world_model_metrics(policy, cfg, split="test") is None  # no transitions in that split
    assert world_model_metrics(policy, cfg, limit=0) is None


# ------------------------------------------------------------------------------------------ CLI


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from ee_jax.cli.main import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _save_stage(run_dir: str, stage: str, seed: int) -> None:
    """A checkpoint of freshly initialised weights (seed ``seed``, scaled up) under ``ckpt/STAGE``."""
    import jax

    from ee_jax.checkpoint import Checkpointer
    from ee_jax.config import load_config
    from ee_jax.parallel import make_mesh
    from ee_jax.tokenizer import SentencePieceTokenizer
    from ee_jax.train import make_optimizer
    from ee_jax.train.state import create_train_state

    cfg = load_config(os.path.join(run_dir, "config.yaml"), [f"seed={seed}"])
    vocab = SentencePieceTokenizer(os.path.join(run_dir, "tokenizer", "spm.model")).vocab_size
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    _, state, _ = create_train_state(cfg, make_optimizer(cfg.optimizer, cfg.train.steps), make_mesh(cfg))
    d = state.as_dict()
    d["params"] = jax.tree.map(lambda x: x * 8, d["params"])  # peaked logits: replies that depend on weights
    with Checkpointer(os.path.join(run_dir, "ckpt", stage), async_save=False) as ck:
        ck.save(0, d)


def test_cli_eval_json_end_to_end(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    args = ["eval", run_dir, "--split", "test", "--n", "2", "--no-progress", "--json", "eval.max_new_tokens=8",
            "env.max_steps=3", "eval.max_invalid=2", "eval.temperature=1.0"]
    rc, out, err = _cli(capsys, *args, "--stage", "init")
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert "success" in out.splitlines()[1]  # the human table comes first
    assert result["stage"] == "init" and result["source"] == "init:seed=0" and result["env"] == "household"
    assert result["difficulty"] == 1 and result["world_model"] is None  # no experience store in this run
    assert result["settings"]["tasks"] == 2 and result["settings"]["max_new_tokens"] == 8
    assert list(result["splits"]) == ["test"]
    split = result["splits"]["test"]
    assert split["episodes_file"] == "eval/init/test.jsonl" and split["episodes"] == 2
    with open(os.path.join(run_dir, "eval", "init.json")) as f:
        assert json.load(f) == result
    episodes = read_episodes(os.path.join(run_dir, split["episodes_file"]))
    assert summarize_episodes(episodes, [1]) == {k: v for k, v in split.items() if k not in ("episodes_file", "engine")}
    engine = split["engine"]  # what the rollout engine did for these episodes
    assert engine["episodes_per_host"] == [2] and engine["sessions"] == 2
    assert engine["turns"] == sum(e["steps"] for e in episodes)
    assert engine["prompt_tokens"] == engine["reused_tokens"] + engine["prefilled_tokens"] > 0
    assert not [n for n in os.listdir(os.path.join(run_dir, "eval", "init")) if ".tmp" in n]

    # a checkpoint stage: other weights, so other replies
    _save_stage(run_dir, "il", seed=7)
    rc, out, err = _cli(capsys, *args, "--stage", "il")
    assert rc == 0, err
    il = json.loads(out.strip().splitlines()[-1])
    assert il["source"].startswith("checkpoint:") and il["source"].endswith(os.path.join("ckpt", "il") + "@0")
    il_eps = read_episodes(os.path.join(run_dir, "eval", "il", "test.jsonl"))
    assert [e["transcript"][0]["reply"] for e in il_eps] != [e["transcript"][0]["reply"] for e in episodes]

    rc, _, err = _cli(capsys, *args, "--stage", "sr")
    assert rc == 2 and "no checkpoint for stage 'sr'" in err and "il" in err
    rc, _, err = _cli(capsys, "eval", str(tmp_path / "missing"), "--stage", "il")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _cli(capsys, "eval", run_dir, "--stage", "init", "--split", "test,nope")
    assert rc == 2 and "unknown split 'nope'" in err
    assert np.isfinite(split["steps"])


def test_eval_of_a_damaged_checkpoint_names_the_step(tmp_path, capsys):
    import pathlib

    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    _save_stage(run_dir, "il", seed=7)
    step_dir = pathlib.Path(run_dir, "ckpt", "il", "0")
    for p in step_dir.rglob("*"):
        if p.is_file() and p.stat().st_size > 0:
            p.write_bytes(b"\x00garbage")
    rc, out, err = _cli(capsys, "eval", run_dir, "--stage", "il", "--split", "test", "--n", "1", "--no-progress")
    assert rc == 2 and not out
    (line,) = err.strip().splitlines()
    assert line.startswith(f"ee-jax: error: {run_dir}/ckpt/il: checkpoint step 0 cannot be restored (")
    assert line.endswith("it is damaged: train the stage again")
