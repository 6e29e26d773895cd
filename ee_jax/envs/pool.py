"""A pool of worker processes, each holding one environment, for heavy (Java-backed) environments.

    with EnvPool("scienceworld", num_workers=2, java_heap_mb=768) as pool:
        results = pool.map("ee_jax.envs.pool:branch_item", items, progress=True)

Work items and results are JSON (no pickle on the wire), the work function is named by
``"module:function"`` and called as ``fn(env, item)`` in the worker. The pool detects a worker that
dies (crash, OOM kill, ``kill -9``), restarts it and re-runs the lost item, so every item yields
exactly one result. A worker whose process tree grows past ``max_rss_mb`` is recycled after its
current item. Workers ignore SIGINT: Ctrl-C reaches the parent, which shuts every worker down (also
at interpreter exit, and workers exit by themselves if the parent dies).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import weakref
from multiprocessing.connection import wait

from ee_jax.envs.base import Task
from ee_jax.envs.branching import branch
from ee_jax.envs.checks import run_oracle
from ee_jax.envs.registry import make_env

_LIVE_POOLS: weakref.WeakSet = weakref.WeakSet()


class PoolError(RuntimeError):
    """A work item failed: raised an exception, or killed its worker more than ``max_retries`` times."""


# ---------------------------------------------------------------------------------------------- worker
def _set_parent_death_signal() -> None:
    """Linux: deliver SIGTERM to this worker when the parent dies (no orphaned JVMs)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _resolve(path: str):
    module, _, name = path.partition(":")
    if not module or not name:
        raise PoolError(f"work function {path!r} must be 'module:function'")
    return getattr(importlib.import_module(module), name)


