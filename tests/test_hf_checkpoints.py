"""HF checkpoint directories (``ee_jax.config.hf``, ``ee_jax.models.hf_load``, ``hf_export``): config.json,
sharded loading, export.

Tiny random Llama (GQA, Llama-3 RoPE scaling, tied, saved in bf16), Qwen2 (q/k/v biases, untied) and
Gemma3 (sliding window shorter than the prompt, a 2-local : 1-global ``layer_types`` pattern, HF's default
``query_pre_attn_scalar``) models are built from ``transformers`` config classes directly (not from our
``hf_config``), perturbed, and saved with ``save_pretrained`` in several shards + an index. We read them
on a data=2 x fsdp=2 x tensor=2 mesh and compare logits with HF's in fp32; then export and reload with
``from_pretrained``. No hub access. Needs the ``hf`` extra (torch, transformers).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from ee_jax.config import load_config
from ee_jax.config.hf import model_config_from_hf
from ee_jax.models import apply_model
from ee_jax.models import hf_load as hff
from ee_jax.models.factory import abstract_model
from ee_jax.models.hf_export import save_hf_checkpoint
from ee_jax.models.hf_load import load_hf_params
from ee_jax.parallel import make_mesh, use_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.hf

V = 256
_SMALL = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, initializer_range=0.1)
_LLAMA3 = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
               original_max_position_embeddings=32)
_LOCAL, _GLOBAL = "sliding_attention", "full_attention"


def _hf_config(family: str):
    if family == "llama":
        return transformers.LlamaConfig(num_hidden_layers=3, rms_norm_eps=1e-5, tie_word_embeddings=True,
                                        rope_parameters=dict(_LLAMA3), **_SMALL)
    if family == "qwen2":
        return transformers.Qwen2Config(num_hidden_layers=2, tie_word_embeddings=False,
                                        rope_parameters=dict(rope_type="default", rope_theta=1e6), **_SMALL)
    return transformers.Gemma3TextConfig(num_hidden_layers=6, head_dim=16, sliding_window=4,
                                         layer_types=[_LOCAL, _LOCAL, _GLOBAL] * 2, **_SMALL)


FAMILIES = ["llama", "qwen2", "gemma3"]
TOKENS = np.random.RandomState(0).randint(0, V, (2, 12))  # two prompts, longer than Gemma3's window


def _mesh():
    return make_mesh(load_config(None, ["mesh.fsdp=2", "mesh.tensor=2"]))  # data=2 x fsdp=2 x tensor=2


@functools.cache
def _saved(family: str, root: str):
    """``(hf_dir, fp32 HF model)``: random weights, perturbed so norms are not ones and biases not zero."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_hf_config(family), attn_implementation="eager",
                                                          dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf_dir = os.path.join(root, family)
    if family == "llama":  # bf16 on disk
        model.to(torch.bfloat16).save_pretrained(hf_dir, max_shard_size="40KB")
    else:
        model.save_pretrained(hf_dir, max_shard_size="100KB")
    # The reference is HF's own fp32 reading of the directory (casting the model back would also leave
    # its rotary inv_freq buffer rounded to bf16).
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    assert os.path.isfile(os.path.join(hf_dir, hff.INDEX_FILE))
    assert len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")]) >= 3
    return hf_dir, model


@functools.cache
def _loaded(family: str, root: str):
    hf_dir, model = _saved(family, root)
    cfg = model_config_from_hf(hf_dir, param_dtype="float32")
    mesh = _mesh()
    params = load_hf_params(hf_dir, cfg, mesh)
    gdef, _ = abstract_model(cfg, mesh)
    with torch.no_grad():
        theirs = model(torch.as_tensor(TOKENS, dtype=torch.long)).logits.numpy()
    return hf_dir, model, cfg, mesh, gdef, params, theirs


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf"))


def _ours(gdef, params, mesh, tokens=TOKENS):
    with use_mesh(mesh):
        return np.asarray(jax.jit(apply_model, static_argnums=0)(gdef, params, jnp.asarray(tokens, jnp.int32))[0])


def _rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _read_dir(d: str) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safetensors.safe_open(os.path.join(d, f), framework="numpy") as fh:
                out.update({k: fh.get_tensor(k) for k in fh.keys()})  # noqa: SIM118
    return out


# --- config.json ------------------------------------------------------------------------------------------

