"""Run the launchers' commands one by one, or only print them (``--dry-run``).

Every external action a launcher takes goes through :class:`Shell`, so a dry run prints exactly the
commands a real run would execute, in order, and executes none of them.
"""

from __future__ import annotations

import shlex
import subprocess
import sys


class CommandFailed(RuntimeError):
    """An external command exited with a non-zero status."""


class Shell:
    """Executes argv lists (never through a shell) or, in a dry run, prints them one per line."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.history: list[str] = []

    def run(self, argv: list[str], *, capture: bool = False, check: bool = True) -> str:
        """Run ``argv``; return its stdout when ``capture`` (empty in a dry run).

        Output that is not captured streams straight to this terminal (remote logs included).
        """
        line = shlex.join(argv)
        self.history.append(line)
        if self.dry_run:
            print(line, flush=True)
            return ""
        print(f"+ {line}", file=sys.stderr, flush=True)
        result = subprocess.run(argv, text=True, stdout=subprocess.PIPE if capture else None, check=False)
        if check and result.returncode != 0:
            raise CommandFailed(f"exit status {result.returncode}: {line}")
        return result.stdout or ""

    def note(self, text: str) -> None:
        """A step the launcher does itself (not an external command): a comment in a dry run."""
        print(f"# {text}" if self.dry_run else text, file=sys.stdout if self.dry_run else sys.stderr, flush=True)


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``[launcher options] -- ee-jax arguments``; the part after ``--`` is the job."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def results_dir(job: list[str]) -> str:
    """The run directory the ``ee-jax`` job writes: its ``run_dir=`` override or its config's value."""
    for arg in job:
        if arg.startswith("run_dir="):
            return arg.split("=", 1)[1]
    config = next((a for a in job[1:] if a.endswith((".yaml", ".yml"))), None)
    overrides = [a for a in job[1:] if "=" in a and not a.startswith("-")]
    from ee_jax.config import Config, raw_config  # YAML only: no model files, no JAX devices

    return str(raw_config(config, overrides).get("run_dir", Config.run_dir))
