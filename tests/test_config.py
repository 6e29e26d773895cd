import dataclasses
import os

import pytest
import yaml

from ee_jax.config import (
    ConfigError,
    config_to_dict,
    load_config,
    resolve_mesh_shape,
    save_config,
    validate_mesh,
)
from ee_jax.models import PRESETS


def test_defaults_overrides_and_types():
    cfg = load_config(None, ["model.num_layers=3", "optimizer.lr=1e-3", "sampler.stop=['</s>', 'END']"])
    assert cfg.model.num_layers == 3 and cfg.optimizer.lr == 1e-3
    assert cfg.sampler.stop == ["</s>", "END"]
    assert cfg.train.steps == 200  # default kept


def test_yaml_file_with_defaults_chain(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  num_layers: 5\ntrain:\n  steps: 7\n")
    (tmp_path / "exp.yaml").write_text("defaults: [base.yaml]\ntrain:\n  steps: 9\n")
    cfg = load_config(tmp_path / "exp.yaml", ["seed=3"])
    assert (cfg.model.num_layers, cfg.train.steps, cfg.seed) == (5, 9, 3)


def test_packaged_preset_file_loads():
    cfg = load_config("lm/tiny")
    assert cfg.model.name == "ee-1m" and cfg.tokenizer.vocab_size == 512


def test_model_preset_then_overrides():
    cfg = load_config(None, ["model.preset=gemma3-270m", "model.num_layers=4"])
    assert cfg.model.name == "gemma3-270m" and cfg.model.num_layers == 4
    assert cfg.model.sliding_window == 512 and cfg.model.norm_offset == 1.0
    cfg2 = load_config(None, ["model=llama-3.1-8b"])
    assert cfg2.model.rope_scaling.kind == "llama3" and cfg2.model.rope_scaling.factor == 8.0
    assert set(PRESETS) >= {"ee-1m", "ee-8b", "smollm2-135m", "gemma3-270m", "llama-3.2-3b", "qwen2.5-7b"}


@pytest.mark.parametrize(
    "override, must_mention",
    [
        ("model.bogus=1", "model.bogus"),
        ("bogus_section.x=1", "bogus_section"),
        ("model.num_layers=abc", "model.num_layers"),
        ("model.num_heads=5", "model.num_heads=5"),
        ("model.num_kv_heads=3", "model.num_kv_heads=3"),
        ("model.activation=relu", "silu, gelu_tanh"),
        ("train.grad_accum=3", "train.grad_accum=3"),
        ("optimizer.schedule=step", "optimizer.schedule"),
        ("model.preset=ee-9000", "ee-9000"),
        ("train.seq_len=99999", "model.max_seq_len"),
        ("sampler.top_p=0", "sampler.top_p"),
        ("model.num_layers", "KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(override, must_mention):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert must_mention in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_mesh_resolution_and_errors():
    cfg = load_config(None, ["mesh.fsdp=2", "mesh.tensor=2", "model.num_heads=4", "model.num_kv_heads=2"])
    assert resolve_mesh_shape(cfg, 8) == (2, 2, 2)
    bad = load_config(None, ["mesh.data=3", "mesh.fsdp=1"])
    with pytest.raises(ConfigError, match="expected the device count 8"):
        validate_mesh(bad, 8)
    two_free = load_config(None, ["mesh.data=-1", "mesh.fsdp=-1"])
    with pytest.raises(ConfigError, match="at most one mesh axis"):
        resolve_mesh_shape(two_free, 8)
    odd_heads = load_config(None, ["mesh.data=1", "mesh.tensor=8", "model.num_heads=4", "model.num_kv_heads=2"])
    with pytest.raises(ConfigError, match="mesh.tensor"):
        validate_mesh(odd_heads, 8)
    small_batch = load_config(None, ["mesh.data=8", "train.batch_size=4"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        validate_mesh(small_batch, 8)


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(None, ["model.preset=smollm2-135m", "seed=11"])
    save_config(cfg, tmp_path / "run" / "config.yaml", extra={"seed": 11})
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert data["_run"] == {"seed": 11}
    # every default is spelled out
    assert data["model"]["rope_scaling"]["kind"] == "none" and "remat" in data["model"]
    data.pop("_run")
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(data))
    again = load_config(tmp_path / "again.yaml")
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    assert config_to_dict(again) == config_to_dict(cfg)


def _imported_model_shapes(monkeypatch, tmp_path):
    """Configs with ``model.preset: hf:models/NAME`` read NAME's ``config.json``, which ``ee-jax import``
    writes (``models/`` is not committed). Write it here from the packaged GGUF's metadata, exactly as
    the import does, in a scratch working directory (no tensor is dequantised)."""
    import json

    from tests.conftest import packaged_model_file, require

    require("gguf")
    from ee_jax.models.gguf_import import _reader, gguf_hf_config, gguf_metadata

    for name in ("smollm2-135m-instruct",):  # the packaged models the shipped configs name
        path = packaged_model_file(name)
        reader = _reader(path)
        config = gguf_hf_config(gguf_metadata(reader), {t.name for t in reader.tensors}, where=path)
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)


def test_every_shipped_config_loads_and_validates(monkeypatch, tmp_path):
    """configs/**.yaml (presets, quickstart, experiments, analyses) resolve with their defaults chains."""
    import glob

    from ee_jax.config import load_config

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "configs"))
    sweeps = os.path.join(root, "sweeps")
    paths = [p for p in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
             if not os.path.basename(p).startswith("_") and not p.startswith(sweeps + os.sep)]
    assert len(paths) >= 19
    _imported_model_shapes(monkeypatch, tmp_path)
    run_dirs = set()
    for p in paths:
        cfg = load_config(os.path.abspath(p))
        run_dirs.add(cfg.run_dir)
    assert len(run_dirs) == len(paths)  # no two configs write into the same run directory
    from ee_jax.sweep import load_sweep, sweep_points

    for p in glob.glob(os.path.join(sweeps, "*.yaml")):  # sweep files: their own schema, and every point
        monkeypatch.chdir(os.path.dirname(root))  # sweep files name their base relative to the repository
        sweep = load_sweep(p)
        for point in sweep_points(sweep):
            assert load_config(sweep.base, list(point.overrides)).run_dir == point.run_dir
    frac = load_config(os.path.join(root, "experiments", "analysis", "household-expert-1of8.yaml"))
    base = load_config(os.path.join(root, "experiments", "household.yaml"))
    assert frac.experience.tasks["train"] * 8 == base.experience.tasks["train"]
    assert frac.experience.explore.k == base.experience.explore.k and frac.recipe.seeds == [0, 1, 2, 3, 4]


def test_a_config_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: 1\nrun_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 2: not UTF-8 text \(byte 0xe9 at offset 20\)"):
        load_config(str(path))


@pytest.mark.parametrize("override, message", [
    ("seed=-7", "seed=-7: expected an integer in [0, 2**32)"),
    ("seed=100000000000000000000000", "seed=100000000000000000000000: expected an integer in [0, 2**32)"),
    ("tokenizer.vocab_size=99999999999999999999", "tokenizer.vocab_size=99999999999999999999: expected a positive"),
    ("model.d_model=4294967296", "model.d_model=4294967296: expected a positive integer below 2**31"),
    ("data.valid_fraction=1.5", "data.valid_fraction=1.5: expected in [0, 1)"),
    ("recipe.seeds=[0,-1]", "recipe.seeds=[0, -1]: expected a non-empty list of distinct integers in [0, 2**32)"),
])
def test_values_out_of_the_range_the_libraries_accept_are_refused_before_work(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(message)
