"""Self-reflection data: for each expert state, a reflection on why the expert action beats the observed
alternatives (cases, generators, filters), and the ``reflect`` collection stage."""

from ee_jax.experience.reflect.stage import collect_reflect

__all__ = ["collect_reflect"]
