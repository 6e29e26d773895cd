"""Experience pipelines on real household records: loss masks, packing, mixtures, determinism, per-host
sharding, checkpointed iterator state, epoch accounting, finite passes, dropped examples, and the
``ee-jax data`` command.

The records come from oracle runs of the household environment with K uniform alternatives branched at
every expert state and a template reflection per state (a small stand-in for the collectors, so these
tests depend only on the record schema and the store format).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import sys

import numpy as np
import pytest

from ee_jax.config import load_config, save_config
from ee_jax.data.examples import render_record, sources_for
from ee_jax.data.experience_dataset import dataset_sizes, experience_batches, select_records, to_train_batch
from ee_jax.data.tokenizer_corpus import corpus_lines, ensure_tokenizer
from ee_jax.envs import branch, make_env
from ee_jax.records import prompts
from ee_jax.records.schema import Outcome, RecordError, State, Step, make_record
from ee_jax.records.store import shard_path, write_shard
from ee_jax.tokenizer import render_prompt
from tests.conftest import TINY

KINDS = ("expert_step", "transition", "reflection")


# ------------------------------------------------------------------------------------------ records


def play_oracle(env, task):
    """``[(state, action, next_observation, reward, done, info)]`` of the oracle's episode."""
    obs = env.reset(task)
    history: list[Step] = []
    out = []
    while not env.done:
        admissible = env.admissible_actions()
        action = env.oracle_action()
        if action is None:
            break
        state = State(task.goal, tuple(history), obs, None if admissible is None else tuple(admissible))
        nxt, reward, done, info = env.step(action)
        out.append((state, action, nxt, reward, done, info))
        history.append(Step(action, nxt))
        obs = nxt
    return out


def episode_records(env, task, k: int, rng: random.Random):
    """(expert_steps, transitions, reflections) of one oracle episode, ``k`` alternatives per state."""
    common = lambda i: {"env": env.name, "task_id": task.id, "split": task.split, "traj_id": f"{task.id}/oracle",
                        "step": i}
    experts, transitions, reflections, prefix = [], [], [], []
    for i, (state, action, nxt, reward, done, info) in enumerate(play_oracle(env, task)):
        outcome = dict(reward=reward, done=done, valid=info["valid"], won=info["won"], score=info["score"])
        experts.append(make_record("expert_step", **common(i), task=task.to_json(), state=state, action=action,
                                   next_observation=nxt, **outcome, source="expert"))
        transitions.append(make_record("transition", **common(i), state=state, action=action, next_observation=nxt,
                                       **outcome, is_expert=True, source="expert"))
        alts = rng.sample([a for a in state.admissible if a != action], min(k, len(state.admissible) - 1))
        outs = []
        for b in branch(env, task, prefix, alts):
            o = dict(reward=b.reward, done=b.done, valid=b.info["valid"], won=b.info["won"], score=b.info["score"])
            outs.append(Outcome(b.action, b.observation, **o))
            transitions.append(make_record("transition", **common(i), state=state, action=b.action,
                                           next_observation=b.observation, **o, is_expert=False, source="uniform"))
        text = (f"If I chose '{outs[0].action}', the environment would answer: {outs[0].observation[:60]} That does "
                f"not move me toward '{task.goal}'; '{action}' does.")
        verdict = "dropped" if i % 4 == 3 else "kept"  # as a filter would drop some
        reflections.append(make_record("reflection", **common(i), state=state,
                                       expert=Outcome(action, nxt, **outcome), alternatives=outs, text=text,
                                       generator="grounded", verdict=verdict, reason="" if verdict == "kept" else "x"))
        prefix.append(action)
    return experts, transitions, reflections


def write_kind(data_dir: str, kind: str, shards: list[list[dict]]) -> None:
    """Shards of ``kind`` with the sidecar fields the collectors write (by_split, kept_by_split)."""
    for i, records in enumerate(shards):
        by_split, kept = collections.Counter(r["split"] for r in records), collections.Counter(
            r["split"] for r in records if kind == "reflection" and r["verdict"] == "kept")
        write_shard(shard_path(data_dir, kind, i), records,
                    {"kind": kind, "index": i, "settings_hash": "test", "units": len(records),
                     "by_split": dict(by_split), "counters": {"kept_by_split": dict(kept)} if kind == "reflection"
                     else {}})


