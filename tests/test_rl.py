"""RL continuation: packing, rollouts that keep generated ids, branch groups, the trainer, resume, PPO."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

from tests.test_recipes import AGENT

RL = ["rl.tasks_per_step=2", "rl.group_size=2", "rl.max_turns=4", "eval.max_new_tokens=16", "rl.micro_rows=8",
      "rl.seq_len=512", "rl.eval_every=0", "rl.checkpoint_every=1", "rl.lr=1e-4", "recipe.epochs=1",
      "recipe.valid_tasks=0", "recipe.select=last"]


def _config(run_dir, *extra):
    from ee_jax.config import load_config

    return load_config(None, AGENT + RL + [f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A household run with expert data, explored transitions, a tokenizer and an ``il`` checkpoint."""
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.experience.collect import run_stage
    from ee_jax.train.recipes import train_method

    cfg = _config(str(tmp_path_factory.mktemp("rl") / "base"))
    for stage in ("expert", "explore"):
        run_stage(cfg, stage, progress=False)
    ensure_tokenizer(cfg)
    train_method(cfg, "il", progress=False)
    return cfg.run_dir


def _copy_run(base, path):
    shutil.copytree(base, path, symlinks=True)
    return str(path)


# ---- packing -------------------------------------------------------------------------------------

def test_pack_turns_places_masks_advantages_and_values_on_the_right_targets():
    from ee_jax.rl.batching import TurnSample, pack_turns, update_groups

    a = TurnSample([1, 2, 3], [4, 5], advantage=0.5, returns=2.0, sampler_logprobs=[-0.1, -0.2])
    b = TurnSample([6, 7], [8], advantage=-1.0, returns=-3.0)
    c = TurnSample([9] * 6, [10, 11], advantage=2.0)  # does not fit after a + b in a row of 9 + 1 tokens
    arrays, placement = pack_turns([a, b, c], seq_len=9, rows_multiple=4)
    assert placement == [(0, 0), (0, 5), (1, 0)]
    assert arrays["inputs"].shape == (4, 9)  # 2 rows used, padded with 2 empty rows to a multiple of 4
    # row 0 tokens: 1 2 3 4 5 | 6 7 8 . .  -> targets are the tokens shifted by one
    np.testing.assert_array_equal(arrays["inputs"][0], [1, 2, 3, 4, 5, 6, 7, 8, 0])
    np.testing.assert_array_equal(arrays["targets"][0], [2, 3, 4, 5, 6, 7, 8, 0, 0])
    np.testing.assert_array_equal(arrays["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(arrays["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2, 0])
    # reply targets: 4, 5 (target indices 2, 3) and 8 (index 6)
    np.testing.assert_array_equal(arrays["weights"][0], [0, 0, 1, 1, 0, 0, 1, 0, 0])
    np.testing.assert_allclose(arrays["advantages"][0], [0, 0, .5, .5, 0, 0, -1, 0, 0])
    # a state's value sits at its last prompt token: index 2 (token 3) and index 6 (token 7)
    np.testing.assert_array_equal(np.nonzero(arrays["value_mask"][0])[0], [2, 6])
    np.testing.assert_allclose(arrays["returns"][0][[2, 6]], [2.0, -3.0])
    np.testing.assert_allclose(arrays["sampler_logprobs"][0][[2, 3]], [-0.1, -0.2])
    assert arrays["weights"][2:].sum() == 0 and arrays["sampler_mask"][0].sum() == 2
    with pytest.raises(ValueError, match="more than rl.seq_len"):
        pack_turns([TurnSample([1] * 9, [2, 3], 0.0)], seq_len=9)
    groups = update_groups(8, 2, 3, np.random.default_rng(0))
    assert [len(g) for g in groups] == [2, 1, 1]  # 4 micro-batches over 3 updates
    assert sorted(np.concatenate([np.concatenate(g) for g in groups]).tolist()) == list(range(8))


# ---- advantages over real rollout records ---------------------------------------------------------

def _rollout(group, member, task, rewards, keys):
    from ee_jax.rl.rollout import Rollout, Turn

    turns = [Turn([1], [2], [], r, True, k) for r, k in zip(rewards, keys)]
    return Rollout(group, member, task, 0, turns, won=rewards[-1] > 5, score=0.0, invalid=0, ended="won")


