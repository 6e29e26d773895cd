"""The sweep file (``configs/sweeps/*.yaml``): which main jobs a scaling study runs, and where.

A sweep runs the main job of one base experiment config (``ee-jax run BASE``) at every
``data_fractions`` x ``sizes`` point; each point trains ``methods`` for every seed in ``seeds``. A
point is ``RUN/f{fraction}/{size}``, an ordinary run directory: ``ee-jax run`` resumes it, ``ee-jax
eval`` reads it. Points of one fraction share its collected data and tokenizer (``RUN/f{fraction}/data``)
unless collection runs the policy (``policy`` alternatives or ``self`` reflections), which differs
per size.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ee_jax.config import ConfigError, ExperienceConfig, raw_config
from ee_jax.config.presets import PRESETS


@dataclass
class SweepConfig:
    """One scaling study. ``overrides`` apply to every point; ``size_overrides[size]`` to one size."""

    base: str = "configs/experiments/household.yaml"  # the main-job config every point runs
    run_dir: str = "runs/sweep-scaling"
    sizes: list[str] = field(default_factory=lambda: ["ee-1m", "ee-4m", "ee-17m", "ee-50m"])  # model presets
    methods: list[str] = field(default_factory=lambda: ["il", "iwm", "sr"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data_fractions: list[float] = field(default_factory=lambda: [1.0])  # share of the base's train tasks
    # methods trained at the largest data fraction only, e.g. [il_matched]: imitation for SR's update count
    full_data_methods: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # key=value for the base config, every point
    size_overrides: dict[str, list[str]] = field(default_factory=dict)  # e.g. {ee-50m: [optimizer.lr=1e-3]}
    split: str = "test"  # the split the scaling answer is read on (ood is reported too)
    match_margin: float = 0.0  # success points an early-experience model may trail and still "match"
    planning: bool = True  # compile each size's train step: FLOPs/token, peak memory, compile time, MFU


@dataclass(frozen=True)
class SweepPoint:
    """One main job of the sweep."""

    fraction: float
    size: str
    run_dir: str
    overrides: tuple[str, ...]  # for the base config, run_dir included

    @property
    def name(self) -> str:
        return f"f{self.fraction:g}/{self.size}"


def load_sweep(path: str, overrides: list[str] | None = None) -> SweepConfig:
    """Read and check a sweep file (+ ``key=value`` overrides); unknown keys are errors."""
    raw = raw_config(path, overrides)
    try:
        sweep: SweepConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepConfig), raw))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{path}: {'key ' + repr(key) + ': ' if key else ''}{e.msg if hasattr(e, 'msg') else e}") \
            from None
    validate_sweep(sweep, path)
    return sweep


def validate_sweep(s: SweepConfig, path: str = "sweep") -> None:
    def bad(key: str, value, expected: str):
        raise ConfigError(f"{path}: {key}={value!r}: expected {expected}")

    if not os.path.exists(s.base):
        bad("base", s.base, "an existing experiment config file")
    if not s.sizes or len(set(s.sizes)) != len(s.sizes):
        bad("sizes", s.sizes, "a non-empty list of distinct model presets")
    for size in s.sizes:
        if size not in PRESETS:
            bad("sizes", size, f"a model preset, one of {', '.join(PRESETS)}")
    unknown = sorted(set(s.size_overrides) - set(s.sizes))
    if unknown:
        bad("size_overrides", unknown, f"keys among sizes {s.sizes}")
    if not s.methods or not set(s.methods) <= {"il", "il_matched", "iwm", "sr"} or "il" not in s.methods:
        bad("methods", s.methods, "il plus any of il_matched, iwm, sr (imitation is the baseline every answer "
                                  "compares to)")
    if not set(s.full_data_methods) <= {"il_matched", "iwm", "sr"} or set(s.full_data_methods) & set(s.methods):
        bad("full_data_methods", s.full_data_methods, "any of il_matched, iwm, sr not already in methods")
    if not s.seeds or len(set(s.seeds)) != len(s.seeds):
        bad("seeds", s.seeds, "a non-empty list of distinct integers")
    if not s.data_fractions or any(not 0 < f <= 1 for f in s.data_fractions):
        bad("data_fractions", s.data_fractions, "values in (0, 1]")
    if s.split not in ("test", "ood"):
        bad("split", s.split, "test or ood")
    for item in [*s.overrides, *(o for v in s.size_overrides.values() for o in v)]:
        if "=" not in item or item.split("=", 1)[0].strip() in ("run_dir", "recipe.seeds", "recipe.methods"):
            bad("overrides", item, "key=value of the base config (run_dir, seeds and methods come from the sweep)")


def sweep_points(s: SweepConfig) -> list[SweepPoint]:
    """Every point in run order: fractions outer (each collects its data once), sizes small to large."""
    base_train = raw_config(s.base, s.overrides).get("experience", {}).get("tasks", {}).get("train")
    if base_train is None:
        base_train = ExperienceConfig().tasks["train"]
    points = []
    for fraction in s.data_fractions:
        tasks = max(1, round(fraction * int(base_train)))
        methods = [*s.methods, *(s.full_data_methods if fraction == max(s.data_fractions) else [])]
        for size in s.sizes:
            run_dir = os.path.join(s.run_dir, f"f{fraction:g}", size)
            over = [*s.overrides, f"model.preset={size}", *s.size_overrides.get(size, []),
                    f"experience.tasks.train={tasks}", f"recipe.methods=[{','.join(methods)}]",
                    f"recipe.seeds=[{','.join(map(str, s.seeds))}]", f"run_dir={run_dir}"]
            points.append(SweepPoint(fraction, size, run_dir, tuple(over)))
    return points


def sweep_to_dict(s: SweepConfig) -> dict:
    return dataclasses.asdict(s)