def build_store(data_dir: str, n_tasks: int = 6, k: int = 2, seed: int = 0, splits=("train",),
                tasks_per_shard: int = 3) -> dict[str, list[dict]]:
    """A household store in ``data_dir`` (split-pure shards); returns the records written, by kind."""
    env = make_env("household")
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    shards: dict[str, list[list[dict]]] = {kind: [] for kind in KINDS}
    for split in splits:
        tasks = env.make_tasks(split, n_tasks)
        for start in range(0, len(tasks), tasks_per_shard):
            chunk = {kind: [] for kind in KINDS}
            for task in tasks[start:start + tasks_per_shard]:
                for kind, recs in zip(KINDS, episode_records(env, task, k, rng)):
                    chunk[kind] += recs
            for kind in KINDS:
                shards[kind].append(chunk[kind])
                out[kind] += chunk[kind]
    for kind in KINDS:
        write_kind(data_dir, kind, shards[kind])
    env.close()
    return out


# ------------------------------------------------------------------------------------------ fixtures

SETTINGS = TINY + ["train.seq_len=512", "model.max_seq_len=1024", "tokenizer.vocab_size=512", "train.batch_size=4",
                   "data.packing_bins=8"]


def make_cfg(run_dir, *extra: str):
    return load_config(None, SETTINGS + [f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(cfg, tokenizer, records by kind): 6 train + 2 valid tasks; the run's tokenizer trained on them."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    records = build_store(os.path.join(run_dir, "data"), n_tasks=6, splits=("train",))
    valid = build_store(os.path.join(run_dir, "valid_data"), n_tasks=2, splits=("valid",))
    cfg = make_cfg(run_dir)
    tok = ensure_tokenizer(cfg)
    return cfg, tok, records, valid


def rendered(records, objective, cfg, tok, kinds=None):
    """Token tuples of every record the pipeline would train on (split train, kept reflections)."""
    out = collections.Counter()
    for kind in kinds or sources_for(objective, cfg):
        for r in records[kind]:
            if kind == "reflection" and r["verdict"] != "kept":
                continue
            ex = render_record(r, objective, tok, cfg.tokenizer.template, cfg.prompt, cfg.train.seq_len + 1)
            out[tuple(ex.ids.tolist())] += 1
    return out


def segments(batch):
    """``(tokens, weights, source)`` of every packed example in a batch, row by row."""
    out = []
    for row in range(batch["tokens"].shape[0]):
        seg = batch["segment_ids"][row]
        for s in np.unique(seg[seg > 0]):
            m = seg == s
            out.append((tuple(batch["tokens"][row][m].tolist()), batch["weights"][row][m],
                        int(batch["source"][row][m][0])))
    return out


def take(it, n):
    return [next(it) for _ in range(n)]


# ------------------------------------------------------------------------------------------ loss masks


@pytest.mark.parametrize("objective", ["il", "iwm", "sr"])
def test_loss_mask_covers_exactly_the_target(store, objective):
    cfg, tok, records, _ = store
    kind = {"il": "expert_step", "iwm": "transition", "sr": "reflection"}[objective]
    for r in records[kind][:12]:
        ex = render_record(r, objective, tok, "plain", cfg.prompt, 4096)
        m = ex.loss_mask > 0
        state = State.from_json(r["state"])
        if objective == "il":
            target, prompt = r["action"], prompts.policy_prompt(state, cfg.prompt)
        elif objective == "iwm":
            target = prompts.world_model_target(r["next_observation"], cfg.prompt)
            prompt = prompts.world_model_prompt(state, r["action"], cfg.prompt)
            assert prompts.WORLD_MODEL_INSTRUCTION in tok.decode(ex.ids[~m])
            assert f"Action taken: {r['action']}" in tok.decode(ex.ids[~m])
        else:
            target = r["text"].strip() + "\nAction: " + r["expert"]["action"]
            prompt = prompts.policy_prompt(state, cfg.prompt)
            assert prompts.WORLD_MODEL_INSTRUCTION not in tok.decode(ex.ids)
        # trained: the target's tokens then EOS, and nothing else; untrained: exactly the inference prompt
        assert ex.ids[m].tolist() == tok.encode(target) + [tok.eos_id]
        assert tok.decode(ex.ids[m]) == target
        assert ex.ids[~m].tolist() == render_prompt(tok, "plain", prompt).tolist()
        assert m[-int(m.sum()):].all()  # the target is the tail


def test_transitions_include_alternatives_and_invalid_actions(store):
    cfg, tok, records, _ = store
    ts = records["transition"]
    assert any(not t["is_expert"] for t in ts) and any(t["is_expert"] for t in ts)
    assert dataset_sizes(cfg, "iwm") == {"transition": len(ts)}  # every transition is trained on
    assert dataset_sizes(cfg, "il") == {"expert_step": len(records["expert_step"])}
    kept = sum(r["verdict"] == "kept" for r in records["reflection"])
    assert kept < len(records["reflection"])
    assert dataset_sizes(cfg, "sr") == {"reflection": kept, "expert_step": len(records["expert_step"])}


# ------------------------------------------------------------------------------------------ packing


def test_packed_rows_are_consistent_and_whole(store):
    cfg, tok, records, _ = store
    known = rendered(records, "iwm", cfg, tok)
    it = experience_batches(cfg, "iwm", tok)
    n_segments = 0
    for batch in take(it, 6):
        assert set(batch) == {"tokens", "weights", "segment_ids", "positions", "source"}
        assert all(v.shape == (4, 513) for v in batch.values())
        for row in range(4):
            seg, pos, w = batch["segment_ids"][row], batch["positions"][row], batch["weights"][row]
            used = int(np.count_nonzero(seg))
            assert (seg[:used] > 0).all() and (seg[used:] == 0).all()  # padding only at the end
            assert (np.diff(seg[:used]) >= 0).all() and (np.diff(seg[:used]) <= 1).all()
            assert (w[seg == 0] == 0).all() and (batch["source"][row][seg == 0] == 0).all()
            for s in np.unique(seg[seg > 0]):
                assert (pos[seg == s] == np.arange(np.count_nonzero(seg == s))).all()
        for tokens, weights, source in segments(batch):
            assert tokens in known  # a whole example: never split across rows
            assert tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id and weights[-1] == 1 and weights[0] == 0
            assert source == 1
            n_segments += 1
    assert n_segments > 6 * 4  # several examples per row
    s = it.stats()
    assert s["examples"]["transition"] == n_segments and 0.5 < s["packing_fill"] <= 1.0
    tb = to_train_batch(batch)
    assert tb["inputs"].shape == (4, 512) and tb["weights"].sum() == sum(w.sum() for _, w, _ in segments(batch))


def test_unpacked_rows_hold_one_example(store):
    cfg, tok, records, _ = store
    cfg = make_cfg(cfg.run_dir, "data.packing=false")
    known = rendered(records, "il", cfg, tok)
    batch = next(experience_batches(cfg, "il", tok))
    assert (batch["segment_ids"].max(axis=1) == 1).all()
    assert (batch["positions"] == np.arange(513)).all()
    for tokens, _, _ in segments(batch):
        assert tokens in known


# ------------------------------------------------------------------------------------------ mixtures, seeds


def test_mixture_follows_weights(store):
    cfg, tok, records, _ = store
    cfg = make_cfg(cfg.run_dir, "data.sr_mix={reflection: 3.0, expert_step: 1.0}")
    it = experience_batches(cfg, "sr", tok)
    take(it, 40)
    ex = it.stats()["examples"]
    assert abs(ex["reflection"] / (ex["reflection"] + ex["expert_step"]) - 0.75) < 0.04, ex
    assert it.stats()["sizes"]["reflection"] == sum(r["verdict"] == "kept" for r in records["reflection"])


def test_sr_mixes_kept_reflections_and_expert_steps(store):
    cfg, tok, records, _ = store
    known_r = rendered(records, "sr", cfg, tok, kinds=["reflection"])
    known_e = rendered(records, "sr", cfg, tok, kinds=["expert_step"])
    dropped = {tuple(render_record(r, "sr", tok, "plain", cfg.prompt, 513).ids.tolist())
               for r in records["reflection"] if r["verdict"] == "dropped"}
    seen = collections.Counter()
    for batch in take(experience_batches(cfg, "sr", tok), 10):
        for tokens, _, source in segments(batch):
            assert tokens in (known_r if source == 1 else known_e) and tokens not in dropped
            seen[source] += 1
    assert seen[1] and seen[2]


def test_same_seed_same_batches_other_seed_other_order(store):
    cfg, tok, _, _ = store
    a = take(experience_batches(cfg, "iwm", tok), 3)
    b = take(experience_batches(cfg, "iwm", tok), 3)
    c = take(experience_batches(cfg, "iwm", tok, seed=cfg.seed + 1), 3)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert not all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, c))


