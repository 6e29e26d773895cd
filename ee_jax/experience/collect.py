"""The three collection stages by name: ``expert``, ``explore``, ``reflect``."""

from __future__ import annotations

from ee_jax.experience.expert import collect_expert
from ee_jax.experience.explore import collect_explore
from ee_jax.experience.reflect.stage import collect_reflect

STAGES = ("expert", "explore", "reflect")


def run_stage(cfg, stage: str, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run one collect stage on ``cfg`` (resuming its finished shards); returns its manifest section."""
    collect = {"expert": collect_expert, "explore": collect_explore, "reflect": collect_reflect}[stage]
    return collect(cfg, overwrite=overwrite, progress=progress)