def test_model_config_from_hf(root):
    llama = model_config_from_hf(_saved("llama", root)[0])
    assert (llama.num_layers, llama.num_heads, llama.num_kv_heads, llama.head_dim) == (3, 4, 2, 16)
    assert llama.tie_embeddings and not llama.qkv_bias and llama.activation == "silu" and llama.norm_eps == 1e-5
    assert llama.rope_theta == 500000.0 and llama.param_dtype == "bfloat16" and llama.max_seq_len == 128
    assert (llama.rope_scaling.kind, llama.rope_scaling.factor, llama.rope_scaling.original_max_position) == (
        "llama3", 8.0, 32)
    qwen = model_config_from_hf(_saved("qwen2", root)[0])
    assert qwen.qkv_bias and not qwen.tie_embeddings and qwen.rope_theta == 1e6 and qwen.norm_eps == 1e-6
    assert qwen.rope_scaling.kind == "none" and qwen.param_dtype == "float32"
    gemma = model_config_from_hf(_saved("gemma3", root)[0])
    assert (gemma.sliding_window, gemma.global_every, gemma.query_pre_attn_scalar) == (4, 3, 256.0)
    assert gemma.qk_norm and gemma.post_norms and gemma.embed_scale and gemma.norm_offset == 1.0
    assert gemma.activation == "gelu_tanh" and gemma.tie_embeddings
    assert (gemma.rope_theta, gemma.local_rope_theta) == (1e6, 1e4)


