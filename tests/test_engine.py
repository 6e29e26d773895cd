"""The rollout engine (models/engine.py): multi-turn sessions with continuous batching and prefix reuse give,
turn for turn, exactly what ``Sampler.generate`` gives for that turn's prompt and seed (greedy and sampled,
EOS and stop strings), while prefilling only the new part of each prompt (evaluation episodes on it equal
one-episode-at-a-time ``generate`` calls: tests/test_eval.py)."""

import dataclasses

import numpy as np
import pytest

from ee_jax.config import SamplerConfig
from ee_jax.models import init_params
from ee_jax.models.engine import RolloutEngine, Turn, rollout_engine
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import make_mesh, single_device_mesh
from tests.test_sampler import CFG, Chars


@pytest.fixture(scope="module")
def model():
    mesh = single_device_mesh()
    return (*init_params(CFG, mesh, seed=0), mesh)


def _sessions(n: int, turns: int, mode: str, seed: int = 0):
    """Scripted sessions: each turn's prompt is built from the previous prompt and reply like an agent's.

    ``append``: the prompt grows by the reply and a new observation (the cache is reused up to there);
    ``slide``: after two turns the oldest observation drops out (the prefix changes: a recompute)."""
    rng = np.random.RandomState(seed)
    header = {s: [2] + rng.randint(3, 60, 6).tolist() for s in range(n)}
    obs = {(s, t): rng.randint(3, 60, rng.randint(3, 9)).tolist() for s in range(n) for t in range(turns)}
    history: dict[int, list] = {s: [] for s in range(n)}

    def prompt(s: int) -> list[int]:
        h = history[s] if mode == "append" else history[s][-2:]
        return header[s] + [x for step in h for x in step] + obs[(s, len(history[s]))] + [63]

    def first():
        for s in range(n):
            yield Turn(s, prompt(s), seed=1000 * s)

    def advance(turn, sample):
        s = turn.session
        history[s].append(obs[(s, len(history[s]))] + sample.ids[:3])
        return None if len(history[s]) == turns else Turn(s, prompt(s), seed=1000 * s + len(history[s]))

    return first, advance


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", ["append", "slide"])
def test_every_turn_equals_generate_and_reuses_the_prefix(model, temperature, mode):
    gdef, params, mesh = model
    sampler = Sampler(gdef, params, CFG, mesh, Chars(), SamplerConfig(stop=["zz"]))
    first, advance = _sessions(n=5, turns=4, mode=mode)
    seen = []

    def on_reply(turn, sample):
        seen.append((turn, sample))
        return advance(turn, sample)

    engine = RolloutEngine(sampler, rows=2)  # fewer rows than sessions: rows are refilled as sessions end
    engine.run(first(), on_reply, max_new_tokens=20, temperature=temperature, stop_ids=[7])
    assert len(seen) == 5 * 4
    for turn, got in seen:
        want = sampler.generate([turn.prompt], max_new_tokens=20, temperature=temperature, stop_ids=[7],
                                seed=[turn.seed])[0]
        assert got.ids == want.ids and got.text == want.text and got.finish_reason == want.finish_reason
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=2e-4)
    reasons = {s.finish_reason for _, s in seen}
    st = engine.stats
    assert st.turns == 20 and st.sessions == 5 and st.prompt_tokens == sum(len(t.prompt) for t, _ in seen)
    assert st.prefilled_tokens == st.prompt_tokens - st.reused_tokens
    assert st.generated_tokens == sum(len(s.ids) for _, s in seen)
    prev = {}
    extends = 0  # what a continuing turn keeps when its prompt extends the previous one: all but its last token
    for turn, _ in seen:
        extends += len(prev[turn.session]) - 1 if turn.session in prev else 0
        prev[turn.session] = turn.prompt
    if mode == "append":
        assert st.reused_tokens >= extends and st.recomputes == 0
    else:  # the window slides from the fourth turn on: that turn keeps only the header (7 tokens), less than before
        assert st.recomputes == 5 and 7 * 15 <= st.reused_tokens < extends
    assert len(reasons) >= 2, reasons  # the scripts exercise more than one way a turn ends


