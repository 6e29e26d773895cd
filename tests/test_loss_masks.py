"""Loss masks of the three objectives, beyond ``test_experience_pipeline`` (plain template, one record at
a time): every chat template, the ``sr`` mixture's expert steps, prompts shrunk or cut to fit, and what
the train step actually sees: packed (and unpacked) batches after ``to_train_batch`` shifts the weights
onto the targets, where a weight must never cross a segment boundary.

Expected targets are written from the record fields (not from the renderer): il -> the action, iwm ->
the next observation, sr -> the reflection then ``Action: <expert action>``; each followed by the
template's end of turn (``plain``: the EOS token).
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from ee_jax.data.examples import render_record
from ee_jax.data.experience_dataset import experience_batches, to_train_batch
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.records import prompts
from ee_jax.records.schema import State
from ee_jax.tokenizer import TEMPLATES, get_template, render_prompt
from tests.test_experience_pipeline import build_store, make_cfg

KIND = {"il": ("expert_step",), "iwm": ("transition",), "sr": ("reflection", "expert_step")}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(run_dir, tokenizer, records by kind): 4 household train tasks, K=2, tokenizer trained on them."""
    run_dir = str(tmp_path_factory.mktemp("masks"))
    records = build_store(os.path.join(run_dir, "data"), n_tasks=4, k=2, tasks_per_shard=2)
    return run_dir, ensure_tokenizer(make_cfg(run_dir)), records


def expected_target(record: dict) -> str:
    """The reply a record teaches, from its fields."""
    if record["kind"] == "expert_step":
        return record["action"]
    if record["kind"] == "transition":
        return record["next_observation"]
    return record["text"].strip() + "\nAction: " + record["expert"]["action"]


def expected_prompt(record: dict, objective: str, prompt_cfg) -> str:
    state = State.from_json(record["state"])
    if objective == "iwm":
        return prompts.world_model_prompt(state, record["action"], prompt_cfg)
    return prompts.policy_prompt(state, prompt_cfg)


def trained(records: dict, objective: str) -> list[dict]:
    """The records a full pass of ``objective`` trains on (kept reflections only)."""
    return [r for kind in KIND[objective] for r in records[kind]
            if kind != "reflection" or r["verdict"] == "kept"]


def check_target(tok, template: str, ids, record: dict) -> None:
    """``ids`` (the weighted tokens of one example) are exactly the record's target + end of turn."""
    t = get_template(template)
    ids = list(map(int, ids))
    text = expected_target(record) + t.end_of_turn
    if t.eos_after_assistant:
        assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
        ids = ids[:-1]
    else:
        assert tok.eos_id not in ids
    assert ids == tok.encode(text)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("objective", ["il", "iwm", "sr"])
def test_every_template_weights_exactly_the_target(store, template, objective):
    """Per record: the weighted tokens are the target + end of turn, the rest is the inference prompt."""
    run_dir, tok, records = store
    cfg = make_cfg(run_dir)
    t = get_template(template)
    for kind in KIND[objective]:  # sr: reflections and the expert steps mixed in
        for r in records[kind][:8]:
            assert len(r.get("next_observation", "")) < cfg.prompt.max_observation_chars  # target not clipped
            ex = render_record(r, objective, tok, template, cfg.prompt, 4096)
            m = ex.loss_mask > 0
            assert set(np.unique(ex.loss_mask)) <= {0.0, 1.0}
            check_target(tok, template, ex.ids[m], r)
            # unweighted: exactly the inference prompt, ending with the assistant's header
            prompt = expected_prompt(r, objective, cfg.prompt)
            assert ex.ids[~m].tolist() == render_prompt(tok, template, prompt).tolist()
            assert m[-int(m.sum()):].all() and not m[:len(ex.ids) - int(m.sum())].any()
            assert tok.decode(ex.ids[~m]).endswith(t.generation_prefix)
            # no markup of the template is trained but the closing end of turn
            weighted = tok.decode(ex.ids[m])
            assert not [sp for sp in t.special_tokens if sp not in t.end_of_turn and sp in weighted]


@pytest.mark.parametrize("template", ["plain", "chatml"])
def test_shrunk_and_cut_prompts_keep_the_mask_on_the_target(store, template):
    """A context too small for the prompt: history is shed, then prompt tokens are cut from the start
    (BOS kept); the weighted tokens are still exactly the target, and a target that cannot fit drops
    the example instead of being cut."""
    run_dir, tok, records = store
    cfg = make_cfg(run_dir)
    cut = 0
    for objective in ("il", "iwm", "sr"):
        for r in trained(records, objective)[::5]:
            full = render_record(r, objective, tok, template, cfg.prompt, 4096)
            n_target = int(full.loss_mask.sum())
            for max_len in (n_target + 24, n_target + 1):
                ex = render_record(r, objective, tok, template, cfg.prompt, max_len)
                m = ex.loss_mask > 0
                assert len(ex.ids) <= max_len and ex.ids[0] == tok.bos_id
                check_target(tok, template, ex.ids[m], r)
                assert not m[:len(ex.ids) - n_target].any()
                cut += ex.truncated
            assert render_record(r, objective, tok, template, cfg.prompt, n_target) is None  # BOS + target > max
    assert cut > 0


@pytest.mark.parametrize("template,packing", [("plain", True), ("chatml", True), ("chatml", False)])
@pytest.mark.parametrize("objective", ["il", "iwm", "sr"])
def test_train_batches_weight_targets_only_within_segments(store, objective, template, packing):
    """One pass of the pipeline through ``to_train_batch``: every record's target is trained once, the
    weights sit on the tail of its own segment, and no position predicts the first token of a segment
    from the one before it."""
    run_dir, tok, records = store
    cfg = make_cfg(run_dir, f"tokenizer.template={template}", f"data.packing={str(packing).lower()}")
    t = get_template(template)
    want = collections.Counter(expected_target(r) + t.end_of_turn for r in trained(records, objective))
    got = collections.Counter()
    crossings = multi = 0
    for batch in experience_batches(cfg, objective, tok, repeat=False, shuffle=False):
        tb = to_train_batch(batch)
        seg = batch["segment_ids"]
        w, targets = tb["weights"], tb["targets"]
        assert set(np.unique(w)) <= {0.0, 1.0}
        # a target in another segment than its input (a boundary, or padding) is never weighted
        boundary = seg[:, 1:] != seg[:, :-1]
        crossings += int(boundary[seg[:, 1:] > 0].sum())
        assert not w[boundary].any() and not w[seg[:, 1:] == 0].any()
        for row in range(w.shape[0]):
            pos = batch["positions"][row]
            starts = np.flatnonzero((pos[1:] == 0) & (seg[row, 1:] > 0))  # inputs right before a segment start
            assert not w[row, starts].any()
            multi += len(starts) > 0
            for s in np.unique(seg[row][seg[row] > 0]):
                idx = np.flatnonzero((seg[row, :-1] == s) & (seg[row, 1:] == s))  # predictions inside segment s
                ws = w[row, idx] > 0
                n = int(ws.sum())
                assert n > 0 and ws[-n:].all() and not ws[:-n].any()  # one contiguous run: the segment's tail
                ids = targets[row, idx[ws]].tolist()
                if t.eos_after_assistant:
                    assert ids[-1] == tok.eos_id
                    ids = ids[:-1]
                text = tok.decode(ids)
                assert ids == tok.encode(text)
                got[text] += 1
    assert got == want  # each trained record exactly once, nothing else weighted
    # packed rows really had boundaries to cross; unpacked rows hold one example each
    assert (crossings > 0 and multi > 0) if packing else (crossings == 0 and multi == 0)
