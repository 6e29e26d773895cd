"""Environment registry: names → classes, imported lazily (adapters need optional packages).

Register your own with ``register_env("myenv", "my_pkg.my_module:MyEnv")`` (or the class itself), or
from an installed package through the ``ee_jax.envs`` entry-point group, which makes it available to
the ``ee-jax`` command too; see ``docs/environments.md``.
"""

from __future__ import annotations

import importlib

from ee_jax.envs.base import Env, EnvError

_REGISTRY: dict[str, str | type[Env]] = {
    "coin": "ee_jax.envs.worlds.coin:CoinEnv",
    "household": "ee_jax.envs.worlds.household.env:HouseholdEnv",
    "shop": "ee_jax.envs.worlds.shop.env:ShopEnv",
    "tools": "ee_jax.envs.worlds.tools.env:ToolsEnv",
    "travel": "ee_jax.envs.worlds.travel.env:TravelEnv",
    "twx": "ee_jax.envs.adapters.twx:TextWorldExpressEnv",
    "scienceworld": "ee_jax.envs.adapters.scienceworld:ScienceWorldEnv",
    "textworld": "ee_jax.envs.adapters.textworld:TextWorldEnv",
}
BUILTIN = ("coin", "household", "shop", "tools", "travel")
ADAPTERS = {"twx": "textworld_express", "scienceworld": "scienceworld", "textworld": "textworld"}


_PLUGINS_LOADED = False


def _load_plugins() -> None:
    """Environments that installed packages declare under the ``ee_jax.envs`` entry-point group."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="ee_jax.envs"):
        _REGISTRY.setdefault(ep.name, ep.value)


def register_env(name: str, target: str | type[Env]) -> None:
    """Register an environment class (or a ``"module:Class"`` path imported on first use)."""
    if not name.replace("_", "").isalnum():
        raise EnvError(f"environment name {name!r} must be alphanumeric (underscores allowed)")
    _REGISTRY[name] = target


def list_envs() -> list[str]:
    _load_plugins()
    return list(_REGISTRY)


def env_class(name: str) -> type[Env]:
    _load_plugins()
    if name not in _REGISTRY:
        raise EnvError(f"unknown environment {name!r}; registered: {list(_REGISTRY)}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            extra = "; install it with pip install -e '.[envs]'" if name in ADAPTERS else ""
            raise EnvError(f"environment {name!r} needs a package that is not installed ({e}){extra}") from e
        _REGISTRY[name] = target
    return target


def make_env(name: str, max_steps: int | None = None, **options) -> Env:
    """Instantiate a registered environment; unknown options are an error naming them."""
    return env_class(name)(max_steps=max_steps, **options)


def make_env_from_config(env_cfg) -> Env:
    """The environment described by a config's ``env`` section (``ee_jax.config.EnvConfig``)."""
    return make_env(env_cfg.name, max_steps=env_cfg.max_steps or None, **dict(env_cfg.options))
