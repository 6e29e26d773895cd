"""Sampler benchmark on CPU: ``ee_jax`` ``Sampler.generate`` vs HF ``generate`` on the same weights.

Usage::

    python bench/sampler.py                          # ee-17m, prompt 64, 128 new tokens, batch 1/16/32
    python bench/sampler.py --preset ee-4m --batches 1,8 --no-torch
    python bench/sampler.py --model smollm2-135m-instruct --batches 1,8   # real weights, + llama.cpp if installed

The last stdout line is one JSON object with every figure. What is measured, per batch size ``B``:

* The model: preset ``--preset`` (Llama-style), random weights from ``init_params``, exported to HF
  with :func:`ee_jax.models.hf_convert.to_hf_state_dict` and loaded into the ``transformers`` model
  built from :func:`~ee_jax.models.hf_convert.hf_config` (fp32, SDPA attention, ``use_cache=True``,
  ``torch.set_num_threads(cores)``). Both sides see the same ``B`` random prompts of ``--prompt``
  tokens and decode ``--new`` tokens greedily, never stopping early.
* ``prefill``: one forward over the prompts that fills the KV cache and returns next-token logits
  (ours: the sampler's jitted prefill, ``Sampler._prefill``; HF: ``model(ids, use_cache=True,
  logits_to_keep=1)``, which is what ``generate`` runs first). ``prefill_tok_s = B * prompt / t_prefill``.
* ``generate``: the whole public call (ours: ``Sampler.generate(..., temperature=0)``; HF:
  ``model.generate(do_sample=False)``). ``decode_tok_s = B * new / (t_generate - t_prefill)``;
  ``e2e_tok_s = B * new / t_generate``.
* ``first_call_s``: the first, untimed ``generate`` call of each (ours: compiling prefill and decode
  for the bucket, plus one run); ``compile_s`` (ours) = ``first_call_s - generate_s``. Every timed
  figure is the median of ``--repeats`` generate (``--prefill-repeats`` prefill) calls after it. A timed section
  during which other processes used more than ``--idle-threshold`` cores is re-run (up to 3 times).
* ``--model NAME|DIR``: real weights instead of a random preset: a packaged model (imported once from its
  GGUF into ``--models-dir``) or an HF checkpoint directory; both frameworks load the same fp32
  (dequantised) weights. With ``llama-cpp-python`` installed and a GGUF source, a third column times
  llama.cpp on the original quantised file, batch 1 only (its Python API decodes one sequence): the
  same prompt, ``--new`` greedy tokens in a manual ``eval`` loop (the high-level API adds Python
  overhead per token).
* ``tokens_match``: the fraction of rows whose greedy tokens are identical in both frameworks.
* ``ratio``: ours / HF for each throughput. Every timed section reports the CPU used by *other*
  processes meanwhile (``idle_frac_others``: 1.0 = nobody else ran); before each one the script waits
  (up to ``--max-wait`` s) for other processes to use < ``--idle-threshold`` cores over a 1 s sample.
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

runtime.configure_xla()  # the framework's XLA:CPU defaults, before JAX starts

from bench.machine import NCORES, Section, machine_info, wait_idle  # noqa: E402

# ------------------------------------------------------------------------------------------ machine


def _timed(fn, repeats: int, args, label: str, attempts: int = 3) -> tuple[float, dict]:
    """Median wall time of ``repeats`` calls of ``fn``, after an idle wait.

    Retried (up to ``attempts`` times) when other processes used more than ``--idle-threshold`` cores
    during the calls; the report says how many attempts it took and how idle the last one was.
    """
    attempt = 0
    while attempt < attempts:
        attempt += 1
        idle_before = wait_idle(args.idle_threshold, args.max_wait, label)
        times = []
        with Section() as sec:
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        if sec.others_cores < args.idle_threshold:
            break
        print(f"[{label}] others used {sec.others_cores:.2f} cores while timing; retrying", file=sys.stderr)
    return statistics.median(times), {"idle_frac_before": idle_before, **sec.report(), "attempts": attempt,
                                      "times_s": [round(x, 4) for x in times]}


# ------------------------------------------------------------------------------------------ bench


def bench_jax(args, cfg, gdef, params, mesh, prompts) -> tuple[dict, list[list[int]]]:
    import jax
    import jax.numpy as jnp

    from ee_jax.models.sampler import Sampler
    from ee_jax.parallel import use_mesh

    sampler = Sampler(gdef, params, cfg, mesh)
    b, p = prompts.shape
    rows = prompts.tolist()

    def generate():
        return sampler.generate(rows, max_new_tokens=args.new, temperature=0)

    wait_idle(args.idle_threshold, args.max_wait, f"jax first call b={b}")
    t0 = time.perf_counter()
    out = generate()  # compiles prefill + decode for this bucket
    compile_s = time.perf_counter() - t0
    steps = -(-args.new // sampler.chunk) * sampler.chunk
    tokens, lengths = jnp.asarray(prompts), jnp.full((b,), p, jnp.int32)

    top, layers = sampler.inference_weights()  # the inference copy: once per policy version, not per call

    def prefill():
        with use_mesh(mesh):
            jax.block_until_ready(sampler._prefill(top, layers, tokens, lengths, cache_len=p + steps))

    prefill()
    t_pre, sec_pre = _timed(prefill, args.prefill_repeats, args, f"jax prefill b={b}")
    t_gen, sec_gen = _timed(generate, args.repeats, args, f"jax generate b={b}")
    res = {"first_call_s": round(compile_s, 3), "compile_s": round(compile_s - t_gen, 3),
           "prefill_s": t_pre, "generate_s": t_gen,
           "prefill_tok_s": b * p / t_pre, "decode_tok_s": b * args.new / max(t_gen - t_pre, 1e-9),
           "e2e_tok_s": b * args.new / t_gen, "prefill_section": sec_pre, "generate_section": sec_gen}
    assert all(len(o.ids) == args.new for o in out)
    return res, [o.ids for o in out]


def bench_torch(args, model, prompts) -> tuple[dict, list[list[int]]]:
    import torch

    b, p = prompts.shape
    ids = torch.as_tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)

    def prefill():
        with torch.inference_mode():
            model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

    def generate():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, max_new_tokens=args.new, min_new_tokens=args.new,
                                  do_sample=False, use_cache=True)

    wait_idle(args.idle_threshold, args.max_wait, f"torch first call b={b}")
    t0 = time.perf_counter()
    out = generate()
    warm_s = time.perf_counter() - t0
    prefill()
    t_pre, sec_pre = _timed(prefill, args.prefill_repeats, args, f"torch prefill b={b}")
    t_gen, sec_gen = _timed(generate, args.repeats, args, f"torch generate b={b}")
    res = {"first_call_s": round(warm_s, 3), "prefill_s": t_pre, "generate_s": t_gen,
           "prefill_tok_s": b * p / t_pre, "decode_tok_s": b * args.new / max(t_gen - t_pre, 1e-9),
           "e2e_tok_s": b * args.new / t_gen, "prefill_section": sec_pre, "generate_section": sec_gen}
    return res, out[:, p:].tolist()


def bench_llama_cpp(args, gguf: str, prompts) -> dict:
    """llama.cpp on the GGUF file: prefill + ``--new`` greedy tokens, one sequence."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=args.prompt + args.new + 8, n_threads=NCORES,
                          n_threads_batch=NCORES, logits_all=False, verbose=False)
    ids = [int(x) for x in prompts[0]]
    last = lambda: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1),  # noqa: E731
                                         shape=(llm.n_vocab(),))

    def prefill():
        llm.reset()
        llm.eval(ids)

    def generate():
        prefill()
        for _ in range(args.new):
            llm.eval([int(np.argmax(last()))])

    generate()
    t_pre, sec_pre = _timed(prefill, args.prefill_repeats, args, "llama.cpp prefill b=1")
    t_gen, sec_gen = _timed(generate, args.repeats, args, "llama.cpp generate b=1")
    return {"prefill_s": t_pre, "generate_s": t_gen, "prefill_tok_s": args.prompt / t_pre,
            "decode_tok_s": args.new / max(t_gen - t_pre, 1e-9), "e2e_tok_s": args.new / t_gen,
            "prefill_section": sec_pre, "generate_section": sec_gen, "version": llama_cpp.__version__}