def test_hosts_split_the_single_host_batches_row_wise(store):
    """Each host keeps its rows of the same global batch: together they are the one-host batches,
    so every example is seen once across hosts and training does not depend on the host count."""
    cfg, tok, records, _ = store
    known = rendered(records, "iwm", cfg, tok)
    single = list(experience_batches(cfg, "iwm", tok, repeat=False, shuffle=True, batch_size=8))
    hosts = []
    for pid in range(2):
        it = experience_batches(cfg, "iwm", tok, repeat=False, shuffle=True, batch_size=8, process_index=pid,
                                process_count=2)
        hosts.append(list(it))
        assert all(b["tokens"].shape == (4, 513) for b in hosts[-1])  # local batch = global / processes
    assert len(hosts[0]) == len(hosts[1]) == len(single)
    for one, a, b in zip(single, *hosts, strict=True):
        for k in one:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), one[k], err_msg=k)
    shares = [collections.Counter(t for b in batches for t, _, _ in segments(b)) for batches in hosts]
    assert shares[0] + shares[1] == known and shares[0] and shares[1]
    repeated = [take(experience_batches(cfg, "iwm", tok, batch_size=8, process_index=p, process_count=2), 3)
                for p in range(2)]
    for one, a, b in zip(take(experience_batches(cfg, "iwm", tok, batch_size=8), 3), *repeated, strict=True):
        np.testing.assert_array_equal(np.concatenate([a["tokens"], b["tokens"]]), one["tokens"])