def test_engine_is_shared_per_sampler_and_rows_are_bucketed(model):
    gdef, params, mesh = model
    sampler = Sampler(gdef, params, CFG, mesh, Chars())
    assert rollout_engine(sampler, 3) is rollout_engine(sampler, 3)
    assert rollout_engine(sampler, 3).rows == 4


def test_sharded_engine_on_8_devices_matches_one_device(model, tiny_config):
    gdef, params, mesh = model
    first, advance = _sessions(n=3, turns=3, mode="append", seed=1)
    one = []
    RolloutEngine(Sampler(gdef, params, CFG, mesh, Chars()), rows=4).run(
        first(), lambda t, s: (one.append(s.ids), advance(t, s))[1], max_new_tokens=12)
    mesh8 = make_mesh(tiny_config("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"))
    gdef8, params8 = init_params(CFG, mesh8, seed=0)
    first, advance = _sessions(n=3, turns=3, mode="append", seed=1)
    eight = []
    RolloutEngine(Sampler(gdef8, params8, CFG, mesh8, Chars()), rows=4).run(
        first(), lambda t, s: (eight.append(s.ids), advance(t, s))[1], max_new_tokens=12)
    assert one == eight


def test_bad_turns_are_clear_errors(model):
    gdef, params, mesh = model
    engine = RolloutEngine(Sampler(gdef, params, CFG, mesh, Chars()), rows=1)
    with pytest.raises(ValueError, match="exceeds 256 cache slots"):
        engine.run([Turn(0, [5] * 240)], lambda t, s: None, max_new_tokens=20)
    with pytest.raises(ValueError, match="session 1 for session 0"):
        engine.run([Turn(0, [5, 6])], lambda t, s: Turn(1, [5]), max_new_tokens=4)


def test_scanned_layers_decode_equals_the_unrolled_loop():
    """``sampler.scan_layers``: the sampler and the engine scan the (stacked) layers, a KV cache with a leading
    layer axis; a local/global window pattern whose depth is not a whole number of periods (3 layers, period
    2) takes the scanned group and the unrolled remainder. Tokens equal the unrolled loop's."""
    base = dataclasses.replace(CFG, num_layers=3, sliding_window=8, global_every=2)
    mesh = single_device_mesh()
    gdef, params = init_params(base, mesh, seed=0)
    loop = Sampler(gdef, params, base, mesh, Chars())
    scan = Sampler(gdef, params, base, mesh, Chars(), SamplerConfig(scan_layers=True))
    assert scan.scan and not loop.scan
    k, _ = scan.empty_cache(2, 16)
    assert k.shape == (3, 2, CFG.num_kv_heads, 16, CFG.d_model // CFG.num_heads)
    prompts = [[2, 5, 9, 11, 30, 7, 8, 12, 40, 41, 3], [2, 44, 45]]
    for temperature in (0.0, 1.0):
        a = scan.generate(prompts, max_new_tokens=24, temperature=temperature, seed=[3, 4])
        b = loop.generate(prompts, max_new_tokens=24, temperature=temperature, seed=[3, 4])
        assert [x.ids for x in a] == [x.ids for x in b] and len(a[0].ids) == 24
    got = {}
    for name, sampler in (("scan", scan), ("loop", loop)):
        first, advance = _sessions(n=3, turns=3, mode="slide", seed=2)
        ids = got[name] = []
        RolloutEngine(sampler, rows=2).run(first(), lambda t, s, ids=ids, advance=advance: (ids.append(s.ids),
                                                                                          advance(t, s))[1],
                                           max_new_tokens=12, temperature=1.0)
    assert got["scan"] == got["loop"] and len(got["scan"]) == 9
