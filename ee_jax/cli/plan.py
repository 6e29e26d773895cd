"""``ee-jax plan CONFIG [key=value ...] --topology NAME``: compile a run's programs for accelerators it
does not have, and say whether they fit (docs/planning.md)."""

from __future__ import annotations

import os
import sys

from ee_jax.cli.common import emit, split_config_args
from ee_jax.config import load_config
from ee_jax.plan import make_plan, render
from ee_jax.plan.chips import parse_topology

_SIMULATED_GPUS = "--xla_force_host_platform_device_count"


def prepare_backend(topology_name: str) -> None:
    """Before JAX starts a backend: plan on the CPU (a deviceless TPU compile needs no local accelerator; a
    GPU plan compiles for simulated CPU devices), unless the user chose ``JAX_PLATFORMS``."""
    import jax

    chip, n = parse_topology(topology_name)
    if "JAX_PLATFORMS" not in os.environ:
        jax.config.update("jax_platforms", "cpu")
    if chip.platform == "gpu" and _SIMULATED_GPUS not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SIMULATED_GPUS}={n}".strip()


def cmd_plan(args) -> None:
    prepare_backend(args.topology)
    path, overrides = split_config_args(args.config)
    cfg = load_config(path, overrides)
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    algorithms = tuple(a.strip() for a in args.rl_algorithms.split(",") if a.strip())
    for a in algorithms:
        if a not in ("grpo", "ppo"):
            raise ValueError(f"--rl-algorithms: {a!r} is not grpo or ppo")
    say = None if args.json else (lambda name: print(f"compiling {name} for {args.topology} ...", file=sys.stderr,
                                                    flush=True))
    plan = make_plan(cfg, args.topology, steps=steps, algorithms=algorithms, progress=say)
    emit(args, render(plan), plan)
    if not plan["fits"]:
        raise SystemExit(3)


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="compile a run for a TPU topology / GPUs on this machine: memory, collectives, "
                                    "estimated step time (no accelerator needed)")
    p.add_argument("config", nargs="*", help="CONFIG.yaml [key=value ...], e.g. configs/accelerators/tpu-v5e-16.yaml")
    p.add_argument("--topology", required=True,
                   help="a TPU slice (v5e:2x2, v5e:4x4, v5p:2x2x4, v6e:8x8; chips v4, v5e, v5p, v6e) or GPUs (h100x8)")
    p.add_argument("--steps", default="train,rl,sampler", help="programs to compile (default: train,rl,sampler)")
    p.add_argument("--rl-algorithms", default="grpo,ppo", help="RL updates to compile (default: grpo,ppo)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_plan)