def _real_model(args):
    """``(cfg, graphdef, params, mesh, hf_dir, gguf or None)`` for ``--model``."""
    from ee_jax.config.hf import model_config_from_hf
    from ee_jax.models.factory import abstract_model
    from ee_jax.models.hf_load import load_hf_params
    from ee_jax.models.packaged import PACKAGED, packaged_gguf
    from ee_jax.parallel import single_device_mesh

    gguf = None
    hf_dir = args.model
    if args.model in PACKAGED:
        from ee_jax.models.gguf_import import import_gguf

        gguf = packaged_gguf(args.model)
        hf_dir = os.path.join(args.models_dir, args.model)
        if not os.path.isfile(os.path.join(hf_dir, "config.json")):
            import_gguf(gguf, hf_dir)
    cfg = model_config_from_hf(hf_dir, max_seq_len=args.prompt + args.new + 64)
    mesh = single_device_mesh()
    params = load_hf_params(hf_dir, cfg, mesh)
    return cfg, abstract_model(cfg, mesh)[0], params, mesh, hf_dir, gguf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ee-17m")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens per row")
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    ap.add_argument("--batches", default="1,16,32")
    ap.add_argument("--repeats", type=int, default=3, help="timed generate calls per batch size")
    ap.add_argument("--prefill-repeats", type=int, default=10, help="timed prefill calls per batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--idle-threshold", type=float, default=0.3, help="cores other processes may use")
    ap.add_argument("--max-wait", type=float, default=300.0)
    ap.add_argument("--override", action="append", default=[], help="extra model.KEY=VALUE overrides")
    ap.add_argument("--model", default="", help="real weights: a packaged model name or an HF checkpoint directory")
    ap.add_argument("--models-dir", default="models", help="where --model NAME is imported")
    args = ap.parse_args()

    import jax
    import numpy as np

    from ee_jax.models import init_params, param_count, preset_config
    from ee_jax.models.hf_convert import hf_config, to_hf_state_dict
    from ee_jax.parallel import single_device_mesh

    gguf = None
    if args.model:
        cfg, gdef, params, mesh, hf_dir, gguf = _real_model(args)
    else:
        overrides = dict(kv.split("=", 1) for kv in args.override)
        cfg = preset_config(args.preset, **overrides)
        mesh = single_device_mesh()
        gdef, params = init_params(cfg, mesh, seed=args.seed)
    model = None
    if not args.no_torch:
        import torch
        import transformers

        torch.set_num_threads(NCORES)
        if args.model:
            model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="sdpa",
                                                                      dtype=torch.float32).eval()
        else:
            model = transformers.AutoModelForCausalLM.from_config(hf_config(cfg), attn_implementation="sdpa",
                                                                  dtype=torch.float32).eval()
            sd = {k: torch.from_numpy(np.array(v)) for k, v in to_hf_state_dict(params, cfg).items()}
            missing = set(model.load_state_dict(sd, strict=False).missing_keys)
            assert missing <= {"lm_head.weight"}, missing
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        llama_cpp = None

    rng = np.random.RandomState(args.seed)
    results = []
    for b in [int(x) for x in args.batches.split(",")]:
        prompts = rng.randint(0, cfg.vocab_size, (b, args.prompt)).astype(np.int32)
        row = {"batch": b}
        row["jax"], ours = bench_jax(args, cfg, gdef, params, mesh, prompts)
        if model is not None:
            row["torch"], theirs = bench_torch(args, model, prompts)
            row["tokens_match"] = sum(a == t for a, t in zip(ours, theirs)) / b
            row["ratio"] = {k: row["jax"][k] / row["torch"][k] for k in ("prefill_tok_s", "decode_tok_s",
                                                                           "e2e_tok_s")}
        if gguf and llama_cpp is not None and b == 1:
            row["llama_cpp"] = bench_llama_cpp(args, gguf, prompts)
        print(json.dumps(row), file=sys.stderr)
        results.append(row)

    summary = {
        "bench": "sampler", "preset": args.model or args.preset, "params": param_count(cfg), "prompt": args.prompt,
        "llama_cpp": "installed" if llama_cpp is not None else "not installed (pip install llama-cpp-python)",
        "new_tokens": args.new, "repeats": args.repeats, "prefill_repeats": args.prefill_repeats,
        "dtype": cfg.dtype, "devices": str(jax.devices()[0]),
        "machine": machine_info(), "results": results,
    }
    batched = [r["ratio"]["decode_tok_s"] for r in results if "ratio" in r and r["batch"] > 1]
    if batched:
        summary["batched_decode_ratio_min"] = min(batched)
        summary["target_5x_batched_decode_met"] = min(batched) >= 5.0
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
