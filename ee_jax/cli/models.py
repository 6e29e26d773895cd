"""``ee-jax import`` (GGUF / packaged models -> an HF checkpoint directory) and ``ee-jax export`` (a run's
checkpoint -> an HF checkpoint directory that ``transformers`` loads)."""

from __future__ import annotations

import os

from ee_jax.agent.policy import load_policy
from ee_jax.cli.common import emit
from ee_jax.models.gguf_import import import_gguf
from ee_jax.models.hf_export import save_hf_checkpoint
from ee_jax.models.lora import merge_lora
from ee_jax.models.packaged import PACKAGED, packaged_gguf
from ee_jax.rundir import RunDir


def cmd_import(args) -> None:
    src = args.source[len("gguf:"):] if args.source.startswith("gguf:") else args.source
    if src in PACKAGED:
        path, template = packaged_gguf(src), PACKAGED[src].template
    elif src.endswith(".gguf") or os.path.isfile(src):
        path, template = src, None
    else:
        raise ValueError(f"import source {args.source!r}: expected a .gguf file or one of {sorted(PACKAGED)}")
    out = import_gguf(path, args.out_dir, overwrite=args.overwrite, progress=not args.no_progress)
    out.update(source=os.path.abspath(path), template=template)
    tok = os.path.join(out["out_dir"], out["tokenizer"])
    kind = "hf" if out["tokenizer"] == "tokenizer.json" else "sentencepiece"
    human = (f"imported {out['architecture']} ({out['parameters']:,} parameters) from {path}\n"
             f"  -> {out['out_dir']}\n"
             f"use it: model.preset=hf:{args.out_dir} recipe.init=hf:{args.out_dir} tokenizer.kind={kind} "
             f"tokenizer.path={tok}" + (f" tokenizer.template={template}" if template else ""))
    emit(args, human, out)


def cmd_export(args) -> None:
    import dataclasses

    policy = load_policy(args.run_dir, stage=args.stage)
    cfg, tok = policy.cfg, policy.tokenizer
    params, model_cfg = merge_lora(policy.params, cfg.model, policy.mesh)  # LoRA: W + (alpha / R) A B
    if args.dtype:
        import jax
        import jax.numpy as jnp

        params = jax.tree.map(lambda a: a.astype(jnp.dtype(args.dtype)), params)
        model_cfg = dataclasses.replace(model_cfg, param_dtype=args.dtype)
    tok_src = cfg.tokenizer.path or RunDir(args.run_dir).tokenizer_model
    if os.path.isfile(tok_src) and os.path.basename(tok_src) == "tokenizer.json":
        tok_src = os.path.dirname(tok_src)  # with its tokenizer_config.json
    ids = {k: i for k, i in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id), ("pad_token_id", tok.pad_id))
           if i >= 0}
    out = save_hf_checkpoint(params, model_cfg, args.out_dir, tokenizer_dir=tok_src, token_ids=ids,
                             overwrite=args.overwrite)
    payload = {"out_dir": out, "stage": args.stage, "source": policy.source, "dtype": model_cfg.param_dtype,
               "tokenizer": tok_src, "merged_lora_rank": cfg.model.lora_rank}
    emit(args, f"exported {policy.source} -> {out} (load with transformers.AutoModelForCausalLM.from_pretrained)",
          payload)


def add_parsers(sub) -> None:
    p = sub.add_parser("import", help="convert a GGUF file or a packaged model into an HF checkpoint directory")
    p.add_argument("source", help="FILE.gguf, gguf:FILE, or a packaged model: smollm2-135m-instruct, gemma3-270m")
    p.add_argument("out_dir", help="directory to write (config.json, model.safetensors, tokenizer files)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_import)
    e = sub.add_parser("export", help="write a run's checkpoint as an HF checkpoint directory")
    e.add_argument("run_dir", help="an ee-jax run directory (with config.yaml and ckpt/)")
    e.add_argument("out_dir", help="directory to write")
    e.add_argument("--stage", default=None, help="checkpoint stage (il, iwm, sr, grpo_from_sr...); needed when "
                                                 "the run has several")
    e.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="weight dtype (default: the run's)")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    e.set_defaults(func=cmd_export)