def test_records_sharding_gives_hosts_disjoint_record_shares(store):
    """data.host_sharding=records: each host renders only its records (pid::nproc) and packs them."""
    cfg, tok, records, _ = store
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, host_sharding="records"))
    known = rendered(records, "iwm", cfg, tok)
    shares = []
    for pid in range(2):
        it = experience_batches(cfg, "iwm", tok, repeat=False, shuffle=True, batch_size=8, process_index=pid,
                                process_count=2)
        batches = list(it)
        assert all(b["tokens"].shape == (4, 513) for b in batches)
        shares.append(collections.Counter(t for b in batches for t, _, _ in segments(b)))
    assert shares[0] + shares[1] == known
    assert abs(sum(shares[0].values()) - sum(shares[1].values())) <= 1  # record counts differ by at most one


# ------------------------------------------------------------------------------------------ state, epochs


def test_checkpoint_restores_the_exact_position(store, tmp_path):
    import jax.numpy as jnp

    from ee_jax.checkpoint import Checkpointer

    cfg, tok, _, _ = store
    cfg = make_cfg(cfg.run_dir, "data.sr_mix={reflection: 2.0, expert_step: 1.0}")
    it = experience_batches(cfg, "sr", tok)
    take(it, 3)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.save(3, {"x": jnp.zeros(2)}, data_iterator=it)
    expected, expected_stats = take(it, 4), it.stats()

    fresh = experience_batches(cfg, "sr", tok)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.restore(3, target={"x": jnp.zeros(2)}, data_iterator=fresh)
    got = take(fresh, 4)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(expected, got) for k in x)
    assert fresh.stats() == expected_stats

    other = experience_batches(cfg, "il", tok)
    with pytest.raises(ValueError, match="objective: saved 'sr', now 'il'"):
        other.set_state(it.get_state())


