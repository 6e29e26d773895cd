"""``ee-jax plan``: compile a config's programs for a TPU topology (or GPUs) and say whether they fit.

:func:`make_plan` builds the config's mesh over the topology's devices, compiles the training step, the RL
update (GRPO and PPO) and the sampler's prefill and decode (:mod:`ee_jax.plan.steps`), checks each program's
peak bytes per chip against the chip's HBM, and adds the roofline estimate (:mod:`ee_jax.plan.roofline`).
:func:`render` writes the report a person reads; the dict is what ``--json`` prints.
"""

from __future__ import annotations

import dataclasses

from ee_jax.config import Config, resolve_mesh_shape, trained_model
from ee_jax.models.accounting import param_count
from ee_jax.parallel import make_mesh
from ee_jax.plan.chips import GIB, topology
from ee_jax.plan.roofline import ASSUMPTIONS, estimate
from ee_jax.plan.steps import StepPlan, abstract_inputs_note, plan_rl, plan_sampler, plan_train
from ee_jax.report.markdown import human

STEPS = ("train", "rl", "sampler")


def advice(step: StepPlan, cfg: Config, num_chips: int, fsdp: int) -> list[str]:
    """Settings that reduce the bytes of ``step`` on one chip, most effective first."""
    m, tips = cfg.model, []
    name = step.name
    if m.dtype == "float32":
        tips.append("model.dtype=bfloat16 (activations and their temporaries at half the bytes)")
    if m.remat == "none" and name.endswith(("train", "grads")):
        tips.append("model.remat=full (recompute each layer's activations in the backward pass)")
    if fsdp < num_chips:
        tips.append(f"mesh.fsdp=-1 mesh.data=1 (shard parameters and optimizer state over all {num_chips} chips; "
                    f"now fsdp={fsdp})")
    if m.param_dtype == "float32" and m.lora_rank == 0:
        tips.append("model.lora_rank=16 (optimizer state for adapters only) or model.param_dtype=bfloat16")
    if name == "train":
        tips.append(f"train.grad_accum={cfg.train.grad_accum * 2} (the same batch in twice as many micro-batches) "
                    f"or a smaller train.batch_size / train.seq_len")
    elif name.endswith("grads"):
        tips.append(f"rl.micro_rows={max(1, cfg.rl.micro_rows // 2)} or a shorter rl.seq_len")
    elif name.startswith("sampler"):
        tips.append("fewer rollouts per step (rl.tasks_per_step x rl.group_size) or a shorter model.max_seq_len")
    return tips


def _row(step: StepPlan, hbm: float, chip, num_chips: int, cfg: Config, fsdp: int) -> dict:
    d = step.as_dict()
    peak = step.peak_bytes
    d["fits"] = not step.oom and peak <= hbm
    d["hbm_bytes"] = hbm
    d["over_bytes"] = max(0, peak - hbm) if not d["fits"] else 0
    d["roofline"] = estimate(step, chip, num_chips)
    d["flops_per_token"] = step.model_flops / step.tokens if step.tokens else None
    if not d["fits"]:
        d["advice"] = advice(step, cfg, num_chips, fsdp)
    return d


def make_plan(cfg: Config, topology_name: str, steps: tuple[str, ...] = STEPS,
              algorithms: tuple[str, ...] = ("grpo", "ppo"), progress=None) -> dict:
    """Compile ``cfg``'s programs for ``topology_name``; the plan as a dict (see :func:`render`).

    ``progress(name)`` is called before each compile (the CLI prints it: big models take minutes).
    """
    for s in steps:
        if s not in STEPS:
            raise ValueError(f"--steps: {s!r} is not one of {', '.join(STEPS)}")
    topo = topology(topology_name)
    cfg = dataclasses.replace(cfg, model=trained_model(cfg))
    substituted = {}
    if topo.simulated and cfg.model.attention_impl in ("cudnn", "splash"):
        # XLA:CPU cannot compile the cuDNN / Pallas kernels; their memory is at most the XLA path's.
        substituted["model.attention_impl"] = f"{cfg.model.attention_impl} -> xla (simulated devices)"
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attention_impl="xla"))
    mesh = make_mesh(cfg, list(topo.devices), steps=tuple(s for s in steps if s in ("train", "rl")))
    data, fsdp, tensor = resolve_mesh_shape(cfg, topo.num_chips)
    say = progress or (lambda name: None)
    plans: list[StepPlan] = []
    rollout = None
    if "train" in steps:
        say("train")
        plans.append(plan_train(cfg, mesh))
    if "rl" in steps:
        say(f"the RL update ({', '.join(algorithms)})")
        plans.extend(plan_rl(cfg, mesh, algorithms))
    if "sampler" in steps:
        say("sampler")
        rollout, sampler_plans = plan_sampler(cfg, mesh, (cfg.rl.algorithm,))  # residents of the configured run
        plans.extend(sampler_plans)
    chip = topo.chip
    rows = [_row(p, chip.hbm_bytes, chip, topo.num_chips, cfg, fsdp) for p in plans]
    failing = [r for r in rows if not r["fits"]]
    summary = "fits" if not failing else "; ".join(
        f"{r['name']} does not fit: needs {_gib(r['peak_bytes'])} per chip, {_gib(r['over_bytes'])} over "
        f"{_gib(r['hbm_bytes'])} HBM" for r in failing)
    return {
        "topology": topology_name, "chip": chip.name, "chips": topo.num_chips, "hosts": topo.num_hosts,
        "simulated": topo.simulated, "mesh": {"data": data, "fsdp": fsdp, "tensor": tensor},
        "model": {"name": cfg.model.name, "params": param_count(cfg.model), "vocab_size": cfg.model.vocab_size},
        "settings": abstract_inputs_note(cfg),
        "rollout": rollout,
        "substituted": substituted, "chip_figures": dataclasses.asdict(chip), "steps": rows, "fits": not failing,
        "summary": summary,
        "estimate_assumptions": ASSUMPTIONS,
    }


