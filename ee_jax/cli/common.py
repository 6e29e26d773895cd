"""What every ``ee-jax`` command shares: config arguments, the run record, ``--json`` output."""

from __future__ import annotations

import argparse
import json
import os

import jax

from ee_jax.config import ConfigError, config_to_dict, load_config, save_config
from ee_jax.parallel import initialize_distributed
from ee_jax.rundir import RunDir
from ee_jax.runinfo import run_info


def split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] [key=value ...]`` -> (the config path or None, the overrides)."""
    path = None
    overrides = []
    for it in items:
        if "=" in it:
            overrides.append(it)
        elif path is None:
            path = it
        else:
            raise ConfigError(f"unexpected argument {it!r}: give one CONFIG file, then key=value overrides")
    return path, overrides


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} {what}")
        return value

    return parse


positive_int = _int_at_least(1, "is not a positive count")  # an argparse type for counts
non_negative_int = _int_at_least(0, "is negative; expected 0 or more")  # for indices and offsets


def emit(args, human: str, payload: dict) -> None:
    """Print the human summary; with ``--json`` also the payload as one JSON object on the last line."""
    if human:
        print(human)
    if args.json:
        print(json.dumps(payload, default=str))


_PENDING: list[tuple] = []  # (cfg, provenance): existing runs' config.yaml, written once the command succeeds


def load_run_config(items: list[str], default: str | None = None):
    """Load ``[CONFIG.yaml] [key=value ...]`` and record it (with seeds, versions and the git commit) as
    ``RUN/config.yaml``: at once for a new run; for a run that has one, only when the command succeeds
    (:func:`finish_run_records`), so a refused or failed command leaves the run's record as it was."""
    path, overrides = split_config_args(items)
    cfg = load_config(path or default, overrides)
    initialize_distributed(cfg.distributed)  # before any JAX call: every host runs this same command
    if jax.process_index() == 0:
        os.makedirs(cfg.run_dir, exist_ok=True)
        if os.path.exists(RunDir(cfg.run_dir).config):
            _PENDING.append((cfg, run_info(cfg.seed)))
        else:
            save_config(cfg, RunDir(cfg.run_dir).config, extra=run_info(cfg.seed))
    return cfg


def finish_run_records(error: BaseException | None) -> None:
    """After a command: on success write the pending ``config.yaml``; after a refusal or failure leave it
    byte-identical and append the attempt (its resolved config and the error) to ``RUN/invocations.jsonl``."""
    while _PENDING:
        cfg, info = _PENDING.pop()
        run = RunDir(cfg.run_dir)
        if error is None:
            save_config(cfg, run.config, extra=info)
            continue
        line = {"status": "failed", "error": f"{type(error).__name__}: {error}", **info,
                "config": config_to_dict(cfg)}
        with open(run.path("invocations.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