def test_resume_on_another_host_count(store, tmp_path):
    """data.host_sharding=rows: a position saved on two hosts continues on one (and one on two) with the
    same global batches; the checkpoint's per-process file of another count is handed over."""
    import glob

    import jax.numpy as jnp

    from ee_jax.checkpoint import Checkpointer

    cfg, tok, _, _ = store

    def hosts():
        return [experience_batches(cfg, "iwm", tok, batch_size=8, process_index=p, process_count=2) for p in range(2)]

    two = hosts()
    for it in two:
        take(it, 3)
    one = experience_batches(cfg, "iwm", tok, batch_size=8)
    one.set_state(two[0].get_state())
    for want_a, want_b, got in zip(take(two[0], 3), take(two[1], 3), take(one, 3), strict=True):
        np.testing.assert_array_equal(np.concatenate([want_a["tokens"], want_b["tokens"]]), got["tokens"])
    # the counters are per host: host 0's are doubled for one host (not exact: the hosts' rows differ)
    seen = sum(sum(it.stats()["examples"].values()) for it in two)
    assert sum(one.stats()["examples"].values()) == pytest.approx(seen, rel=0.1)

    single = experience_batches(cfg, "iwm", tok, batch_size=8)
    take(single, 2)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.save(2, {"x": jnp.zeros(2)}, data_iterator=single)
    expected = take(single, 3)
    (saved,) = glob.glob(str(tmp_path / "ckpt" / "2" / "data" / "process_0-of-1.json"))
    os.rename(saved, saved.replace("-of-1", "-of-2"))  # as if written by the first of two hosts
    fresh = experience_batches(cfg, "iwm", tok, batch_size=8)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.restore(2, target={"x": jnp.zeros(2)}, data_iterator=fresh)
    assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(expected, take(fresh, 3), strict=True))
    moved = hosts()
    with open(saved.replace("-of-1", "-of-2")) as f:
        state = json.load(f)
    for it in moved:
        it.set_state(state)
    for want, a, b in zip(expected, take(moved[0], 3), take(moved[1], 3), strict=True):
        np.testing.assert_array_equal(np.concatenate([a["tokens"], b["tokens"]]), want["tokens"])

    # records sharding depends on the host count: refused, saying why
    rec = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, host_sharding="records"))
    by_records = experience_batches(rec, "iwm", tok, batch_size=8, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="only with data.host_sharding=rows"):
        experience_batches(cfg, "iwm", tok, batch_size=8).set_state(by_records.get_state())


def test_epoch_accounting(store):
    cfg, tok, records, _ = store
    n = len(records["expert_step"])
    it = experience_batches(cfg, "il", tok)
    tokens = targets = starts = 0
    while it.stats()["examples"]["expert_step"] < 3 * n:
        b = next(it)
        tokens += int(np.count_nonzero(b["segment_ids"]))
        targets += int(b["weights"].sum())
        starts += len(segments(b))
    s = it.stats()
    assert s["examples"]["expert_step"] == starts and s["tokens"] == tokens and s["target_tokens"] == targets
    assert s["sizes"] == {"expert_step": n} and s["epochs"]["expert_step"] == starts / n >= 3
    assert s["dropped_too_long"] == {"expert_step": 0}
    assert s["packing_fill"] == tokens / (s["rows"] * 513)
    # one finite pass: exactly one epoch
    fin = experience_batches(cfg, "il", tok, repeat=False, shuffle=False)
    for _ in fin:
        pass
    assert fin.stats()["examples"] == {"expert_step": n} and fin.stats()["epochs"] == {"expert_step": 1.0}


def test_finite_pass_sees_every_example_once(store):
    cfg, tok, records, _ = store
    known = rendered(records, "sr", cfg, tok)
    batches = list(experience_batches(cfg, "sr", tok, repeat=False, shuffle=False))
    got = collections.Counter(t for b in batches for t, _, _ in segments(b))
    assert got == known
    last = batches[-1]
    assert last["tokens"].shape == (4, 513)
    empty = last["segment_ids"].max(axis=1) == 0
    assert (last["weights"][empty] == 0).all()
    tokens = sum(int(np.count_nonzero(b["segment_ids"])) for b in batches)
    assert tokens == sum(len(t) * c for t, c in known.items())


def test_too_long_target_is_dropped_and_counted(store, tmp_path):
    cfg, tok, records, _ = store
    experts = [dict(r) for r in records["expert_step"][:5]]
    experts[2]["action"] = "go to " + " ".join(f"cabinet {i}" for i in range(200))  # ~1000 tokens
    write_kind(str(tmp_path), "expert_step", [experts])
    assert render_record(experts[2], "il", tok, "plain", cfg.prompt, 513) is None
    it = experience_batches(cfg, "il", tok, data_dir=str(tmp_path), repeat=False, shuffle=False)
    got = [t for b in it for t, _, _ in segments(b)]
    assert len(got) == 4 and it.stats()["dropped_too_long"] == {"expert_step": 1}