def test_model_config_legacy_and_nested(root):
    with open(os.path.join(_saved("gemma3", root)[0], "config.json")) as f:
        text = json.load(f)
    plain = model_config_from_hf(text)
    inner = {k: v for k, v in text.items() if k not in ("architectures", "dtype")}
    nested = model_config_from_hf({"architectures": ["Gemma3ForConditionalGeneration"], "dtype": "bfloat16",
                                   "text_config": inner})  # the wrapper's dtype applies to the text model
    assert nested == dataclasses.replace(plain, param_dtype="bfloat16")
    # transformers 4.x keys: rope_theta / rope_local_base_freq / sliding_window_pattern, torch_dtype.
    old = {k: v for k, v in text.items() if k not in ("rope_parameters", "layer_types", "_sliding_window_pattern")}
    old.update(rope_theta=1e5, rope_local_base_freq=1e3, sliding_window_pattern=2, torch_dtype="float16")
    legacy = model_config_from_hf(old)
    assert (legacy.rope_theta, legacy.local_rope_theta, legacy.global_every) == (1e5, 1e3, 2)
    assert legacy.param_dtype == "float32"  # fp16 -> fp32 (exact)
    llama = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
             "rope_theta": 5e5, "rope_scaling": {"type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0}}
    cfg = model_config_from_hf(llama, max_seq_len=64)
    assert cfg.rope_theta == 5e5 and cfg.rope_scaling.factor == 4.0 and cfg.max_seq_len == 64
    assert cfg.rope_scaling.original_max_position == 2048  # HF: max_position_embeddings (LlamaConfig default)
    assert cfg.num_kv_heads == 4 and cfg.head_dim == 16 and not cfg.tie_embeddings and cfg.norm_eps == 1e-6


@pytest.mark.parametrize("family,change,key", [
    ("llama", {"architectures": ["MistralForCausalLM"]}, "MistralForCausalLM"),
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("llama", {"mlp_bias": True}, "mlp_bias"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "yarn"),
    ("llama", {"dtype": "float8_e4m3fn"}, "dtype"),
    ("qwen2", {"use_sliding_window": True}, "use_sliding_window"),
    ("gemma3", {"layer_types": [_LOCAL, _GLOBAL, _LOCAL, _LOCAL, _GLOBAL, _LOCAL]}, "layer_types"),
    ("gemma3", {"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
])
def test_unsupported_config_raises(root, tmp_path, family, change, key):
    with open(os.path.join(_saved(family, root)[0], "config.json")) as f:
        d = dict(json.load(f), **change)
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=key) as e:
        model_config_from_hf(str(tmp_path))
    assert "config.json" in str(e.value)


# --- loading --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_hf(root, family):
    hf_dir, model, cfg, mesh, gdef, params, theirs = _loaded(family, root)
    _, target = abstract_model(cfg, mesh)
    for a, t in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True):
        assert a.sharding == t.sharding and a.dtype == t.dtype and a.shape == t.shape
    assert any(len(a.sharding.device_set) == 8 and not a.sharding.is_fully_replicated
               for a in jax.tree.leaves(params))
    ours = _ours(gdef, params, mesh)
    assert ours.shape == theirs.shape
    assert _rel_err(ours, theirs) <= 1e-4, (family, _rel_err(ours, theirs))  # fp32: ~1e-6 seen


def test_reads_only_each_devices_shard(root, monkeypatch):
    """Every read is one device's shard of one leaf, built from exactly that many HF elements."""
    hf_dir, _, cfg, mesh, *_ = _loaded("qwen2", root)
    calls, read = [], []
    real_shard, real_slice = hff._read_shard, hff._read_slice

    def read_shard(spec, index, shape, dtype, *args):
        read.clear()
        out = real_shard(spec, index, shape, dtype, *args)
        calls.append((spec.hf_names[0], shape, out.shape, sum(read)))
        return out

    def read_slice(sl, key):
        x = real_slice(sl, key)
        read.append(x.size)
        return x

    monkeypatch.setattr(hff, "_read_shard", read_shard)
    monkeypatch.setattr(hff, "_read_slice", read_slice)
    load_hf_params(hf_dir, cfg, mesh)
    _, target = abstract_model(cfg, mesh)
    shard_shapes = {tuple(t.shape): t.sharding.shard_shape(t.shape) for t in jax.tree.leaves(target)}
    per_leaf: dict[str, int] = {}
    for name, shape, got, n_read in calls:
        assert got == shard_shapes[shape], name
        assert n_read == int(np.prod(got)), (name, n_read, got)  # no over-read
        per_leaf[name] = per_leaf.get(name, 0) + 1
    # Unique shards only: replicas along 'data' are read once; q is split fsdp x tensor = 4 ways.
    assert per_leaf["model.layers.0.self_attn.q_proj.weight"] == 4
    assert per_leaf["model.norm.weight"] == 1
    assert max(int(np.prod(g)) for _, s, g, _ in calls if s == (V, 64)) == V * 64 // 2  # embed: vocab / tensor


def _copy(hf_dir: str, dest) -> str:
    dest = str(dest / "copy")
    shutil.copytree(hf_dir, dest)
    return dest


def _edit(d: str, fn) -> None:
    """Apply ``fn(index_weight_map, tensors_by_file)`` and write the changed files back."""
    with open(os.path.join(d, hff.INDEX_FILE)) as f:
        index = json.load(f)
    files = {f: dict(safetensors.numpy.load_file(os.path.join(d, f))) for f in set(index["weight_map"].values())}
    fn(index["weight_map"], files)
    for f, tensors in files.items():
        safetensors.numpy.save_file(tensors, os.path.join(d, f), metadata={"format": "pt"})
    with open(os.path.join(d, hff.INDEX_FILE), "w") as f:
        json.dump(index, f)


NAME = "model.layers.1.mlp.up_proj.weight"


def _drop_everywhere(wm, files):
    files[wm.pop(NAME)].pop(NAME)


def _drop_from_file(wm, files):
    files[wm[NAME]].pop(NAME)


def _add_extra(wm, files):
    wm["model.layers.1.mlp.extra.weight"] = wm[NAME]
    files[wm[NAME]]["model.layers.1.mlp.extra.weight"] = np.zeros(3, np.float32)


def _reshape(wm, files):
    files[wm[NAME]][NAME] = files[wm[NAME]][NAME][:-1]


@pytest.mark.parametrize("edit,message", [
    (_drop_everywhere, "lacks tensor.*" + NAME),
    (_drop_from_file, NAME + ".*model-0000.*lacks it"),
    (_add_extra, r"unexpected tensor.*mlp\.extra\.weight \(model-0000"),
    (_reshape, NAME + r".*model-0000.*expected shape \(128, 64\), found \(127, 64\)"),
])
def test_bad_tensors_raise(root, tmp_path, edit, message):
    hf_dir, _, cfg, mesh, *_ = _loaded("qwen2", root)
    d = _copy(hf_dir, tmp_path)
    _edit(d, edit)
    with pytest.raises(ValueError, match=message):
        load_hf_params(d, cfg, mesh)


def test_config_mismatch_raises(root):
    hf_dir, _, cfg, mesh, *_ = _loaded("gemma3", root)
    with pytest.raises(ValueError, match="rope_theta.*check_config=False"):
        load_hf_params(hf_dir, dataclasses.replace(cfg, rope_theta=1e4), mesh)


def test_multimodal_gemma3_names(root, tmp_path):
    """Gemma3ForConditionalGeneration layout: text weights under model.language_model., vision ignored."""
    hf_dir, _, cfg, mesh, _, params, _ = _loaded("gemma3", root)
    d = _copy(hf_dir, tmp_path)

    def to_multimodal(wm, files):
        for name in list(wm):
            new = name.replace("model.", "model.language_model.", 1)
            wm[new] = wm.pop(name)
            files[wm[new]][new] = files[wm[new]].pop(name)
        wm["model.vision_tower.patch.weight"] = wm[new]
        files[wm[new]]["model.vision_tower.patch.weight"] = np.zeros(4, np.float32)

    _edit(d, to_multimodal)
    with open(os.path.join(d, "config.json")) as f:
        text = json.load(f)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architectures": ["Gemma3ForConditionalGeneration"], "text_config": text}, f)
    again = load_hf_params(d, model_config_from_hf(d, param_dtype="float32"), mesh)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- export ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip(root, tmp_path, family):
    hf_dir, model, cfg, mesh, gdef, params, theirs = _loaded(family, root)
    out = str(tmp_path / "export")
    save_hf_checkpoint(params, cfg, out, max_shard_bytes=60_000)
    shards = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    assert len(shards) > 1 and os.path.isfile(os.path.join(out, hff.INDEX_FILE))
    with open(os.path.join(out, hff.INDEX_FILE)) as f:
        assert set(json.load(f)["weight_map"].values()) == set(shards)
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        again = hf.eval()(torch.as_tensor(TOKENS, dtype=torch.long)).logits.numpy()
    assert _rel_err(again, theirs) <= 1e-5
    assert _rel_err(_ours(gdef, params, mesh), again) <= 1e-3
    back = load_hf_params(out, cfg, mesh)  # and back into ours, bit for bit
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.listdir(tmp_path) == ["export"]  # no temporary directory left behind
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_hf_checkpoint(params, cfg, out)


def test_bf16_export_is_bitwise(root, tmp_path):
    """bf16 weights on disk -> bf16 params -> bf16 export: the same bytes, one file when it fits."""
    hf_dir = _saved("llama", root)[0]
    cfg = model_config_from_hf(hf_dir)
    params = load_hf_params(hf_dir, cfg, _mesh())
    assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"bfloat16"}
    out = save_hf_checkpoint(params, cfg, tmp_path / "bf16")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    a, b = _read_dir(hf_dir), _read_dir(out)
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == np.dtype("bfloat16"), k
        np.testing.assert_array_equal(a[k].view(np.uint16), b[k].view(np.uint16), err_msg=k)