def test_grpo_with_step_groups_hand_worked():
    """Two task rollouts and three branches of one expert state, all of task t:

    task group  : returns 10, 0          -> A_ep = +0.7071, -0.7071 (mean 5, std(ddof=1) 7.0711)
    branch group: returns 10, 0, 0       -> A_ep = +1.1547, -0.5774, -0.5774 (mean 3.33, std 5.7735)
    step group  : state "s" is the first turn of the three branches and the 2nd turn of task rollout 0;
                  returns-to-go there 10, 0, 0, 10 -> mean 5, std 5.7735 -> +0.8660, -0.8660, -0.8660, +0.8660
    every other state is a singleton step group -> A_step = 0.
    """
    from ee_jax.config import RLConfig, StepGroupConfig
    from ee_jax.rl.samples import grpo_turn_advantages

    rollouts = [
        _rollout("task:t", 0, "t", [0.0, 10.0], ["r0", "s"]),
        _rollout("task:t", 1, "t", [0.0, 0.0], ["r0", "x"]),
        _rollout("branch:t:1", 0, "t", [10.0], ["s"]),
        _rollout("branch:t:1", 1, "t", [0.0], ["s"]),
        _rollout("branch:t:1", 2, "t", [0.0], ["s"]),
    ]
    rl = RLConfig(step_groups=StepGroupConfig(enabled=True, omega=0.5))
    adv = grpo_turn_advantages(rollouts, rl)
    # turn "r0" is shared by both task rollouts: rtg 10 and 0 -> +/-0.7071 step advantage
    expected = [[0.7071 + 0.5 * 0.7071, 0.7071 + 0.5 * 0.8660], [-0.7071 - 0.5 * 0.7071, -0.7071],
                [1.1547 + 0.5 * 0.8660], [-0.5774 - 0.5 * 0.8660], [-0.5774 - 0.5 * 0.8660]]
    for got, want in zip(adv, expected):
        np.testing.assert_allclose(got, want, atol=2e-4)
    plain = grpo_turn_advantages(rollouts, dataclasses.replace(rl, step_groups=StepGroupConfig(enabled=False)))
    np.testing.assert_allclose(plain[0], [0.7071, 0.7071], atol=1e-4)


# ---- rollouts ------------------------------------------------------------------------------------

def test_rollouts_keep_generated_ids_and_branches_start_at_the_expert_state(trained):
    from ee_jax.agent.policy import load_policy
    from ee_jax.envs.registry import make_env_from_config
    from ee_jax.rl.rollout import collect_rollouts, state_key
    from ee_jax.rl.starts import branch_anchors, step_branches, train_tasks
    from ee_jax.tokenizer import render_target

    cfg = _config(trained)
    policy = load_policy(cfg=cfg, stage="il")
    sampler = policy.sampler()
    env = make_env_from_config(cfg.env)
    tasks = train_tasks(cfg, env)[:2]
    env.close()
    anchors = branch_anchors(os.path.join(trained, "data"), max_prefix=2)
    branches = step_branches(anchors, 1, step=0, seed=0)
    assert len(branches) == 3 and branches[0].action == [a for a in anchors if a["group"] == branches[0].group][0][
        "actions"][0]  # the expert action first, then K = 2 alternatives
    run = lambda: collect_rollouts(policy, sampler, cfg, tasks=tasks, group_size=2, branches=branches,  # noqa: E731
                                   seed=7)
    first, again = run(), run()
    assert [(r.group, r.member) for r in first][:4] == [(f"task:{t.id}", m) for t in tasks for m in range(2)]
    assert [[t.response for t in r.turns] for r in first] == [[t.response for t in r.turns] for r in again]
    for r in first:
        assert 1 <= len(r.turns) <= 4
        for t in r.turns:
            if not t.forced:
                assert len(t.logprobs) == len(t.response) and all(lp <= 0 for lp in t.logprobs)
                assert t.state_key == state_key(t.prompt)
        assert r.episode_return == pytest.approx(sum(t.reward for t in r.turns))
        assert r.episode_return == pytest.approx(10.0 * r.won - 0.1 * sum(not t.valid for t in r.turns))
    branch = [r for r in first if r.group.startswith("branch:")]
    assert len({r.turns[0].state_key for r in branch}) == 1  # the K+1 branches share their first state
    for r, b in zip(branch, branches):
        assert r.turns[0].forced and r.turns[0].response == render_target(
            policy.tokenizer, policy.template, b.action).tolist()


# ---- the trainer ---------------------------------------------------------------------------------

def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s")} for h in history]


