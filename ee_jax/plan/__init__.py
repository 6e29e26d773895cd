"""Planning a run on accelerators without them: deviceless compiles for TPU topologies, memory per chip,
collectives, and a roofline estimate (``ee-jax plan``, docs/planning.md)."""

from ee_jax.plan.chips import CHIPS, Chip, Topology, parse_topology, topology
from ee_jax.plan.planner import STEPS, advice, make_plan, render
from ee_jax.plan.steps import StepPlan, plan_rl, plan_sampler, plan_train, rollout_shape

__all__ = ["CHIPS", "STEPS", "Chip", "StepPlan", "Topology", "advice", "make_plan", "parse_topology", "plan_rl",
           "plan_sampler", "plan_train", "render", "rollout_shape", "topology"]
