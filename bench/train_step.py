"""Train-step benchmark on CPU: ee_jax vs PyTorch eager on the same model and batch.

Usage::

    python bench/train_step.py                       # ee-17m, batch 16, seq 256, fp32, with PyTorch
    python bench/train_step.py --dtype bfloat16      # bf16 compute (JAX model.dtype, torch autocast)
    python bench/train_step.py --no-torch --steps 5

The last stdout line is one JSON object with every figure. What is measured:

(a) ``matmul``: the CPU ceiling, the best of several runs of one large jitted JAX matmul (default
    2048^3, fp32; plus the compute dtype when that differs). MFU is relative to this *measured* peak,
    not a datasheet number.
(b) ``jax``: the ee_jax train step exactly as the trainer builds it (``create_train_state`` +
    ``make_train_step``; AOT ``lower`` + ``compile`` timed separately), then ``--warmup`` untimed and
    ``--steps`` timed steps, each ended by ``block_until_ready``. Reported: compile time, median step
    time, tokens/s, achieved GFLOP/s and MFU, and XLA's own ``cost_analysis()`` FLOPs for comparison.
(c) ``torch``: HF ``LlamaForCausalLM`` with identical shapes (tied embeddings, RoPE theta, RMSNorm eps,
    SDPA attention), fp32 eager, AdamW with the same hyper-parameters as ``make_optimizer`` (betas,
    eps, weight decay masked off norm scales, global-norm clipping), ``torch.set_num_threads(cores)``.
(d) ``ratio_jax_over_torch``: JAX tokens/s divided by PyTorch tokens/s.
(e) ``machine``: CPU model, cores, library versions; every timed section also reports the CPU used by
    *other* processes while it ran (``idle_frac_others``: 1.0 = nobody else ran).

FLOPs per step (model FLOPs, the PaLM appendix-B convention, from
``ee_jax.models.accounting.train_flops_per_token``)::

    flops/token = 6 * N + 6 * L * T * H * hd
    N = L * (d*H*hd + 2*d*K*hd + H*hd*d  [+ qkv biases, qk-norm scales]   attention projections
             + 3*d*f                                                       gated MLP
             + 2*d)                                                        norm scales (negligible)
        + V*d                                                              LM head (tied or not);
                                                                           the embedding lookup is free
    flops/step  = flops/token * batch * seq

i.e. 2N forward + 4N backward for every matmul parameter, plus 6 * L * T * H * hd for the QK^T and PV
products. Note: the full (unmasked) score and value products cost 2 products x 2 FLOP/MAC x 3 (fwd +
bwd) = 12 * L * T * H * hd per token (PaLM appendix B's term); the accounting module's 6 is that halved,
i.e. it effectively *does* discount causal masking (its docstring says otherwise). For ee-17m at
T = 256 the term is 3.5 MFLOP/token (7.1 with 12) against 95.9 for 6N. At batch 16 x 256: N = 15.98 M,
99.4 MFLOP/token, 407.2 GFLOP/step. Achieved GFLOP/s = flops/step / median step time; MFU = achieved /
measured matmul peak (same run). XLA's ``cost_analysis`` counts 423.6 GFLOP for the same step: every
HLO op (elementwise work, softmax, optimizer included), attention products as actually computed.

Before every timed section the script waits (up to ``--max-wait`` s) until the machine is idle (other
processes using less than ``--idle-threshold`` cores over a 1 s sample), and re-times the section (up
to ``--attempts``) when other processes used more than that while it ran.

Process settings: ``ee_jax.runtime.configure()`` runs first, as in the ``ee-jax`` CLI; it tunes glibc
malloc for both frameworks in this process (``--system-malloc`` skips that, see ee_jax/runtime.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ee_jax import runtime  # noqa: E402

if "--system-malloc" in sys.argv:
    os.environ["EE_JAX_MALLOC"] = "system"
runtime.configure()  # the framework's process defaults (ee_jax/runtime.py), before JAX starts

from bench.machine import NCORES, Section, machine_info, wait_idle  # noqa: E402

# ------------------------------------------------------------------------------------------ machine


def timed_section(run, args, label: str):
    """``run()`` under a :class:`Section`; repeated (after waiting for idle) while others were busy.

    Returns ``(result_of_run, section)`` from the first attempt during which other processes used
    less than ``--idle-threshold`` cores, or from the last of ``--attempts`` attempts.
    """
    for attempt in range(args.attempts):
        wait_idle(args.idle_threshold, args.max_wait, label)
        with Section() as sec:
            result = run()
        if sec.others_cores < args.idle_threshold:
            break
        print(f"[{label}] other processes used {sec.others_cores:.2f} cores during the timing "
              f"(attempt {attempt + 1}/{args.attempts})", file=sys.stderr)
    return result, sec


# ------------------------------------------------------------------------------------------ matmul


def matmul_peak(n: int, dtype: str, repeats: int, args) -> dict:
    import jax
    import jax.numpy as jnp

    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    a = jax.random.normal(jax.random.key(0), (n, n), dt)
    b = jax.random.normal(jax.random.key(1), (n, n), dt)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    def run():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        return times

    times, sec = timed_section(run, args, f"matmul {dtype}")
    best = min(times)
    return {"n": n, "dtype": dtype, "best_s": best, "gflops": 2 * n**3 / best / 1e9,
            "median_gflops": 2 * n**3 / statistics.median(times) / 1e9, **sec.report()}


# ------------------------------------------------------------------------------------------ JAX


def jax_config(args):
    from ee_jax.config import load_config

    over = [f"model.preset={args.preset}", f"train.batch_size={args.batch}", f"train.seq_len={args.seq}",
            f"model.dtype={args.dtype}"] + list(args.override)
    return load_config(None, over)


def bench_jax(args, tokens, peak: float) -> dict:
    import jax

    from ee_jax.data.batch import batch_sharding, make_batch
    from ee_jax.models.accounting import param_count, train_flops_per_token
    from ee_jax.parallel import single_device_mesh
    from ee_jax.parallel.rules import use_mesh
    from ee_jax.train.optimizer import make_optimizer
    from ee_jax.train.state import create_train_state
    from ee_jax.train.step import make_train_step

    cfg = jax_config(args)
    mesh = single_device_mesh()
    tx = make_optimizer(cfg.optimizer, 1000)
    gdef, state, sh = create_train_state(cfg, tx, mesh)
    step = make_train_step(gdef, tx, sh, mesh)
    bs = batch_sharding(mesh)
    batch = {k: jax.device_put(v, bs) for k, v in make_batch(tokens).items()}

    with use_mesh(mesh):
        t0 = time.perf_counter()
        lowered = step.jitted.lower(state, batch)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0

    losses = []
    for _ in range(args.warmup):
        state, m = compiled(state, batch)
        losses.append(float(m["loss"]))
    box = {"state": state}

    def run():
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            box["state"], m = compiled(box["state"], batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
            losses.append(float(m["loss"]))
        return times

    times, sec = timed_section(run, args, "jax")
    med = statistics.median(times)
    tokens_per_step = args.batch * args.seq
    flops = train_flops_per_token(cfg.model, args.seq) * tokens_per_step
    return {
        "params": param_count(cfg.model), "flops_per_step": flops, "xla_cost_analysis_flops": xla_flops,
        "lower_s": t1 - t0, "compile_s": t2 - t1, "step_times_s": [round(t, 4) for t in times],
        "step_median_s": med, "tokens_per_s": tokens_per_step / med, "gflops": flops / med / 1e9,
        "mfu_vs_measured_peak": flops / med / 1e9 / peak, "losses": [round(x, 4) for x in losses],
        **sec.report(),
    }


# ------------------------------------------------------------------------------------------ PyTorch


def bench_torch(args, tokens, cfg, peak: float) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from ee_jax.models.accounting import train_flops_per_token

    torch.set_num_threads(NCORES)
    torch.manual_seed(0)
    m, o = cfg.model, cfg.optimizer
    hf = LlamaConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, intermediate_size=m.ffn_dim,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
        head_dim=m.head_dim or m.d_model // m.num_heads, max_position_embeddings=max(m.max_seq_len, args.seq),
        rms_norm_eps=m.norm_eps, rope_theta=m.rope_theta, tie_word_embeddings=m.tie_embeddings,
        attn_implementation="sdpa", use_cache=False,
    )
    model = LlamaForCausalLM(hf).float().train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    x = torch.as_tensor(tokens[:, :-1], dtype=torch.long)
    y = torch.as_tensor(tokens[:, 1:], dtype=torch.long)
    autocast = args.dtype == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        return float(loss.detach())

    t0 = time.perf_counter()
    losses = [step()]
    first = time.perf_counter() - t0
    for _ in range(max(args.warmup - 1, 0)):
        losses.append(step())
    def run():
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - t)
        return times

    times, sec = timed_section(run, args, "torch")
    med = statistics.median(times)
    tokens_per_step = args.batch * args.seq
    flops = train_flops_per_token(m, args.seq) * tokens_per_step
    return {
        "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "first_step_s": first, "step_times_s": [round(t, 4) for t in times], "step_median_s": med,
        "tokens_per_s": tokens_per_step / med, "gflops": flops / med / 1e9,
        "mfu_vs_measured_peak": flops / med / 1e9 / peak, "losses": [round(v, 4) for v in losses],
        **sec.report(),
    }


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ee-17m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX train step")
    p.add_argument("--system-malloc", action="store_true",
                   help="skip ee_jax.runtime.configure_malloc (applies to both JAX and PyTorch)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--matmul-repeats", type=int, default=10)
    p.add_argument("--idle-threshold", type=float, default=0.3, help="max cores used by others")
    p.add_argument("--attempts", type=int, default=3, help="re-time a section when others were busy")
    p.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for an idle machine")
    p.add_argument("override", nargs="*", help="extra ee_jax config overrides, e.g. model.remat=dots")
    args = p.parse_args(argv)

    import numpy as np

    from ee_jax.config import load_config  # noqa: F401  (imports JAX with the flags above)

    cfg = jax_config(args)
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (args.batch, args.seq + 1))
    out = {"preset": args.preset, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
           "steps": args.steps, "warmup": args.warmup, "overrides": args.override, "machine": machine_info()}

    out["matmul"] = matmul_peak(args.matmul_n, "float32", args.matmul_repeats, args)
    if args.dtype != "float32":
        out["matmul_" + args.dtype] = matmul_peak(args.matmul_n, args.dtype, args.matmul_repeats, args)
    peak = out["matmul"]["gflops"]
    print(f"matmul peak fp32 {peak:.1f} GFLOP/s", file=sys.stderr)

    if not args.no_jax:
        out["jax"] = bench_jax(args, tokens, peak)
        j = out["jax"]
        print(f"jax: compile {j['lower_s'] + j['compile_s']:.1f}s step {j['step_median_s']:.3f}s "
              f"{j['tokens_per_s']:.0f} tok/s {j['gflops']:.1f} GFLOP/s MFU {j['mfu_vs_measured_peak']:.1%}",
              file=sys.stderr)
    if not args.no_torch:
        out["torch"] = bench_torch(args, tokens, cfg, peak)
        t = out["torch"]
        print(f"torch: step {t['step_median_s']:.3f}s {t['tokens_per_s']:.0f} tok/s {t['gflops']:.1f} GFLOP/s",
              file=sys.stderr)
    if "jax" in out and "torch" in out:
        out["ratio_jax_over_torch"] = out["jax"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
