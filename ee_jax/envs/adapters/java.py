"""One JVM per environment instance for the Java/Scala simulators (ScienceWorld, TextWorldExpress).

Both packages ship a jar whose ``PythonInterface`` class is driven over py4j (TCP on 127.0.0.1, so a
loopback interface is needed, but no network). Their own Python wrappers start the JVM in the
constructor with fixed options; we start it ourselves so that we can

* start it lazily (on the first call that needs it), so building an env object is free;
* bound its heap (``-Xmx``, on the JVM command line: without it the heap may grow to a quarter of RAM,
  about 3 GB per ScienceWorld JVM after a few tasks) and add other options;
* close it for sure (``close()`` waits for the process to exit) and never touch a JVM inherited
  through ``fork``: a child process starts its own.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
from typing import Any

from ee_jax.envs.base import EnvError


class JavaServer:
    """A py4j gateway JVM running ``jar``; ``server`` is a new instance of ``entry_class`` in it.

    ``heap_mb`` becomes ``-Xmx{heap_mb}m``; ``java_opts`` are further JVM options. The JVM starts on
    the first access to ``server`` and stops in ``close()`` (``die_on_exit`` also ends it with Python).
    """

    def __init__(self, jar: str, entry_class: str, heap_mb: int | None = None, java_opts: tuple[str, ...] = (),
                 cwd: str | None = None):
        if heap_mb is not None and int(heap_mb) < 64:
            raise EnvError(f"java_heap_mb={heap_mb} is too small; give at least 64 (MB)")
        self.jar = jar
        self.entry_class = entry_class
        self.heap_mb = None if heap_mb is None else int(heap_mb)
        self.java_opts = tuple(java_opts)
        self.cwd = cwd or os.path.dirname(jar)
        self._gateway: Any = None
        self._proc: subprocess.Popen | None = None
        self._server: Any = None
        self._owner = 0  # pid of the process that started the JVM
        self._stderr: collections.deque = collections.deque(maxlen=30)

    @property
    def options(self) -> list[str]:
        """The JVM options this server starts with."""
        return ([f"-Xmx{self.heap_mb}m"] if self.heap_mb else []) + list(self.java_opts)

    @property
    def running(self) -> bool:
        return self._server is not None and self._owner == os.getpid() and self._proc.poll() is None

    @property
    def server(self) -> Any:
        """The simulator's ``PythonInterface`` object (starts the JVM on first use)."""
        if self._server is None or self._owner != os.getpid():
            self._start()
        return self._server

    @property
    def pid(self) -> int | None:
        """Process id of the JVM, or ``None`` before it starts / after ``close()``."""
        return self._proc.pid if self.running else None

    def max_heap_mb(self) -> float:
        """The heap limit the running JVM reports (``Runtime.maxMemory``), in MB."""
        self.server  # noqa: B018  (starts the JVM)
        return self._gateway.jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20

    def stderr_tail(self, chars: int = 1000) -> str:
        """The last lines the JVM wrote to stderr (py4j adds new lines on the left of the deque)."""
        return "".join(reversed(self._stderr))[-chars:]

    def _start(self) -> None:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        if self._owner != os.getpid():
            # Inherited through fork: the sockets belong to the parent's JVM; leave it alone.
            self._gateway = self._proc = self._server = None
        self._stderr.clear()
        try:
            port, proc = launch_gateway(classpath=self.jar, die_on_exit=True, cwd=self.cwd, javaopts=self.options,
                                        redirect_stderr=self._stderr, return_proc=True)
        except Exception as e:  # noqa: BLE001  (py4j raises bare Exceptions when java fails to start)
            raise EnvError(f"could not start the JVM for {os.path.basename(self.jar)} with options {self.options} "
                           f"(is Java >= 8 on PATH?): {e}; JVM stderr: {self.stderr_tail()!r}") from e
        gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=proc)
        obj = gateway.jvm
        for part in self.entry_class.split("."):
            obj = getattr(obj, part)
        self._gateway, self._proc, self._owner = gateway, proc, os.getpid()
        self._server = obj()

    def close(self) -> None:
        """Stop the JVM and wait until its process has exited (idempotent)."""
        gateway, proc, owner = self._gateway, self._proc, self._owner
        self._gateway = self._proc = self._server = None
        if gateway is None or owner != os.getpid():
            return
        with contextlib.suppress(Exception):  # the JVM may already be gone
            gateway.shutdown()
        if proc.poll() is None:
            try:  # with die_on_exit the JVM exits when its stdin ends
                proc.stdin.write(b"\n")
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


@contextlib.contextmanager
def keep_episode(env: Any):
    """Around task generation, which reuses the episode's JVM (load + new games): afterwards reset and
    replay the running episode, if any, so that it can go on as if nothing happened. Nests."""
    env._generation_depth = getattr(env, "_generation_depth", 0) + 1
    try:
        yield
    finally:
        env._generation_depth -= 1
        if env._generation_depth == 0 and env.task is not None and not env.done:
            env._reset(env.task)
            for a in env.actions:
                env._step(a)
