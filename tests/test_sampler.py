import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.config import SamplerConfig
from ee_jax.models import apply_model, init_params, preset_config
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import make_mesh, single_device_mesh, use_mesh

CFG = preset_config("ee-1m", vocab_size=64, d_model=32, num_heads=4, num_kv_heads=2, ffn_dim=64,
                    num_layers=2, max_seq_len=256, init_std=0.3)


class Chars:
    """A real (if trivial) tokenizer: one id per character a..z, EOS=1, BOS=2."""

    bos_id, eos_id, pad_id, vocab_size = 2, 1, 0, 64

    def encode(self, text):
        return [3 + ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + i - 3) for i in ids if 3 <= i < 29)


@pytest.fixture(scope="module")
def model():
    mesh = single_device_mesh()
    gdef, params = init_params(CFG, mesh, seed=0)
    return gdef, params, mesh


# Full forwards without a KV cache. Right-padding to one width leaves the causal logits at the real
# positions unchanged and compiles once for every prompt (eager forwards of growing length took a minute).
_FORWARD = jax.jit(apply_model, static_argnums=0)


def _reference_greedy(gdef, params, mesh, prompt, n, width=32):
    seq, lps = list(prompt), []
    with use_mesh(mesh):
        for _ in range(n):
            logits, _ = _FORWARD(gdef, params, jnp.asarray([seq + [0] * (width - len(seq))]))
            lp = jax.nn.log_softmax(logits[0, len(seq) - 1])
            seq.append(int(jnp.argmax(lp)))
            lps.append(float(lp[seq[-1]]))
    return seq[len(prompt):], lps


def test_greedy_matches_full_forward_and_logprobs(model):
    gdef, params, mesh = model
    s = Sampler(gdef, params, CFG, mesh)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [40]]
    out = s.generate(prompts, max_new_tokens=12, temperature=0)
    for p, o in zip(prompts, out):
        ids, lps = _reference_greedy(gdef, params, mesh, p, 12)
        assert o.ids == ids and o.finish_reason == "length"
        np.testing.assert_allclose(o.logprobs, lps, atol=1e-4)


def test_sampling_is_seeded_and_topk1_is_greedy(model):
    gdef, params, mesh = model
    s = Sampler(gdef, params, CFG, mesh)
    prompts = [[5, 6, 7], [8, 9]]
    a = [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=1.0, seed=3)]
    b = [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=1.0, seed=3)]
    c = [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=1.0, seed=4)]
    assert a == b and a != c
    greedy = [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=0)]
    assert [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=1.5, top_k=1, seed=5)] == greedy
    assert [o.ids for o in s.generate(prompts, max_new_tokens=16, temperature=1.0, top_p=1e-6, seed=6)] == greedy


def test_top_k_restricts_support(model):
    gdef, params, mesh = model
    s = Sampler(gdef, params, CFG, mesh)
    with use_mesh(mesh):
        logits, _ = apply_model(gdef, params, jnp.asarray([[5, 6, 7]]))
    top3 = set(np.argsort(np.asarray(logits[0, -1]))[-3:].tolist())
    firsts = {s.generate([[5, 6, 7]], max_new_tokens=1, temperature=5.0, top_k=3, seed=i)[0].ids[0] for i in range(40)}
    assert firsts <= top3 and len(firsts) >= 2


def test_eos_and_stop_strings_end_generation(model):
    gdef, params, mesh = model
    tok = Chars()
    s = Sampler(gdef, params, CFG, mesh, tokenizer=tok)
    base = s.generate(["abc"], max_new_tokens=20, temperature=0)[0]
    ids = base.ids
    # Treat the 3rd generated token as EOS: generation stops right after it.
    eos = s.generate(["abc"], max_new_tokens=20, temperature=0, stop_ids=[ids[2]])[0]
    assert eos.ids == ids[:3] and eos.finish_reason == "eos"
    text = tok.decode(ids)
    letters = [c for c in text[1:] if c]
    if letters:
        stop = letters[0]
        cut = text.find(stop, 0)
        out = s.generate(["abc"], max_new_tokens=20, temperature=0, stop=[stop])[0]
        assert out.finish_reason == "stop" and out.text == text[:cut]
        assert len(out.ids) == len(out.logprobs) <= len(ids)


def test_candidate_scoring_equals_sum_of_token_logprobs(model):
    gdef, params, mesh = model
    s = Sampler(gdef, params, CFG, mesh)
    prompt, cands = [5, 6, 7], [[8], [9, 10], [11, 12, 13]]
    scores = s.score(prompt, cands)
    with use_mesh(mesh):
        for c, sc in zip(cands, scores):
            seq = prompt + c
            lp = jax.nn.log_softmax(apply_model(gdef, params, jnp.asarray([seq]))[0][0], -1)
            exp = sum(float(lp[len(prompt) - 1 + j, c[j]]) for j in range(len(c)))
            np.testing.assert_allclose(sc, exp, rtol=1e-4)