def test_grpo_trains_checkpoints_and_resumes_exactly(trained, tmp_path):
    from ee_jax.agent.policy import load_policy
    from ee_jax.checkpoint import Checkpointer
    from ee_jax.rl.trainer import train_rl

    extra = ["rl.steps=3", "rl.step_groups.enabled=true", "rl.step_groups.states=1", "rl.minibatches=2"]
    straight = _config(_copy_run(trained, tmp_path / "a"), *extra)
    rec = train_rl(straight, init="il", progress=False)
    assert rec["policy_stage"] == "grpo_from_il" and [h["step"] for h in rec["history"]] == [1, 2, 3]
    for h in rec["history"]:
        assert h["episodes"] == 2 * 2 + 3 and h["updates"] == 2 and np.isfinite(h["loss"])
        assert h["logprob_mismatch"] < 1e-3  # the training forward reproduces the sampler's log-probs
    assert rec["history"][0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first update starts at the reference
    assert train_rl(straight, init="il", progress=False)["skipped"]

    resumed = _config(_copy_run(trained, tmp_path / "b"), *extra)
    part = train_rl(dataclasses.replace(resumed, train=dataclasses.replace(resumed.train, stop_after_steps=1)),
                    init="il", progress=False)
    assert part["stopped_at"] == 1
    whole = train_rl(resumed, init="il", progress=False)
    assert _strip(whole["history"]) == _strip(rec["history"])
    a = load_policy(cfg=straight, stage="grpo_from_il").params
    b = load_policy(cfg=resumed, stage="grpo_from_il").params
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    il = load_policy(cfg=straight, stage="il").params
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a),
                                                                              jax.tree.leaves(il)))
    with Checkpointer(os.path.join(straight.run_dir, "ckpt", "grpo_from_il"), async_save=False) as ck:
        assert ck.latest_step() == 3
    # the reference is stored with the policy: resuming never depends on the il checkpoint still existing
    with open(os.path.join(straight.run_dir, "train", "grpo_from_il.json")) as f:
        assert '"init": "il"' in f.read()


def test_ppo_step_trains_a_critic(trained, tmp_path):
    from ee_jax.rl.trainer import train_rl

    cfg = _config(_copy_run(trained, tmp_path / "ppo"), "rl.algorithm=ppo", "rl.steps=1", "rl.kl_coef=0")
    rec = train_rl(cfg, init="il", progress=False)
    (h,) = rec["history"]
    assert rec["policy_stage"] == "ppo_from_il"
    assert np.isfinite(h["value_loss"]) and h["value_loss"] > 0 and h["critic_grad_norm"] > 0


def test_cli_rl_then_eval_of_the_rl_stage(trained, tmp_path):
    import json
    import subprocess
    import sys

    run = _copy_run(trained, tmp_path / "cli")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = AGENT + RL + [f"run_dir={run}", "rl.steps=1", "eval.tasks=2"]
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "rl", "--from", "il", *args, "--no-progress",
                          "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["policy_stage"] == "grpo_from_il" and rec["final"]["step"] == 1 and rec["init"] == "il"
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "eval", run, "--stage", "grpo_from_il",
                          "--split", "test", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    ev = json.loads(out.stdout.strip().splitlines()[-1])
    assert ev["splits"]["test"]["episodes"] == 2
    bad = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "rl", *args, "rl.algorithm=a2c"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "rl.algorithm" in bad.stderr


def test_main_job_adds_rl_rows(trained, tmp_path):
    """`ee-jax run` with `rl` among the methods: one GRPO row per start, evaluated and reported like IL."""
    import json

    from ee_jax.config import load_config
    from ee_jax.pipeline.experiment import run_experiment

    run = _copy_run(trained, tmp_path / "job")
    cfg = load_config(None, AGENT + RL + [f"run_dir={run}", "recipe.methods=[il,rl]", "rl.starts=[il,init]",
                                          "rl.steps=1", "recipe.seeds=[0]", "eval.tasks=2", "eval.wm_transitions=0"])
    summary = run_experiment(cfg, progress=False)
    assert set(summary["results"]) == {"0/il", "0/grpo_from_il", "0/grpo_from_init"}
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    assert report["methods"] == ["il", "grpo_from_il", "grpo_from_init"]
    for stage in ("grpo_from_il", "grpo_from_init"):
        with open(os.path.join(run, "seeds", "0", "eval", stage, "test.jsonl")) as f:
            eps = [json.loads(line) for line in f]
        assert report["results"][stage]["test"]["success"]["mean"] == pytest.approx(
            sum(e["won"] for e in eps) / len(eps))
    with open(os.path.join(run, "report.md")) as f:
        text = f.read()
    assert "IL→GRPO" in text and "init→GRPO" in text


