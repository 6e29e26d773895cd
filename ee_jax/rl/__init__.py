"""RL continuation: GRPO / PPO from any checkpoint (docs/rl.md).

``rollout`` (multi-turn episodes keeping generated ids), ``starts`` (tasks and branched expert states per
step), ``advantages`` (GRPO, step groups, GAE), ``samples`` (rollouts -> turn samples), ``batching``
(fixed-shape packed rows), ``losses`` and ``step`` (the update), ``critic`` (PPO), ``trainer`` (the loop).
"""
