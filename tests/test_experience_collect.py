"""Expert collection, exploration and the shard store on real environments."""

import json
import os

import pytest

from ee_jax.config import load_config
from ee_jax.envs import make_env
from ee_jax.experience.expert import ReplayError, collect_expert
from ee_jax.experience.explore import choose_alternatives, collect_explore
from ee_jax.records.schema import RecordError, State, Step, make_record, validate
from ee_jax.records.store import (
    StageMismatchError,
    iter_records,
    load_manifest,
    read_shard,
    shard_path,
    write_shard,
)
from ee_jax.records.trajectories import TrajectoryFileError


def cfg_for(tmp_path, *overrides):
    return load_config(None, [f"run_dir={tmp_path}", "experience.tasks.train=6", "experience.tasks.valid=2",
                              "experience.tasks_per_shard=4", "experience.explore.k=3", *overrides])


def test_expert_from_oracle(tmp_path):
    cfg = cfg_for(tmp_path)
    section = collect_expert(cfg, progress=False)
    c = section["counters"]
    assert c["trajectories"] == 8 and c["won"] == 8 and c["trajectories_by_split"] == {"train": 6, "valid": 2}
    assert section["shards"] == 3  # 4 + 2 train, 2 valid: shards never mix splits
    recs = list(iter_records(str(tmp_path / "data"), "expert_step"))
    assert len(recs) == section["records"] == sum(section["by_split"].values())
    # every step's history is the trajectory so far, and the last step wins
    by_traj = {}
    for r in recs:
        by_traj.setdefault(r["traj_id"], []).append(r)
    for steps in by_traj.values():
        for i, s in enumerate(steps):
            assert s["step"] == i and len(s["state"]["history"]) == i
            assert s["action"] in s["state"]["admissible"]
            if i:
                assert s["state"]["observation"] == steps[i - 1]["next_observation"]
                assert s["state"]["history"][-1] == {"action": steps[i - 1]["action"],
                                                     "observation": steps[i - 1]["next_observation"]}
        assert steps[-1]["won"] and steps[-1]["done"]
    for shard in json.loads((tmp_path / "data" / "manifest.json").read_text())["expert_step"]["files"]:
        splits = {r["split"] for r in read_shard(str(tmp_path / "data" / shard["file"]))}
        assert len(splits) == 1


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_expert_from_jsonl(tmp_path):
    env = make_env("household")
    from ee_jax.envs import run_oracle

    tasks = env.make_tasks("train", 3)
    eps = [run_oracle(env, t) for t in tasks]
    good = [json.dumps({"task": t.id, "actions": e.actions}) for t, e in zip(tasks, eps)]
    with_obs = json.dumps({"task": tasks[0].to_json(), "actions": eps[0].actions, "observations": eps[0].observations})
    bad_json = '{"task": "train-d1-0", "actions": ['
    bad_field = json.dumps({"task": tasks[1].id, "acts": eps[1].actions})
    bad_action = json.dumps({"task": tasks[2].id, "actions": ["fly to the moon"]})
    wrong_obs = json.dumps({"task": tasks[2].id, "actions": eps[2].actions[:1],
                            "observations": [eps[2].observations[0], "something else"]})
    lines = [good[0], good[1], bad_json, good[2], bad_field, good[0], bad_action, wrong_obs]
    path = _write_jsonl(tmp_path / "traj.jsonl", lines)

    with pytest.raises(TrajectoryFileError) as e:
        collect_expert(cfg_for(tmp_path / "a", "experience.source=jsonl", f"experience.trajectories={path}"),
                       progress=False)
    assert "line 3" in str(e.value) and "line 5" in str(e.value) and "'acts'" in str(e.value)

    # a line that is not UTF-8 is a bad line like any other, named by its number and byte
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes((good[0] + "\n").encode() + b'{"task": "caf\xe9"}\n')
    with pytest.raises(TrajectoryFileError, match=r"latin1.jsonl: 1 bad line\(s\): line 2: not UTF-8 text \(byte 0xe9"):
        collect_expert(cfg_for(tmp_path / "e", "experience.source=jsonl", f"experience.trajectories={latin}"),
                       progress=False)

    # bad lines whose problem shows only on replay fail too, naming the line
    replay_path = _write_jsonl(tmp_path / "replay.jsonl", [good[0], bad_action])
    with pytest.raises(ReplayError, match="line 2.*not valid"):
        collect_expert(cfg_for(tmp_path / "b", "experience.source=jsonl", f"experience.trajectories={replay_path}"),
                       progress=False)

    cfg = cfg_for(tmp_path / "c", "experience.source=jsonl", f"experience.trajectories={path}",
                  "experience.on_bad_line=skip")
    section = collect_expert(cfg, progress=False)
    skipped = {s["line"]: s["error"] for s in section["skipped_lines"]}
    assert set(skipped) == {3, 5, 6} and "duplicate of line 1" in skipped[6]
    replay_errors = {r["line"]: r["error"] for r in section["counters"]["replay_errors"]}
    assert set(replay_errors) == {7, 8} and "differs" in replay_errors[8]
    assert section["counters"]["trajectories"] == 3
    # the with-observations line is a duplicate of line 1 by (task, actions) and was not in the file;
    # a file of it alone replays cleanly
    only = _write_jsonl(tmp_path / "obs.jsonl", [with_obs])
    s2 = collect_expert(cfg_for(tmp_path / "d", "experience.source=jsonl", f"experience.trajectories={only}"),
                        progress=False)
    assert s2["counters"]["trajectories"] == 1 and s2["records"] == len(eps[0].actions)


