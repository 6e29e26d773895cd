"""One worker thread that owns the sampler and batches concurrent requests with the same settings.

JAX calls all come from this thread. A request is a :class:`Job` (its prompt rows, one seed per row and
its sampling :class:`Settings`); jobs whose settings are equal are generated in one
``Sampler.generate`` call of at most ``max_batch`` rows, waiting at most ``batch_wait_ms`` for more
jobs to arrive. Each row carries its own seed, so what a row samples does not depend on its batch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sampling settings; requests batch together only when these are equal."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]


@dataclasses.dataclass
class Job:
    """Rows to generate (prompt ids and their seeds) and the future their samples are delivered to."""

    settings: Settings
    prompts: list
    seeds: list[int]
    future: Future = dataclasses.field(default_factory=Future)


class Batcher:
    """Queue of :class:`Job` s served by one daemon thread calling ``sampler.generate``.

    ``stop_ids`` are passed to every call (the template's end-of-turn tokens). ``calls`` records the
    rows of each ``generate`` call, so batching can be observed; ``wait_s`` (the batch window in
    seconds) may be changed while it runs.
    """

    def __init__(self, sampler, *, max_batch: int = 16, batch_wait_ms: float = 5, stop_ids=()):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
        self.sampler, self.max_batch, self.wait_s = sampler, max_batch, batch_wait_ms / 1000
        self.stop_ids = list(stop_ids)
        self.calls: list[int] = []
        self._queue: queue.Queue = queue.Queue()
        self._pending: collections.deque[Job] = collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ee-jax-sampler", daemon=True)
        self._thread.start()

    def submit(self, settings: Settings, prompts: list, seeds: list[int]) -> Future:
        """Queue rows for generation; the future resolves to their :class:`Sample` s, in order."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        job = Job(settings, list(prompts), list(seeds))
        self._queue.put(job)
        return job.future

    def close(self, timeout: float | None = 30) -> None:
        """Stop the worker after the jobs already queued."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout)

    # ---- worker thread ----------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not (stopping and not self._pending):
            if not self._pending:
                job = self._queue.get()
                if job is None:
                    stopping = True
                    continue
                self._pending.append(job)
            batch, stopping = self._collect(stopping)
            self._generate(batch)

    def _collect(self, stopping: bool) -> tuple[list[Job], bool]:
        """The first pending job plus compatible jobs: already pending, or arriving within the wait."""
        first = self._pending.popleft()
        batch, rows = [first], len(first.prompts)
        for job in list(self._pending):
            if job.settings == first.settings and rows + len(job.prompts) <= self.max_batch:
                batch.append(job)
                rows += len(job.prompts)
                self._pending.remove(job)
        deadline = time.monotonic() + self.wait_s
        while rows < self.max_batch and not stopping:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stopping = True
            elif job.settings == first.settings and rows + len(job.prompts) <= self.max_batch:
                batch.append(job)
                rows += len(job.prompts)
            else:
                self._pending.append(job)
        return batch, stopping

    def _generate(self, batch: list[Job]) -> None:
        s = batch[0].settings
        prompts = [p for job in batch for p in job.prompts]
        seeds = [x for job in batch for x in job.seeds]
        try:
            samples = []
            # A job with more rows than max_batch (large n) runs in several calls.
            for i in range(0, len(prompts), self.max_batch):
                rows = prompts[i : i + self.max_batch]
                self.calls.append(len(rows))
                samples += self.sampler.generate(
                    rows, max_new_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                    stop=list(s.stop), stop_ids=self.stop_ids, seed=seeds[i : i + self.max_batch])
        except Exception as e:  # delivered to every waiting request instead of killing the worker
            log.exception("generation failed for a batch of %d rows", len(prompts))
            for job in batch:
                job.future.set_exception(e)
            return
        start = 0
        for job in batch:
            job.future.set_result(samples[start : start + len(job.prompts)])
            start += len(job.prompts)