def test_export_tokenizer_token_ids_overwrite(root, tmp_path):
    _, _, cfg, _, _, params, _ = _loaded("qwen2", root)
    tok = tmp_path / "tok"
    tok.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tok / name).write_text(json.dumps({"name": name}))
    (tok / "unrelated.txt").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.safetensors").write_text("old")
    with pytest.raises(FileExistsError, match=str(out)):
        save_hf_checkpoint(params, cfg, out, tokenizer_dir=tok)
    assert os.listdir(out) == ["stale.safetensors"]  # untouched
    save_hf_checkpoint(params, cfg, out, tokenizer_dir=tok, overwrite=True,
                       token_ids={"bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": 0})
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                       "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "tokenizer.json").read_text()) == {"name": "tokenizer.json"}
    config = json.loads((out / "config.json").read_text())
    gen = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == gen["eos_token_id"] == [2, 3] and gen["bos_token_id"] == 1
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert model_config_from_hf(out) == dataclasses.replace(cfg, name="out")
    with pytest.raises(ValueError, match="unk_token_id"):
        save_hf_checkpoint(params, cfg, tmp_path / "x", token_ids={"unk_token_id": 5})


def test_recipe_init_hf_dir_streams_the_checkpoint(root):
    """``recipe.init=hf:DIR`` (every stage and ``ee-jax rl --from hf:DIR``) goes through the shard-by-shard
    loader, and a model config that disagrees with config.json is refused naming the init."""
    import dataclasses

    from ee_jax.agent.weights import initial_params

    hf_dir, _, cfg, mesh, _, params, _ = _loaded("qwen2", root)
    run_cfg = dataclasses.replace(load_config(None, ["mesh.fsdp=2", "mesh.tensor=2"]), model=cfg)
    got, source = initial_params(run_cfg, mesh, f"hf:{hf_dir}")
    assert source == f"hf:{hf_dir}"
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, params)
    wrong = dataclasses.replace(run_cfg, model=dataclasses.replace(cfg, rope_theta=10000.0))
    with pytest.raises(ValueError, match=r"recipe.init='hf:.*rope_theta"):
        initial_params(wrong, mesh, f"hf:{hf_dir}")

    # LoRA: the HF weights become the frozen base, with fresh adapters (B = 0) on every target
    lora = dataclasses.replace(run_cfg, model=dataclasses.replace(cfg, lora_rank=2))
    got, _ = initial_params(lora, mesh, f"hf:{hf_dir}")
    from ee_jax.models.lora import adapter_count, merge_lora

    assert adapter_count(got) > 0
    merged, _ = merge_lora(got, lora.model, mesh)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), merged, params)