def test_explore_uniform_transitions(tmp_path):
    cfg = cfg_for(tmp_path)
    collect_expert(cfg, progress=False)
    section = collect_explore(cfg, progress=False)
    experts = list(iter_records(str(tmp_path / "data"), "expert_step"))
    trans = list(iter_records(str(tmp_path / "data"), "transition"))
    assert section["counters"]["states"] == len(experts)
    env = make_env("household")
    by_state = {}
    for t in trans:
        by_state.setdefault((t["traj_id"], t["step"]), []).append(t)
    assert len(by_state) == len(experts)
    for e in experts:
        group = by_state[(e["traj_id"], e["step"])]
        exp = [t for t in group if t["is_expert"]]
        alts = [t for t in group if not t["is_expert"]]
        assert len(exp) == 1 and exp[0]["action"] == e["action"] and exp[0]["next_observation"] == e["next_observation"]
        adm = e["state"]["admissible"]
        assert len(alts) == min(3, len(adm) - 1)
        assert len({a["action"] for a in alts}) == len(alts) and e["action"] not in {a["action"] for a in alts}
        assert all(a["action"] in adm and a["source"] == "uniform" and a["valid"] for a in alts)
        # each alternative's next observation is what the environment really shows
        from ee_jax.envs.base import Task

        task = Task.from_json(e["task"])
        env.reset(task)
        for h in e["state"]["history"]:
            env.step(h["action"])
        snap = env.snapshot()
        for a in alts:
            env.restore(snap)
            assert env.step(a["action"]).observation == a["next_observation"]
    # settings are part of the data: changing K is refused, --overwrite redoes it
    with pytest.raises(StageMismatchError, match="other settings.*k"):
        collect_explore(cfg_for(tmp_path, "experience.explore.k=2"), progress=False)
    s2 = collect_explore(cfg_for(tmp_path, "experience.explore.k=2"), progress=False, overwrite=True)
    assert s2["counters"]["branches"] < section["counters"]["branches"]
    assert load_manifest(str(tmp_path / "data"))["transition"]["settings"]["k"] == 2


def test_choose_alternatives_policy_rules():
    import random

    state = State("g", (), "o", ("go north", "go south", "take key", "open door"))
    props = ["Go  North", "go north", "take key", "dance", "open door", "go south"]
    chosen, c = choose_alternatives(state, "open door", "policy", 3, 0.5, props, random.Random(0))
    acts = [a for a, _ in chosen]
    assert acts[:2] == ["go north", "take key"]  # canonicalised to the admissible spelling, deduplicated
    assert "open door" not in acts and len(acts) == 3 and len(set(acts)) == 3
    assert c["duplicates"] == 1 and c["replaced"] == 1  # "dance" replaced by a random admissible action
    # mixed: round(K * fraction) from the policy, the rest uniform
    chosen, _ = choose_alternatives(state, "open door", "mixed", 2, 0.5, ["take key"], random.Random(0))
    assert chosen[0] == ("take key", "policy") and chosen[1][1] == "uniform"
    # open action space: proposals kept as written (invalid ones too), never topped up
    open_state = State("g", (), "o", None)
    chosen, c = choose_alternatives(open_state, "a()", "policy", 3, 0.5, ["b()", "b()", "c(x=1)"], random.Random(0))
    assert chosen == [("b()", "policy"), ("c(x=1)", "policy")] and c["short"] == 1
    with pytest.raises(ValueError, match="open"):
        choose_alternatives(open_state, "a()", "uniform", 3, 0.5, [], random.Random(0))


