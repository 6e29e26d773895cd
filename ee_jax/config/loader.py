"""Load a :class:`Config` from YAML presets and dotted command-line overrides.

Built on OmegaConf structured configs: the dataclasses are the schema, so unknown keys and values
of the wrong type are rejected with the full dotted key in the message. ``model.preset=NAME``
(or ``model: NAME`` in YAML) expands a named model shape before the other model keys apply.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ee_jax.config.presets import get_preset
from ee_jax.config.schema import Config, ConfigError
from ee_jax.config.validate import validate

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and not p.suffix and (CONFIG_ROOT / f"{path}.yaml").exists():
        p = CONFIG_ROOT / f"{path}.yaml"  # allow `lm/tiny` as a preset name
    if not p.exists():
        raise ConfigError(f"config file {str(path)!r} not found (also looked for {CONFIG_ROOT}/{path}.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML{_yaml_where(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config sections at top level, got {type(data).__name__}")
    data.pop("_run", None)  # provenance written by save_config, not configuration
    bases = data.pop("defaults", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = base if Path(base).is_absolute() else p.parent / base
        merged = _deep_merge(merged, _read_yaml(base_path if Path(base_path).exists() else base))
    return _deep_merge(merged, data)


def _yaml_where(e: yaml.YAMLError) -> str:
    """`` at line L column C: what`` of a YAML error, on one line."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. model.num_layers=4")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node[parts[-1]] = value
    return tree


def _expand_model_preset(raw: dict[str, Any]) -> dict[str, Any]:
    model = raw.get("model")
    if isinstance(model, str):
        model = {"preset": model}
    if not isinstance(model, dict) or "preset" not in model:
        return raw
    model = dict(model)
    name = model.pop("preset")
    try:
        base = get_preset(name)
    except KeyError as e:
        raise ConfigError(f"model.preset: {e.args[0]}") from None
    raw = dict(raw)
    raw["model"] = _deep_merge(base, model)
    return raw


def raw_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML file (with its ``defaults``) merged with overrides: no presets, no schema, no checks.

    For tools that need one plain setting without resolving the rest (a launcher reading ``run_dir``
    on a machine that does not hold the run's model files).
    """
    raw = _read_yaml(path) if path else {}
    return _deep_merge(raw, _parse_overrides(list(overrides or [])))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from an optional YAML file plus ``key=value`` overrides."""
    raw = _expand_model_preset(raw_config(path, overrides))
    schema = OmegaConf.structured(Config)
    raw = _scalars_to_lists(raw, schema)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.create(raw))
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, path)) from None
    validate(cfg)
    return cfg


def _scalars_to_lists(raw: dict[str, Any], schema) -> dict[str, Any]:
    """A single value given for a list-valued key means a list of it (``eval.pass_k=4`` is ``[4]``)."""
    out = {}
    for k, v in raw.items():
        node = schema.get(k) if OmegaConf.is_dict(schema) and k in schema else None
        if node is not None and OmegaConf.is_list(node) and v is not None and not isinstance(v, list | tuple | dict):
            v = [v]
        elif node is not None and OmegaConf.is_dict(node) and isinstance(v, dict):
            v = _scalars_to_lists(v, node)
        out[k] = v
    return out


def _describe(e: OmegaConfBaseException, path) -> str:
    key = getattr(e, "full_key", None)
    where = f" in {path}" if path else ""
    msg = str(e).split("\n")[0]
    if "not in" in msg or "Key" in msg and "not" in msg:
        return f"unknown config key {key!r}{where}: {msg}"
    return f"bad value for config key {key!r}{where}: {msg}"


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, every default spelled out."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`config_to_dict` (used when reading a run's saved config)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data)))


def save_config(cfg: Config, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (plus e.g. seeds and versions under ``_run``) atomically as YAML."""
    data = config_to_dict(cfg)
    if extra:
        data["_run"] = extra
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)


def preset_config(name: str, **overrides):
    """A :class:`ModelConfig` for preset ``name`` with keyword overrides (handy in code and tests)."""
    args = [f"model.preset={name}"] + [f"model.{k}={v}" for k, v in overrides.items()]
    return load_config(None, args).model
