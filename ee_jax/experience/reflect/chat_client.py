"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, llama.cpp, ``ee-jax serve``).

Standard library only (``urllib.request`` and a thread pool): it is the ``http`` reflection generator's
transport and adds no dependency. Transient failures (connection errors, timeouts, 408/409/429/5xx)
are retried with exponential backoff and jitter, honouring ``Retry-After``; other 4xx fail at once
with the server's message. The API key is read from an environment variable, sent as a bearer token
and kept out of reprs, logs and error messages.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
MAX_RETRY_AFTER_S = 300.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

Messages = str | Sequence[Mapping[str, str]]


class ChatError(RuntimeError):
    """A chat request that failed: ``url``, last HTTP ``status`` (None: no response) and ``attempts``."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.url, self.status, self.attempts = url, status, attempts


class _Secret:
    """Holds the API key; prints as ``<hidden>`` so it cannot leak through ``repr``/``vars``."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


class _Retry(Exception):
    """A transient failure: try again after ``delay`` (None: the backoff schedule)."""

    def __init__(self, reason: str, status: int | None = None, delay: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.delay = reason, status, delay


class ChatClient:
    """Chat completions from ``{url}/chat/completions`` as model ``model``.

    Args:
        url: the API base, e.g. ``http://127.0.0.1:8000/v1``.
        model: the ``model`` field of each request.
        api_key_env: name of the environment variable holding the API key ("" -> no key). Read once,
            here; a missing or empty variable is an error naming the variable.
        timeout_s: per-attempt timeout (connect and read).
        max_retries: retries after the first attempt for transient failures.
        backoff_s: first retry delay; doubles each retry, with jitter of x0.5..x1.5.
        concurrency: most requests in flight in :meth:`complete_many`.
    """

    def __init__(self, url: str, model: str, *, api_key_env: str = "", timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 1.0, concurrency: int = 4):
        parsed = urllib.parse.urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"ChatClient url={url!r}: expected an http(s) base URL such as http://127.0.0.1:8000/v1")
        if not model:
            raise ValueError("ChatClient model is empty: give the model name the endpoint serves")
        if not timeout_s > 0:
            raise ValueError(f"ChatClient timeout_s={timeout_s!r} must be > 0")
        if backoff_s < 0 or max_retries < 0:
            raise ValueError(f"ChatClient backoff_s={backoff_s!r} and max_retries={max_retries!r} must be >= 0")
        if concurrency < 1:
            raise ValueError(f"ChatClient concurrency={concurrency!r} must be >= 1")
        self.url, self.model = url.rstrip("/"), model
        self.endpoint = self.url + "/chat/completions"
        self.api_key_env, self.timeout_s = api_key_env, timeout_s
        self.max_retries, self.backoff_s, self.concurrency = max_retries, backoff_s, concurrency
        self._key = _Secret("")
        if api_key_env:
            value = os.environ.get(api_key_env, "")
            if not value:
                raise ValueError(f"ChatClient api_key_env={api_key_env!r}: the environment variable {api_key_env} "
                                 f"is not set or empty")
            self._key = _Secret(value)
        # Loopback servers are reached directly, whatever *_proxy variables say.
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"ChatClient(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"timeout_s={self.timeout_s}, max_retries={self.max_retries}, concurrency={self.concurrency})")

    # ---- public API -------------------------------------------------------------------------
    def complete(self, messages: Messages, *, temperature: float = 1.0, max_tokens: int = 512,
                 seed: int | None = None, stop: str | Sequence[str] | None = None) -> str:
        """The assistant's reply to ``messages`` (a user string, or a list of role/content dicts).

        Raises :class:`ChatError` when the request fails (after retries for transient failures).
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        payload = {"model": self.model, "messages": [dict(m) for m in messages], "temperature": temperature,
                   "max_tokens": max_tokens}
        if seed is not None:
            payload["seed"] = seed
        if stop:
            payload["stop"] = [stop] if isinstance(stop, str) else list(stop)
        body = self._post(payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise ChatError(f"{self.endpoint}: the response has no choices[0].message.content string: "
                            f"{self._redact(json.dumps(body)[:300])}", url=self.endpoint, status=200, attempts=1)
        return content

    def complete_many(self, conversations: Sequence[Messages], *, seeds: Sequence[int] | None = None,
                      progress: bool = False, **kw) -> list[str | ChatError]:
        """:meth:`complete` for each conversation, at most ``concurrency`` at a time, in input order.

        A failed request gives its :class:`ChatError` in its place instead of raising. ``seeds`` (one
        per conversation) sets each request's seed; ``kw`` are :meth:`complete`'s other options.
        """
        if seeds is not None:
            if "seed" in kw:
                raise ValueError("complete_many: give seeds= (one per conversation) or seed=, not both")
            if len(seeds) != len(conversations):
                raise ValueError(f"complete_many: {len(seeds)} seeds for {len(conversations)} conversations")
        results: list[str | ChatError | None] = [None] * len(conversations)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(conversations), desc="chat", unit="req")
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="chat") as pool:
                futures = {}
                for i, conv in enumerate(conversations):
                    opts = dict(kw, seed=seeds[i]) if seeds is not None else kw
                    futures[pool.submit(self.complete, conv, **opts)] = i
                for fut in as_completed(futures):
                    try:
                        results[futures[fut]] = fut.result()
                    except ChatError as e:
                        results[futures[fut]] = e
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results

    # ---- transport --------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        key = self._key.value
        return text.replace(key, "<hidden>") if key else text

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode("utf-8")
        attempts, last = 0, None
        while True:
            attempts += 1
            try:
                return self._attempt(data)
            except _Retry as r:
                last = r
                if attempts > self.max_retries:
                    break
                delay = r.delay if r.delay is not None else self._backoff(attempts)
                log.warning("chat request to %s failed (%s); retry %d/%d in %.2fs", self.endpoint, r.reason,
                            attempts, self.max_retries, delay)
                time.sleep(delay)
            except ChatError as e:
                e.attempts = attempts
                raise
        raise ChatError(f"{self.endpoint}: giving up after {attempts} attempts; last error: {last.reason}",
                        url=self.endpoint, status=last.status, attempts=attempts)

    def _backoff(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = 0.5 + self._rng.random()
        return self.backoff_s * 2 ** (attempt - 1) * jitter

    def _attempt(self, data: bytes) -> dict:
        """One POST: the decoded JSON body, or :class:`_Retry` / :class:`ChatError`."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key.value:
            headers["Authorization"] = f"Bearer {self._key.value}"
        request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            message = self._error_message(e)
            if e.code in RETRY_STATUS:
                raise _Retry(f"HTTP {e.code}: {message}", e.code, _retry_after(e.headers.get("Retry-After"))) from None
            raise ChatError(f"{self.endpoint}: HTTP {e.code}: {message}", url=self.endpoint, status=e.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            kind = "timed out" if isinstance(reason, TimeoutError) else type(reason).__name__
            raise _Retry(self._redact(f"no HTTP response ({kind}: {reason})")) from None
        try:
            return json.loads(raw)
        except ValueError:
            head = self._redact(raw[:200].decode("utf-8", errors="replace"))
            raise ChatError(f"{self.endpoint}: the response is not JSON: {head!r}", url=self.endpoint,
                            status=200) from None

    def _error_message(self, e: urllib.error.HTTPError) -> str:
        """The server's error message (OpenAI's ``error.message`` if present), with the key redacted."""
        try:
            raw = e.read().decode("utf-8", errors="replace")
        except OSError:
            raw = ""
        message = raw
        try:
            body = json.loads(raw)
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict) and err.get("message"):
                message = str(err["message"])
            elif isinstance(err, str):
                message = err
            elif isinstance(body, dict) and body.get("detail"):
                message = str(body["detail"])
        except ValueError:
            pass
        return self._redact(message.strip()[:500] or e.reason or "")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After: N`` header (HTTP dates are left to the backoff schedule)."""
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None