def test_record_validation_names_shard_record_and_field(tmp_path):
    st = State("goal", (Step("look", "a room"),), "obs", ("look",))
    rec = make_record("transition", env="e", task_id="t", split="train", traj_id="t#1", step=1, state=st,
                      action="look", next_observation="a room", reward=0.0, done=False, valid=True, won=False,
                      score=0.0, is_expert=True, source="expert")
    bad_type = json.loads(json.dumps(rec))
    bad_type["state"]["history"][0]["action"] = 5
    future = dict(rec, v=99)
    unknown = dict(rec, extra=1)
    bad_source = dict(rec, source="random")
    path = str(tmp_path / "transition-00000.arrayrecord")
    for bad, pattern in [(bad_type, r"record 1: field 'state.history\[0\].action': expected str"),
                         (future, "record 1: field 'v': 'transition' schema version 99 is not supported"),
                         (unknown, r"record 1: 'transition' record has unknown field\(s\) \['extra'\]"),
                         (bad_source, "field 'source': 'random'")]:
        write_shard(path, [rec, bad], {"kind": "transition"})
        with pytest.raises(RecordError, match=pattern) as e:
            read_shard(path)
        assert path in str(e.value)
    with pytest.raises(RecordError, match="expected a 'expert_step' record"):
        validate(rec, "x", "expert_step")


def test_shards_are_atomic_and_tmp_files_cleaned(tmp_path):
    cfg = cfg_for(tmp_path)
    collect_expert(cfg, progress=False)
    data = str(tmp_path / "data")
    # simulate an interrupted write of shard 1: the shard exists without its sidecar, plus a stray temp file
    os.remove(shard_path(data, "expert_step", 1) + ".json")
    with open(shard_path(data, "expert_step", 1) + ".tmp123", "w") as f:
        f.write("partial")
    before = read_shard(shard_path(data, "expert_step", 0))
    collect_expert(cfg, progress=False)
    assert not [f for f in os.listdir(data) if ".tmp" in f]
    assert read_shard(shard_path(data, "expert_step", 0)) == before
    assert os.path.exists(shard_path(data, "expert_step", 1) + ".json")


def test_shards_recorded_before_a_setting_existed_resume_when_it_has_its_default(tmp_path):
    """A setting ee_jax added later (here ``prompt.history_mode``) is absent from older shards' recorded
    settings: with its default value the shards are the same work, not a mismatch; any other value, or
    any other changed setting, is still refused by name."""
    from ee_jax.experience.reflect.stage import collect_reflect
    from ee_jax.records.store import finished_shards, settings_hash

    cfg = cfg_for(tmp_path, "experience.reflect.generator=grounded", "experience.reflect.alternatives=1")
    collect_expert(cfg, progress=False)
    collect_explore(cfg, progress=False)
    first = collect_reflect(cfg, progress=False)
    data = str(tmp_path / "data")
    # rewrite the record as a version without prompt.history_mode would have written it
    manifest = load_manifest(data)
    old = manifest["reflection"]["settings"]
    del old["prompt"]["history_mode"]
    manifest["reflection"]["settings_hash"] = settings_hash(old)
    with open(os.path.join(data, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    for i, side in finished_shards(data, "reflection").items():
        side["settings_hash"] = settings_hash(old)
        with open(shard_path(data, "reflection", i) + ".json", "w") as f:
            json.dump(side, f)
    records = list(iter_records(data, "reflection"))

    again = collect_reflect(cfg, progress=False)  # the default "sliding": nothing to redo
    assert again["records"] == first["records"] and list(iter_records(data, "reflection")) == records
    assert "history_mode" not in load_manifest(data)["reflection"]["settings"]["prompt"]
    with pytest.raises(StageMismatchError, match=r"other settings \(differing: prompt.history_mode\)"):
        collect_reflect(cfg_for(tmp_path, "experience.reflect.generator=grounded", "experience.reflect.alternatives=1",
                                "prompt.history_mode=append"), progress=False)
    with pytest.raises(StageMismatchError, match=r"differing: prompt.history_window\)"):
        collect_reflect(cfg_for(tmp_path, "experience.reflect.generator=grounded", "experience.reflect.alternatives=1",
                                "prompt.history_window=1"), progress=False)