def test_bad_record_names_shard_record_and_field(store, tmp_path):
    cfg, tok, records, _ = store
    bad = [dict(r) for r in records["expert_step"][:3]]
    bad[1]["step"] = "two"
    write_kind(str(tmp_path), "expert_step", [bad])
    with pytest.raises(RecordError) as e:
        list(experience_batches(cfg, "il", tok, data_dir=str(tmp_path), repeat=False, shuffle=False))
    msg = str(e.value)
    assert "expert_step-00000.arrayrecord record 1" in msg and "'step'" in msg and "'two'" in msg


def test_empty_selection_names_data_dir_kind_and_split(store):
    cfg, tok, _, _ = store
    with pytest.raises(ValueError, match=r"data: no 'transition' records in split 'valid'"):
        experience_batches(cfg, "iwm", tok, split="valid")
    data_dir = os.path.join(cfg.run_dir, "valid_data")
    it = experience_batches(cfg, "iwm", tok, data_dir=data_dir, split="valid", repeat=False, shuffle=False)
    assert sum(1 for _ in it) >= 1 and len(select_records(data_dir, "transition", "valid")) > 0


# ------------------------------------------------------------------------------------------ tokenizer, CLI


def test_tokenizer_from_records(store):
    from ee_jax.agent.weights import run_tokenizer

    cfg, tok, _, _ = store
    lines = corpus_lines(os.path.join(cfg.run_dir, "data"), cfg.prompt, max_lines=50)
    assert len(lines) == 50
    assert any(prompts.WORLD_MODEL_INSTRUCTION in x for x in lines)
    assert any(prompts.POLICY_INSTRUCTION in x for x in lines) and any("\nAction: " in x for x in lines)
    again = ensure_tokenizer(cfg)  # exists now: loaded, not retrained
    assert again.model_file == tok.model_file and run_tokenizer(cfg).vocab_size == tok.vocab_size == 512
    assert os.listdir(os.path.join(cfg.run_dir, "tokenizer")) == ["spm.model"]


def _cli(*argv):
    from ee_jax.cli.main import build_parser

    args = build_parser().parse_args(list(argv))
    args.func(args)


def test_data_show_and_stats(store, capsys, monkeypatch):
    cfg, tok, records, _ = store
    save_config(cfg, os.path.join(cfg.run_dir, "config.yaml"))
    _cli("data", "show", cfg.run_dir, "--objective", "iwm", "--n", "2", "--json")
    out = capsys.readouterr().out.strip().splitlines()
    payload = json.loads(out[-1])
    text = "\n".join(out[:-1])
    assert payload["objective"] == "iwm" and len(payload["examples"]) == 2
    first = records["transition"][0]
    ex = payload["examples"][0]
    assert {"kind", "traj_id", "step", "prompt_text", "target_text", "tokens", "trained_tokens"} <= set(ex)
    assert ex["kind"] == "transition" and ex["traj_id"] == first["traj_id"] and ex["step"] == first["step"]
    assert ex["target_text"] == first["next_observation"] and prompts.WORLD_MODEL_INSTRUCTION in ex["prompt_text"]
    assert f"[[{first['next_observation']}</s>]]" in text and "\x1b[" not in text
    assert "=== iwm | transition | traj" in text and f"{ex['trained_tokens']} trained" in text

    _cli("data", "show", cfg.run_dir, "--objective", "sr", "--n", "1")
    text = capsys.readouterr().out
    assert text.count("=== sr |") == 2 and "\nAction: " in text

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: colour instead of markers
    _cli("data", "show", cfg.run_dir, "--objective", "il", "--n", "1")
    text = capsys.readouterr().out
    assert f"\x1b[1;32m{records['expert_step'][0]['action']}</s>\x1b[0m" in text and "[[" not in text
    _cli("data", "show", cfg.run_dir, "--objective", "il", "--n", "1", "--no-color")
    assert "[[" in capsys.readouterr().out

    _cli("data", "stats", cfg.run_dir, "--json")
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["kinds"]["transition"]["by_split"] == {"train": len(records["transition"])}
    assert stats["sizes"]["il"]["train"] == {"expert_step": len(records["expert_step"])}
