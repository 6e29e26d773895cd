"""``ee-jax plan``: deviceless compiles for TPU topologies (libtpu, the ``tpu`` extra), simulated GPUs,
the collectives read from HLO, and the out-of-memory report."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY, require

FSDP = ["mesh.data=1", "mesh.fsdp=-1"]


@pytest.fixture(scope="module")
def v5e_plan():
    """One plan of every program (train, GRPO + PPO updates, prefill, decode) of the tiny model on v5e:2x2,
    layers scanned."""
    require("libtpu")
    from ee_jax.config import load_config
    from ee_jax.plan import make_plan

    # scanned layers: the training forward and RL update as the accelerator presets run them, and the
    # rollout engine's scanned decode (sampler.scan_layers)
    cfg = load_config(None, TINY + FSDP + ["rl.micro_rows=4", "rl.tasks_per_step=2", "rl.group_size=4",
                                           "rl.max_new_tokens=16", "model.scan_layers=true",
                                           "sampler.scan_layers=true"])
    return make_plan(cfg, "v5e:2x2")


def test_v5e_plan_compiles_every_program_and_fits(v5e_plan):
    p = v5e_plan
    assert p["fits"] and p["summary"] == "fits"
    assert (p["chips"], p["hosts"], p["simulated"]) == (4, 1, False)
    assert p["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    names = [s["name"] for s in p["steps"]]
    assert names == ["train", "grpo+ppo:policy_update", "ppo:critic_update", "rollout:extend", "rollout:decode"]
    for s in p["steps"]:
        assert s["fits"] and not s["oom"], s["name"]
        assert 0 < s["peak_bytes"] <= s["hbm_bytes"]
    train = p["steps"][0]
    assert train["tokens"] == 8 * 16
    assert train["xla_flops"] > 0 and train["roofline"]["compute_s"] > 0
    assert 0 < train["roofline"]["mfu_low"] <= train["roofline"]["mfu_high"] <= 1
    # The memory term's traffic: fp32 weights (gathered) streamed 3 times (no remat), then the AdamW update.
    from ee_jax.config import load_config, trained_model
    from ee_jax.models.accounting import param_count

    n = param_count(trained_model(load_config(None, TINY)))
    update = 2 * (train["param_bytes"] + train["opt_bytes"]) + train["param_bytes"]
    assert train["hbm_traffic_bytes"] == 3 * 4 * n + update
    assert train["roofline"]["memory_s"] == pytest.approx(train["hbm_traffic_bytes"] / 819e9)
    # Beside the sampler the GRPO run (the configured algorithm) keeps the optimizer state and the reference
    # policy, each sharded like the parameters.
    by_name = {s["name"]: s for s in p["steps"]}
    prefill = by_name["rollout:extend"]
    assert prefill["resident_bytes"] == train["opt_bytes"] + train["param_bytes"]
    # The RL update scans 2 micro-batches; the reference policy and the critic's state stay beside it.
    update = by_name["grpo+ppo:policy_update"]
    assert update["tokens"] == 2 * 4 * 128 and update["xla_flops"] > 0
    critic = by_name["ppo:critic_update"]
    beside = train["param_bytes"] + critic["param_bytes"] + critic["opt_bytes"]
    assert beside <= update["resident_bytes"] <= beside + 16  # + the critic's step counter and rng
    assert p["rollout"] == {"rows": 8, "prompt_len": 128, "cache_len": 128, "chunk": 16, "max_new_tokens": 16}


def test_fsdp_sharding_is_real_in_the_compiled_train_step(v5e_plan):
    from ee_jax.config import load_config, trained_model
    from ee_jax.models.accounting import param_count

    train = v5e_plan["steps"][0]
    coll = train["collectives"]["by_kind"]
    # Parameters are gathered before use, gradients reduced across the fsdp axis.
    assert coll["all-gather"]["count"] > 0
    assert coll.get("reduce-scatter", {}).get("count", 0) + coll.get("all-reduce", {}).get("count", 0) > 0
    # Each chip holds a quarter of the decoder's fp32 weights; the embedding table is replicated
    # (parallel/rules.py: its d_model axis stays whole), and so are the norm scales (a few hundred bytes).
    model = trained_model(load_config(None, TINY))
    total, table = 4 * param_count(model), 4 * model.vocab_size * model.d_model
    sharded = table + (total - table) / 4
    assert sharded <= train["param_bytes"] <= sharded + 4 * model.d_model * (2 * model.num_layers + 1)
    assert train["opt_bytes"] >= 2 * train["param_bytes"] - 64  # AdamW: two moments per parameter


def test_out_of_memory_exits_non_zero_naming_the_step_and_what_helps():
    require("libtpu")
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "ee_jax.cli.main", "plan", *TINY, *FSDP, "tokenizer.vocab_size=32768",
           "train.batch_size=4096", "train.seq_len=128", "--topology", "v5e:2x2", "--steps", "train", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 3, out.stderr[-2000:]
    plan = json.loads(out.stdout.strip().splitlines()[-1])
    assert not plan["fits"]
    train = plan["steps"][0]
    assert "RESOURCE_EXHAUSTED" in train["oom"]
    assert train["over_bytes"] > 0 and train["peak_bytes"] > 15 * 1024**3
    assert plan["summary"].startswith("train does not fit: needs ")
    assert any("train.grad_accum=2" in a for a in train["advice"])
    assert any("model.remat=full" in a for a in train["advice"])
    assert "DOES NOT FIT" in out.stdout and "try: model.dtype=bfloat16" in out.stdout


def test_gpu_plan_compiles_for_simulated_devices(tiny_config):
    from ee_jax.plan import make_plan

    plan = make_plan(tiny_config(*FSDP, "model.attention_impl=cudnn"), "h100x8", steps=("train",))
    assert plan["simulated"] and plan["chips"] == 8 and plan["chip"] == "NVIDIA H100 SXM"
    assert plan["fits"] and plan["mesh"]["fsdp"] == 8
    # XLA:CPU cannot compile cuDNN attention: the simulated plan says what it compiled instead.
    assert plan["substituted"] == {"model.attention_impl": "cudnn -> xla (simulated devices)"}


def test_topology_names_and_mesh_validation(tiny_config):
    from ee_jax.config import ConfigError, validate_mesh
    from ee_jax.plan import parse_topology

    assert parse_topology("v5e:4x4")[1] == 16 and parse_topology("v5p:2x2x4")[1] == 16
    assert parse_topology("h100x8")[0].platform == "gpu"
    with pytest.raises(ValueError, match=r"--topology 'v9:2x2': expected a TPU slice such as v5e:2x2"):
        parse_topology("v9:2x2")
    # A training-only plan is not refused for rl.micro_rows (8 rows cannot split over fsdp=16).
    cfg = tiny_config("mesh.data=1", "mesh.fsdp=16", "train.batch_size=16", "rl.micro_rows=8")
    validate_mesh(cfg, 16, steps=("train",))
    with pytest.raises(ConfigError, match="rl.micro_rows"):
        validate_mesh(cfg, 16)


HLO = """HloModule m

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %ag = f32[8]{0} all-gather(f32[2]{0} %x), replica_groups={{0,1,2,3}}, dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%i, %ag)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %c = s32[] constant(6)
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  %ar = f32[8]{0} all-reduce(f32[8]{0} %y), replica_groups=[2,4]<=[8], to_apply=%add
  ROOT %r = f32[8] get-tuple-element(%w), index=1
}
"""


def test_collectives_count_loop_iterations_and_ring_bytes():
    from ee_jax.plan.hlo import collectives

    c = collectives(HLO, 8)
    ag, ar = c["by_kind"]["all-gather"], c["by_kind"]["all-reduce"]
    assert (ag["static_count"], ag["count"], ag["bytes"]) == (1, 6, 6 * 32)
    assert ag["transfer_bytes"] == pytest.approx(6 * 32 * 3 / 4)  # ring all-gather over 4 chips
    assert (ar["count"], ar["bytes"]) == (1, 32)
    assert ar["transfer_bytes"] == pytest.approx(2 * 32 * 3 / 4)  # groups of 4 ([2,4]<=[8])
    assert c["unknown_trip_loops"] == 0


def test_accelerator_presets_name_a_topology_their_mesh_divides():
    """configs/accelerators/*.yaml: each names its topology (`--topology NAME` in its header) and its mesh and
    batch shapes divide over that many chips for training and RL (the full compile: bench/plan_presets.py)."""
    import glob
    import re

    from ee_jax.config import load_config, validate_mesh
    from ee_jax.plan import parse_topology

    root = os.path.join(os.path.dirname(__file__), "..", "configs", "accelerators")
    paths = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert len(paths) >= 5
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        names = re.findall(r"--topology (\S+)", text)
        assert names, f"{path}: no '--topology NAME' in its header"
        cfg = load_config(path)
        _, chips = parse_topology(names[0])
        validate_mesh(cfg, chips, steps=("train", "rl"))
        assert cfg.model.dtype == "bfloat16" and cfg.model.remat != "none"