def test_sharded_sampler_on_8_devices_matches(model, tiny_config):
    gdef, params, mesh = model
    ref = [o.ids for o in Sampler(gdef, params, CFG, mesh).generate([[5, 6], [7]], max_new_tokens=8, temperature=0)]
    mesh8 = make_mesh(tiny_config("mesh.data=4", "mesh.tensor=2"))
    replicated = jax.sharding.NamedSharding(mesh8, jax.sharding.PartitionSpec())
    p8 = jax.device_put(params, jax.tree.map(lambda _: replicated, params))
    s8 = Sampler(gdef, p8, CFG, mesh8, cfg=SamplerConfig(batch_buckets=[4, 8]))
    assert [o.ids for o in s8.generate([[5, 6], [7]], max_new_tokens=8, temperature=0)] == ref


def test_prompt_too_long_is_a_clear_error(model):
    gdef, params, mesh = model
    s = Sampler(gdef, params, CFG, mesh)
    with pytest.raises(ValueError, match="max_seq_len"):
        s.generate([[5] * 250], max_new_tokens=64)
    with pytest.raises(ValueError, match="tokenizer"):
        s.generate(["text without tokenizer"])


def test_inference_copy_once_per_policy_version_gathered_and_cast(tiny_config):
    """Decoding reads a copy made once per params version: fsdp gathered, tensor kept, matrices cast."""
    mesh = make_mesh(tiny_config("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"))
    gdef, params = init_params(CFG, mesh, seed=0)
    assert any("fsdp" in str(a.sharding.spec) for a in jax.tree.leaves(params))  # trained fsdp-sharded
    s = Sampler(gdef, params, CFG, mesh, cfg=SamplerConfig(batch_buckets=[4, 8]))
    ref = [o.ids for o in Sampler(*init_params(CFG, single_device_mesh(), seed=0), CFG, single_device_mesh())
           .generate([[5, 6], [7]], max_new_tokens=8, temperature=0)]
    assert [o.ids for o in s.generate([[5, 6], [7]], max_new_tokens=8, temperature=0)] == ref
    top, layers = s.inference_weights()
    assert s.inference_weights()[1] is layers  # reused by the next call
    specs = [str(a.sharding.spec) for a in jax.tree.leaves(layers)]
    assert not any("fsdp" in sp for sp in specs) and any("tensor" in sp for sp in specs)
    # a new policy version (as after an RL update) gets a new copy, and decodes with the new weights
    _, params1 = init_params(CFG, mesh, seed=1)
    s.params = params1
    assert s.inference_weights()[1] is not layers
    ref1 = [o.ids for o in Sampler(*init_params(CFG, single_device_mesh(), seed=1), CFG, single_device_mesh())
            .generate([[5, 6], [7]], max_new_tokens=8, temperature=0)]
    assert [o.ids for o in s.generate([[5, 6], [7]], max_new_tokens=8, temperature=0)] == ref1
    # an explicit dtype casts the matrices only (norm scales are used in fp32)
    bf = Sampler(gdef, params, CFG, mesh, cfg=SamplerConfig(batch_buckets=[4, 8], weights_dtype="bfloat16"))
    dtypes = {(a.ndim, str(a.dtype)) for a in jax.tree.leaves(bf.inference_weights()[1])}
    assert dtypes == {(1, "float32"), (2, "bfloat16"), (3, "bfloat16")}


def test_auto_inference_dtype_of_a_bf16_model_is_bit_identical():
    """model.dtype=bfloat16: each layer casts its fp32 weights to bf16 on use, so the bf16 inference copy
    ("auto") gives exactly the tokens and log-probs of decoding from the fp32 weights."""
    cfg = preset_config("ee-1m", vocab_size=64, d_model=32, num_heads=4, num_kv_heads=2, ffn_dim=64,
                        num_layers=2, max_seq_len=256, init_std=0.3, dtype="bfloat16")
    mesh = single_device_mesh()
    gdef, params = init_params(cfg, mesh, seed=0)
    auto = Sampler(gdef, params, cfg, mesh).generate([[5, 6, 7], [9]], max_new_tokens=12, temperature=0)
    f32 = Sampler(gdef, params, cfg, mesh, cfg=SamplerConfig(weights_dtype="float32")).generate(
        [[5, 6, 7], [9]], max_new_tokens=12, temperature=0)
    assert {str(a.dtype) for a in jax.tree.leaves(Sampler(gdef, params, cfg, mesh).inference_weights()[1])
            if a.ndim >= 2} == {"bfloat16"}
    assert [(o.ids, o.logprobs) for o in auto] == [(o.ids, o.logprobs) for o in f32]