def _gib(n: float | None) -> str:
    if n is None:
        return "-"
    for scale, unit in ((GIB, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def render(plan: dict) -> str:
    """The plan as a person reads it: one block per program, then the verdict."""
    mesh = plan["mesh"]
    lines = [f"plan for {plan['topology']}: {plan['chips']} x {plan['chip']} on {plan['hosts']} host(s)"
             + (" (simulated on CPU devices: memory from XLA:CPU)" if plan["simulated"] else ""),
             f"model {plan['model']['name']}: {plan['model']['params']:,} parameters; mesh data={mesh['data']} "
             f"fsdp={mesh['fsdp']} tensor={mesh['tensor']}",
             "settings: " + ", ".join(f"{k}={v}" for k, v in plan["settings"].items())]
    for key, change in plan.get("substituted", {}).items():
        lines.append(f"compiled with {key}: {change}")
    if plan.get("rollout"):
        r = plan["rollout"]
        lines.append(f"rollout batch {r['rows']} rows, prompt {r['prompt_len']}, cache {r['cache_len']}, "
                     f"decode chunk {r['chunk']}")
    hbm = plan["chip_figures"]["hbm_bytes"]
    lines.append(f"HBM per chip {_gib(hbm)}; per chip below")
    for s in plan["steps"]:
        verdict = "fits" if s["fits"] else "DOES NOT FIT"
        lines.append(f"\n{s['name']}: {verdict}  peak {_gib(s['peak_bytes'])} of {_gib(hbm)}  "
                     f"compile {s['compile_s']:.1f} s (trace + lower {s['lower_s']:.1f} s)")
        if s["oom"]:
            lines.append(f"  compiler: {s['oom'][:300]}")
        lines.append(f"  parameters {_gib(s['param_bytes'])}, optimizer {_gib(s['opt_bytes'])}; program: arguments "
                     f"{_gib(s['argument_bytes'])}, temporaries {_gib(s['temp_bytes'])}, outputs "
                     f"{_gib(s['output_bytes'])}, donated {_gib(s['alias_bytes'])}"
                     + (f"; beside it {_gib(s['resident_bytes'])} ({s['resident_note']})"
                        if s["resident_bytes"] else ""))
        if s["tokens"]:
            lines.append(f"  FLOPs per call {human(s['model_flops'])} (model), "
                         f"{human(s['flops_per_token'])} per token; "
                         f"XLA per chip {human(s['xla_flops'])} (loop bodies once); HBM traffic at least "
                         f"{human(s['hbm_traffic_bytes'], 'B')} per chip")
        coll = s["collectives"].get("by_kind", {}) if s["collectives"] else {}
        if coll:
            lines.append("  collectives: " + ", ".join(
                f"{k} x{v['count']} ({human(v['bytes'], 'B')})" for k, v in coll.items())
                + f"; ~{human(s['collectives']['transfer_bytes'], 'B')} sent per chip")
        est = s["roofline"]
        if est and s["tokens"]:
            lines.append(f"  estimate ({est['bound']}-bound): {_ms(est['step_s_overlapped'])} - "
                         f"{_ms(est['step_s_serial'])} per call, MFU {est['mfu_low']:.0%} - {est['mfu_high']:.0%}")
        for tip in s.get("advice", []):
            lines.append(f"  try: {tip}")
    lines.append(f"\n({plan['estimate_assumptions']})")
    lines.append(f"verdict: {plan['summary']}")
    return "\n".join(lines)
