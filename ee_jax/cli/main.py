"""``ee-jax``: the command-line entry point.

Every command that reports results accepts ``--json`` and then prints one JSON object as the last
line of stdout. Config arguments are ``[CONFIG.yaml] [key=value ...]`` (dotted overrides).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

import yaml

from ee_jax import runtime
from ee_jax.cli import collect, data, envs, models, plan, rl, serve, sweep, train
from ee_jax.cli import eval as eval_cli
from ee_jax.cli.common import emit, finish_run_records, positive_int, split_config_args
from ee_jax.config import ConfigError, config_to_dict, load_config, resolve_mesh_shape
from ee_jax.pipeline.lm import run_lm, sample_lm
from ee_jax.runinfo import version_string, versions
from ee_jax.train.guard import NonFiniteLossError, TrainingInterrupted


def cmd_info(args) -> None:
    import jax

    path, overrides = split_config_args(args.config)
    cfg = load_config(path, overrides)
    devices = jax.devices()
    payload = {
        "backend": jax.default_backend(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in devices],
        "mesh": dict(zip(("data", "fsdp", "tensor"), resolve_mesh_shape(cfg, len(devices)))),
        "versions": versions(),
    }
    lines = [f"backend   {payload['backend']}  ({payload['process_count']} process(es))",
             f"devices   {len(devices)}: " + ", ".join(payload["devices"][:8]) + (" ..." if len(devices) > 8 else ""),
             f"mesh      {payload['mesh']}",
             "versions  " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items())]
    emit(args, "\n".join(lines), payload)


def cmd_config_show(args) -> None:
    path, overrides = split_config_args(args.config)
    data = config_to_dict(load_config(path, overrides))
    emit(args, yaml.safe_dump(data, sort_keys=False).rstrip(), data)


# An optional dependency's module -> the extra that installs it (setup.py EXTRAS).
OPTIONAL_MODULES = {"torch": "hf", "transformers": "hf", "accelerate": "hf", "scienceworld": "envs",
                    "textworld_express": "envs", "textworld": "envs", "fastapi": "serve", "uvicorn": "serve",
                    "gguf": "models", "openai": "dev"}


def cmd_lm_train(args) -> None:
    path, overrides = split_config_args(args.config)
    cfg = load_config(path or "lm/tiny", overrides)
    summary = run_lm(cfg, progress=not args.no_progress)
    lines = [f"run dir      {summary['run_dir']}" + (f" (resumed from step {summary['resumed_from']})"
                                                    if summary["resumed_from"] is not None else ""),
             f"loss         {summary['first_logged_loss']:.4f} (first log) -> {summary['final_loss']:.4f} (final)",
             f"valid loss   {summary['valid_loss']}"]
    lines += [f"sample       {s['prompt']!r} -> {s['text']!r}" for s in summary["samples"]]
    emit(args, "\n".join(lines), summary)


def cmd_lm_sample(args) -> None:
    out = sample_lm(args.run_dir, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    emit(args, "\n".join(f"{o['prompt']!r} -> {o['text']!r}" for o in out), {"samples": out})


class _Parser(argparse.ArgumentParser):
    """argparse with ee-jax's one-line errors (exit 2), every subcommand included."""

    def error(self, message: str):
        self.exit(2, f"ee-jax: error: {self.prog.removeprefix('ee-jax').strip() or 'ee-jax'}: {message} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ee-jax", description="Early Experience for LLM agents, in JAX.")
    p.add_argument("--version", action="version", version=version_string())
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (also EE_JAX_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="the resolved config")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print a config with its defaults, presets and overrides resolved")
    show.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    show.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    show.set_defaults(func=cmd_config_show)

    info = sub.add_parser("info", help="devices, mesh and versions")
    info.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    info.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    info.set_defaults(func=cmd_info)

    lm = sub.add_parser("lm", help="train a tokenizer + small LM on text, sample, resume")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)
    tr = lm_sub.add_parser("train", help="train (or resume) an LM; default config: configs/lm/tiny.yaml")
    tr.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. train.steps=500")
    tr.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_lm_train)
    sa = lm_sub.add_parser("sample", help="generate from a trained run")
    sa.add_argument("run_dir")
    sa.add_argument("--prompt", action="append", required=True, help="repeat for a batch of prompts")
    sa.add_argument("--max-new-tokens", type=positive_int, default=None)
    sa.add_argument("--temperature", type=float, default=None)
    sa.add_argument("--top-k", type=int, default=None)
    sa.add_argument("--top-p", type=float, default=None)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    sa.set_defaults(func=cmd_lm_sample)

    envs.add_parser(sub)
    data.add_parser(sub)
    collect.add_parser(sub)
    serve.add_parser(sub)
    eval_cli.add_parser(sub)
    train.add_parsers(sub)
    rl.add_parser(sub)
    models.add_parsers(sub)
    sweep.add_parser(sub)
    plan.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    runtime.configure()
    parser = build_parser()
    # Overrides may follow flags (`--json train.steps=5`); argparse stops a `*` positional at a flag.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "config") or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.config = list(args.config) + extra

    debug = args.debug or os.environ.get("EE_JAX_DEBUG", "") not in ("", "0")
    try:
        _run(args)
    except TrainingInterrupted as e:  # preemption: checkpointed, resume by re-running
        print(f"ee-jax: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteLossError as e:
        _show(e, debug)
        return 1
    except ModuleNotFoundError as e:
        extra = OPTIONAL_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        _show(ModuleNotFoundError(f"this needs the optional package {e.name!r}: "
                                  f"pip install 'ee_jax[{extra}]' (from the checkout: pip install -e '.[{extra}]')"),
              debug, cause=e)
        return 2
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        _show(e, debug)
        return 2
    except OSError as e:
        if e.errno not in WRITE_FAILURES:
            raise
        _show(OSError(f"writing {e.filename or 'a file'} failed ({e.strerror}); no partial file was kept: free "
                      "space (or raise the file-size limit) and rerun the command, which resumes"), debug, cause=e)
        return 2
    return 0


# A write that failed for want of room (disk full, quota, a file-size limit) or in the storage (EIO).
WRITE_FAILURES = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO)


def _run(args) -> None:
    """The command, then its run record: written on success, left as it was (the attempt logged) otherwise."""
    try:
        args.func(args)
    except BaseException as e:
        finish_run_records(e)
        raise
    finish_run_records(None)


def _show(e: BaseException, debug: bool, cause: BaseException | None = None) -> None:
    """One ``ee-jax: error:`` line; with ``--debug`` / ``EE_JAX_DEBUG=1`` the traceback first."""
    if debug:
        traceback.print_exception(cause or e, file=sys.stderr)
    print(f"ee-jax: error: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
