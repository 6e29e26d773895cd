"""RunDir: the run directory's layout in one place, stage settings checks, JSON errors that name the file."""

import os

import jax.numpy as jnp
import pytest

from ee_jax.checkpoint import Checkpointer
from ee_jax.config import Config, config_to_dict
from ee_jax.rundir import RunDir, StageMismatchError, settings_diff


def test_layout(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.config == os.path.join(run.root, "config.yaml")
    assert run.tokenizer_model == os.path.join(run.root, "tokenizer", "spm.model")
    assert run.ckpt("il") == os.path.join(run.root, "ckpt", "il") and run.ckpt() == os.path.join(run.root, "ckpt")
    assert run.eval_record("sr") == os.path.join(run.root, "eval", "sr.json")
    assert run.episodes("sr", "ood") == os.path.join(run.root, "eval", "sr", "ood.jsonl")
    assert run.train_record("il") == os.path.join(run.root, "train", "il.json")
    assert run.seed(3).data == os.path.join(run.root, "seeds", "3", "data")
    assert os.fspath(run) == run.root


def test_settings_diff_names_changed_keys_and_ignores_new_defaults():
    old = {"model": {"num_layers": 4, "dim": 64}, "seed": 0}
    new = {"model": {"num_layers": 1, "dim": 64, "lora_rank": 0}, "seed": 0}
    assert settings_diff(old, new) == ["model.lora_rank", "model.num_layers"]
    # a key recorded before it existed, now at its default, is no change
    assert settings_diff(old, new, {"model": {"lora_rank": 0}}) == ["model.num_layers"]


def test_check_stage_settings(tmp_path):
    run = RunDir(tmp_path)
    settings = {"optimizer": {"lr": 1e-3}}
    assert run.check_stage_settings("il", settings, overwrite=False, clears=["il"]) is None  # recorded
    assert RunDir.read_json(run.train_settings("il")) == settings
    with pytest.raises(StageMismatchError, match=r"'il' was trained with different settings \(optimizer.lr\)"):
        run.check_stage_settings("il", {"optimizer": {"lr": 2e-3}}, overwrite=False, clears=["il"])
    run.write_json(run.train_record("il"), {"method": "il", "updates": 7})
    assert run.check_stage_settings("il", settings, overwrite=False, clears=["il"])["updates"] == 7  # finished
    with Checkpointer(run.ckpt("il"), async_save=False) as ck:
        ck.save(1, {"w": jnp.ones(2)}, force=True)
    assert run.has_checkpoint("il") and run.checkpoint_stages() == ["il"] and not run.has_checkpoint("sr")
    # overwrite: the record and the stage's checkpoints go, the new settings are recorded
    assert run.check_stage_settings("il", {"optimizer": {"lr": 2e-3}}, overwrite=True, clears=["il"]) is None
    assert not os.path.exists(run.train_record("il")) and not run.has_checkpoint("il")
    assert RunDir.read_json(run.train_settings("il")) == {"optimizer": {"lr": 2e-3}}


def test_garbled_json_names_the_file(tmp_path):
    run = RunDir(tmp_path)
    os.makedirs(run.train_dir)
    with open(run.train_settings("il"), "w") as f:
        f.write('{"optimizer": ')
    with pytest.raises(ValueError, match=r"il\.settings\.json: not valid JSON"):
        run.check_stage_settings("il", {}, overwrite=False, clears=["il"])


def test_settings_added_after_a_run_at_their_defaults_do_not_block_its_resume():
    """A run recorded before ``model.lora_*`` existed resumes; a non-default new setting is a change."""
    defaults = config_to_dict(Config())
    new = {"model": dict(defaults["model"], d_model=32), "seed": 0}
    old = {"model": {k: v for k, v in new["model"].items() if not k.startswith("lora_")}, "seed": 0}
    assert settings_diff(old, new, defaults) == []
    assert settings_diff(old, {**new, "model": dict(new["model"], lora_rank=4)}, defaults) == ["model.lora_rank"]
    assert settings_diff(old, {**new, "model": dict(new["model"], d_model=64)}, defaults) == ["model.d_model"]
    assert settings_diff(new, old, defaults) == ["model.lora_alpha", "model.lora_rank", "model.lora_targets"]
