"""``ee-jax serve RUN_DIR``: serve a run's policy as an OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
import time

from ee_jax.agent.policy import load_policy
from ee_jax.cli.common import positive_int
from ee_jax.config import ConfigError, load_config


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _bound_port(server, default: int) -> int:
    """The port uvicorn listens on (differs from ``--port`` when that is 0)."""
    for s in getattr(server, "servers", None) or []:
        for sock in getattr(s, "sockets", None) or []:
            return sock.getsockname()[1]
    return default


def _announce(server, args, model: str, source: str) -> None:
    """Print the base URL (and the ``--json`` line) once the server accepts connections."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{_bound_port(server, args.port)}/v1"
    print(f"serving {model} ({source}) at {url}", flush=True)
    if args.json:
        print(json.dumps({"url": url, "model": model, "source": source}), flush=True)


def _check_single_host(overrides: list[str]) -> None:
    """One server is one process on one host (its local devices): several processes of a SLURM or TPU job
    would each bind the port and answer alone, so refuse them with a clear error instead."""
    dist = load_config(None, [o for o in overrides if o.startswith("distributed.")]).distributed
    several = (dist.enabled and dist.num_processes != 1) or (dist.auto and (
        int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")))
    if several:
        raise ConfigError("ee-jax serve runs as one process on one host (it uses that host's devices), but "
                          "this is one of several processes (distributed.enabled=true, or a multi-task SLURM / "
                          "Cloud TPU job was detected): start it once, e.g. `srun -n1 ee-jax serve ...`, or "
                          "pass distributed.auto=false")


def cmd_serve(args) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise SystemExit(f"ee-jax serve needs the serve extra ({e.name} is missing): "
                         f"pip install -e '.[serve]'") from None

    from ee_jax.serve import create_app

    overrides = list(args.config)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"unexpected argument {bad[0]!r}: ee-jax serve takes RUN_DIR, then key=value overrides")
    if args.max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
    _check_single_host(overrides)
    policy = load_policy(args.run_dir, stage=args.stage, overrides=overrides, init_if_missing=args.init)
    model = args.model_name or os.path.basename(os.path.abspath(args.run_dir))
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}, not loopback: the server has no authentication, so anyone "
              f"who can reach this port can use the model", file=sys.stderr, flush=True)
    app = create_app(policy.sampler(), policy.tokenizer, policy.template, model, max_batch=args.max_batch,
                     source=policy.source)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))
    threading.Thread(target=_announce, args=(server, args, model, policy.source), daemon=True).start()
    server.run()


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="serve a run's policy as an OpenAI-compatible chat-completions API")
    sv.add_argument("run_dir", help="run directory (its config.yaml, tokenizer and checkpoints)")
    sv.add_argument("config", nargs="*", help="key=value overrides of the run's config")
    sv.add_argument("--stage", default=None, help="checkpoint stage (default: the only one with a checkpoint)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    sv.add_argument("--model-name", default=None, help="the request `model` to accept (default: the run dir name)")
    sv.add_argument("--init", action="store_true", help="serve the randomly initialised model if there is no "
                                                        "checkpoint")
    sv.add_argument("--max-batch", type=positive_int, default=16, help="most prompts per generate call")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn log level")
    sv.add_argument("--json", action="store_true", help="print one JSON line {url, model, source} once listening")
    sv.set_defaults(func=cmd_serve)
