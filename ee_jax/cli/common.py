"""What every ``ee-jax`` command shares: config arguments, the run record, ``--json`` output."""

from __future__ import annotations

import argparse
import json
import os

import jax

from ee_jax.config import ConfigError, load_config, save_config
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


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count), else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (an index or offset)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; expected 0 or more")
    return value


def emit(args, human: str, payload: dict) -> None:
    """Print the human summary; with ``--json`` also the payload as one JSON object on the last line."""
    if human:
        print(human)
    if args.json:
        print(json.dumps(payload, default=str))


def load_run_config(items: list[str], default: str | None = None):
    """Load ``[CONFIG.yaml] [key=value ...]`` and record it (with seeds and versions) as ``RUN/config.yaml``."""
    path, overrides = split_config_args(items)
    cfg = load_config(path or default, overrides)
    initialize_distributed(cfg.distributed)  # before any JAX call: every host runs this same command
    if jax.process_index() == 0:
        os.makedirs(cfg.run_dir, exist_ok=True)
        save_config(cfg, RunDir(cfg.run_dir).config, extra=run_info(cfg.seed))
    return cfg