def _worker_main(conn, env_name: str, env_options: dict, env_vars: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    os.environ.update(env_vars)

    env = make_env(env_name, **env_options)
    functions: dict = {}
    try:
        while True:
            try:
                msg = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return  # parent gone
            if msg.get("stop"):
                return
            try:
                fn = functions.get(msg["fn"]) or functions.setdefault(msg["fn"], _resolve(msg["fn"]))
                reply = {"index": msg["index"], "result": fn(env, msg["item"])}
            except Exception:  # reported to the parent, which raises it with the item named
                reply = {"index": msg["index"], "error": traceback.format_exc()}
            reply["rss_mb"] = tree_rss_mb(os.getpid())
            conn.send_bytes(json.dumps(reply).encode())
    finally:
        env.close()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (e.g. the JVM a worker started), in MB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total / 1024


# ---------------------------------------------------------------------------------------------- pool
class _Worker:
    def __init__(self, ctx, env_name, env_options, env_vars):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, env_name, env_options, env_vars), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None  # item in flight
        self.recycle = False

    def send(self, payload: dict) -> None:
        self.conn.send_bytes(json.dumps(payload).encode())

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send({"stop": True})
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class EnvPool:
    """``num_workers`` processes, each with ``make_env(env_name, **env_options)``.

    ``java_heap_mb`` caps each worker's JVM heap (``-Xmx`` through ``JAVA_TOOL_OPTIONS``);
    ``max_rss_mb`` recycles a worker whose process tree exceeds it; a work item that kills its worker
    is retried up to ``max_retries`` times.
    """

    def __init__(self, env_name: str, num_workers: int = 2, env_options: dict | None = None,
                 java_heap_mb: int | None = None, max_rss_mb: float | None = None, max_retries: int = 2):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        json.dumps(env_options or {})  # options must travel as JSON
        self.env_name, self.env_options = env_name, dict(env_options or {})
        self.env_vars = {}
        if java_heap_mb:
            opts = os.environ.get("JAVA_TOOL_OPTIONS", "")
            self.env_vars["JAVA_TOOL_OPTIONS"] = (opts + f" -Xmx{int(java_heap_mb)}m").strip()
        self.max_rss_mb, self.max_retries = max_rss_mb, max_retries
        self.restarts = 0
        self._ctx = mp.get_context("spawn")  # fork is unsafe once JAX or a JVM bridge runs in the parent
        self._workers = [self._spawn() for _ in range(num_workers)]
        _LIVE_POOLS.add(self)

    @classmethod
    def from_config(cls, env_cfg) -> EnvPool:
        """The pool a config's ``env`` section asks for (``pool_workers`` workers, its options and heap)."""
        options = dict(env_cfg.options)
        if env_cfg.max_steps:
            options["max_steps"] = env_cfg.max_steps
        return cls(env_cfg.name, num_workers=env_cfg.pool_workers, env_options=options,
                   java_heap_mb=env_cfg.java_heap_mb)

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.env_name, self.env_options, self.env_vars)

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def map(self, fn: str, items: list, progress: bool = False, desc: str | None = None) -> list:
        """Run ``fn(env, item)`` for every item; results in item order."""
        results: list = [None] * len(items)
        for i, r in self.imap(fn, items, progress=progress, desc=desc):
            results[i] = r
        return results

    def imap(self, fn: str, items: list, progress: bool = False, desc: str | None = None):
        """Yield ``(index, result)`` as items complete (any order), each index exactly once."""
        from tqdm import tqdm

        pending = collections.deque(range(len(items)))
        attempts = collections.Counter()
        done = set()
        # encoded once (fails early, in the caller, on an item that cannot travel as JSON); retries reuse it
        encoded = [json.dumps(it) for it in items]
        fn_json = json.dumps(fn)
        bar = tqdm(total=len(items), desc=desc or f"{self.env_name} pool", disable=not progress, unit="item")
        try:
            while len(done) < len(items):
                for w in self._workers:
                    if w.index is None and pending:
                        w.index = pending.popleft()
                        attempts[w.index] += 1
                        with contextlib.suppress(OSError, ValueError):  # a dead worker: its sentinel reports it
                            w.conn.send_bytes(
                                f'{{"fn": {fn_json}, "index": {w.index}, "item": {encoded[w.index]}}}'.encode())
                busy = [w for w in self._workers if w.index is not None]
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
                for w in list(busy):
                    if w.conn in ready:
                        try:
                            reply = json.loads(w.conn.recv_bytes())
                        except (EOFError, OSError):
                            reply = None
                        if reply is not None:
                            index, w.index = reply["index"], None
                            if "error" in reply:
                                raise PoolError(f"{self.env_name} pool: work item {index} ({fn}) raised:\n"
                                                f"{reply['error']}")
                            if index not in done:
                                done.add(index)
                                bar.update(1)
                                yield index, reply["result"]
                            if self.max_rss_mb and reply["rss_mb"] > self.max_rss_mb:
                                self._replace(w)
                            continue
                        self._lost(w, pending, attempts, fn)  # pipe closed: the worker died mid-item
                    elif w.proc.sentinel in ready or not w.proc.is_alive():
                        self._lost(w, pending, attempts, fn)
        finally:
            bar.close()
            for w in list(self._workers):
                if w.index is not None:  # abandoned mid-run: a late reply must not reach the next map
                    self._replace(w)

    def _lost(self, w: _Worker, pending, attempts, fn: str) -> None:
        index = w.index
        w.proc.join(0.1)
        code = w.proc.exitcode
        self._replace(w)
        if index is not None:
            if attempts[index] > self.max_retries:
                raise PoolError(f"{self.env_name} pool: work item {index} ({fn}) killed its worker "
                                f"{attempts[index]} times (last exit code {code}); giving up")
            pending.appendleft(index)

    def _replace(self, w: _Worker) -> None:
        i = self._workers.index(w)
        w.stop(timeout=2.0)
        self._workers[i] = self._spawn()
        self.restarts += 1

    def close(self) -> None:
        """Stop every worker (their environments close, JVMs exit)."""
        for w in self._workers:
            w.stop()
        self._workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


# ---------------------------------------------------------------------------------------------- work
def branch_item(env, item: dict) -> list[dict]:
    """Work function: ``{"task", "prefix", "alternatives", ["prefix_observations"]}`` → branches."""
    task = Task.from_json(item["task"])
    return [b.to_json() for b in branch(env, task, item["prefix"], item["alternatives"],
                                        item.get("prefix_observations"))]


def oracle_item(env, item: dict) -> dict:
    """Work function: ``{"task"}`` → the oracle episode (actions, observations, won, score)."""
    import dataclasses

    return dataclasses.asdict(run_oracle(env, Task.from_json(item["task"])))


def sleep_item(env, item: dict) -> dict:
    """Work function for tests and benchmarks: sleep, then report which process ran the item."""
    time.sleep(float(item.get("seconds", 0.0)))
    return {"value": item.get("value"), "pid": os.getpid()}