def test_stage_names():
    from ee_jax.rl.trainer import stage_name

    assert [stage_name("grpo", "il"), stage_name("ppo", "runs/x:sr"), stage_name("grpo", "init"),
            stage_name("grpo", "hf:/models/SmolLM2-135M/"), stage_name("grpo", "safetensors:/w/m.v1.safetensors")] \
        == ["grpo_from_il", "ppo_from_sr", "grpo_from_init", "grpo_from_SmolLM2-135M", "grpo_from_m"]


def test_sigterm_stops_rl_at_a_checkpoint_and_the_resumed_run_matches(trained, tmp_path):
    """A preempted ``ee-jax rl`` (SIGTERM between steps) saves the step it reached, exits 143, and the
    same command resumes it to the history of an uninterrupted run, step for step."""
    import json
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = AGENT + RL + ["rl.steps=6", "rl.checkpoint_every=1000", "model.dtype=float32", "--no-progress"]

    def rl(run):
        return [sys.executable, "-m", "ee_jax.cli.main", "rl", "--from", "il", *args, f"run_dir={run}"]

    def history(run):
        with open(os.path.join(run, "train", "grpo_from_il.json")) as f:
            return _strip(json.load(f)["history"])

    full = _copy_run(trained, tmp_path / "full")
    subprocess.run(rl(full), check=True, env=env, capture_output=True)
    cut = _copy_run(trained, tmp_path / "cut")
    proc = subprocess.Popen(rl(cut), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = os.path.join(cut, "metrics.jsonl"), time.monotonic() + 240

    def stepped():
        if not os.path.exists(metrics):
            return False
        with open(metrics) as f:
            return any("grpo_from_il/rl/reward" in line for line in f)

    while not stepped() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM: stage 'grpo_from_il' stopped at step" in err and "Run the same command again to resume" in err
    stopped = int(err.split("stopped at step ")[1].split(";")[0])
    assert 1 <= stopped < 6
    ckpt = os.path.join(cut, "ckpt", "grpo_from_il")
    assert sorted(d for d in os.listdir(ckpt) if d.isdigit()) == [str(stopped)]
    assert not os.path.exists(os.path.join(cut, "train", "grpo_from_il.json"))  # unfinished: no record yet

    subprocess.run(rl(cut), check=True, env=env, capture_output=True)
    with open(os.path.join(cut, "train", "grpo_from_il.json")) as f:
        assert json.load(f)["stages"][0]["resumed_from"] == stopped
    assert history(cut) == history(full) and len(history(full)) == 6


def test_lora_ppo_trains_only_the_adapters_and_the_value_head(trained, tmp_path):
    """``model.lora_rank``: RL from a full fine-tuning checkpoint adds adapters; the base stays exact."""
    from ee_jax.agent.policy import load_policy
    from ee_jax.checkpoint.safetensors_io import leaf_value, named_leaves
    from ee_jax.rl.trainer import train_rl

    cfg = _config(_copy_run(trained, tmp_path / "lora"), "model.lora_rank=4", "rl.algorithm=ppo", "rl.steps=1")
    (h,) = train_rl(cfg, init="il", progress=False)["history"]
    assert np.isfinite(h["loss"]) and h["grad_norm"] > 0 and h["critic_grad_norm"] > 0 and h["value_loss"] > 0
    named = lambda p: {n: np.asarray(leaf_value(v)) for n, v in named_leaves(p)[0]}  # noqa: E731
    il = named(load_policy(cfg=_config(trained), stage="il").params)
    after = named(load_policy(cfg=cfg, stage="ppo_from_il").params)
    assert set(after) - set(il) and all(".lora_" in n for n in set(after) - set(il))
    for name, value in il.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert max(np.abs(v).max() for n, v in after.items() if n.endswith(".b")) > 0
    # export folds the adapters in: plain HF tensor names, and the model computes what the adapted one did
    import json

    from ee_jax.cli.main import main
    from ee_jax.config import save_config
    from ee_jax.config.hf import model_config_from_hf

    save_config(cfg, os.path.join(cfg.run_dir, "config.yaml"))
    out = str(tmp_path / "merged")
    assert main(["export", cfg.run_dir, out, "--stage", "ppo_from_il"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert "lora" not in json.dumps(json.load(f))
    assert model_config_from_hf(out).lora_rank == 0
