"""Collection with a real (tiny, untrained) policy: policy-proposed alternatives, ``self`` reflections,
and ``http`` reflections from the same policy behind ``ee-jax serve``."""

import os
from pathlib import Path

import pytest

from ee_jax.config import load_config
from ee_jax.experience.collect import run_stage
from ee_jax.records.store import iter_records, load_manifest
from tests.conftest import TINY, require

ARGS = TINY + ["model.max_seq_len=2048", "tokenizer.vocab_size=600", "experience.tasks.train=3",
               "experience.tasks.valid=0", "experience.tasks_per_shard=2", "experience.explore.k=3",
               "experience.explore.strategy=mixed", "experience.explore.max_new_tokens=8",
               "prompt.history_window=1", "prompt.max_observation_chars=160", "experience.reflect.alternatives=2",
               "experience.reflect.max_new_tokens=12", "experience.reflect.min_words=1",
               "experience.reflect.batch_size=8", "sampler.batch_buckets=[8,16,32]",
               "sampler.prefill_buckets=[256,512,1024,2048]"]


def cfg_for(run_dir, *extra):
    return load_config(None, ARGS + [f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    run = tmp_path_factory.mktemp("policy_run")
    cfg = cfg_for(run)
    run_stage(cfg, "expert", progress=False)
    section = run_stage(cfg, "explore", progress=False)
    return cfg, section


def test_policy_alternatives(explored):
    cfg, section = explored
    c = section["counters"]
    states = c["states"]
    # mixed, K=3, fraction 0.5: round(1.5)=2 from the policy (2 proposals each -> 4 samples), 1 uniform
    assert c["proposals"] == states * 4
    assert c["by_source"]["policy"] == 2 * states and c["by_source"]["uniform"] == states
    assert section["settings"]["policy"] == "init:seed=0"
    assert os.path.exists(os.path.join(cfg.run_dir, "tokenizer", "spm.model"))  # trained from the expert data
    trans = list(iter_records(os.path.join(cfg.run_dir, "data"), "transition"))
    for t in trans:
        if not t["is_expert"]:
            assert t["action"] in t["state"]["admissible"]  # canonicalised or replaced: always admissible


def test_policy_alternatives_are_deterministic(explored, tmp_path):
    cfg, _ = explored
    other = cfg_for(tmp_path)
    run_stage(other, "expert", progress=False)
    run_stage(other, "explore", progress=False)
    spm = [(Path(d) / "tokenizer" / "spm.model").read_bytes() for d in (cfg.run_dir, tmp_path)]
    assert spm[0] == spm[1]  # the tokenizer trained from the same expert data is the same
    a = list(iter_records(os.path.join(cfg.run_dir, "data"), "transition"))
    b = list(iter_records(os.path.join(tmp_path, "data"), "transition"))
    assert a == b


def test_self_and_http_reflections_agree(explored, tmp_path):
    require("fastapi")
    require("uvicorn")
    from ee_jax.agent.policy import load_policy
    from ee_jax.serve import create_app
    from tests.test_serve import ServerThread

    cfg, _ = explored
    self_cfg = cfg_for(cfg.run_dir, "experience.reflect.generator=self", "experience.reflect.temperature=1.0")
    section = run_stage(self_cfg, "reflect", progress=False)
    refl = list(iter_records(os.path.join(cfg.run_dir, "data"), "reflection"))
    assert len(refl) == section["counters"]["states"] > 0
    assert all(r["generator"] == "self" for r in refl)
    c = section["counters"]
    assert c["verdict"]["kept"] + c["verdict"]["dropped"] == len(refl)
    assert sum(c["dropped_reasons"].values()) == c["verdict"]["dropped"]
    assert load_manifest(os.path.join(cfg.run_dir, "data"))["reflection"]["settings"]["generator"] == "self"

    # the same policy behind `ee-jax serve`, asked through the http generator: same prompts, same
    # per-case seeds -> the same reflections, labelled as coming from a teacher endpoint
    policy = load_policy(cfg=cfg, stage="init")
    srv = ServerThread(create_app(policy.sampler(), policy.tokenizer, policy.template, "served-policy"))
    try:
        http_cfg = cfg_for(cfg.run_dir, "experience.reflect.generator=http", "experience.reflect.temperature=1.0",
                           f"experience.reflect.url={srv.url}", "experience.reflect.model=served-policy")
        with pytest.raises(ValueError, match="other settings.*generator"):
            run_stage(http_cfg, "reflect", progress=False)
        section = run_stage(http_cfg, "reflect", progress=False, overwrite=True)
    finally:
        srv.stop()
    http_refl = list(iter_records(os.path.join(cfg.run_dir, "data"), "reflection"))
    assert section["counters"]["generator_errors"] == 0
    assert [r["generator"] for r in http_refl] == ["teacher:served-policy"] * len(refl)
    assert [r["text"] for r in http_refl] == [r["text"] for r in refl]
    assert any(r["text"] for r in refl)
