"""The OpenAI chat-completions wire format: request validation and response/stream bodies.

Plain functions over dicts (no FastAPI here), so the format is testable on its own. Validation
errors are :class:`APIError` s that render as OpenAI's ``{"error": {...}}`` and name the field.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

MAX_N = 128
MAX_STOP = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class APIError(Exception):
    """An error response: HTTP ``status`` and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):  # noqa: A002  (OpenAI's field name)
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass
class ChatRequest:
    """A validated request. ``max_tokens`` is None when the client did not set it."""

    messages: list[dict]
    temperature: float
    top_p: float
    max_tokens: int | None
    stop: list[str]
    n: int
    seed: int | None
    stream: bool
    include_usage: bool
    logprobs: bool


def _bad(param: str, message: str, code: str | None = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


def _number(body: dict, name: str, default: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(name, f"expected a number, got {v!r}", "invalid_type")
    if v > hi or v < lo or (lo_open and v == lo):
        raise _bad(name, f"{v!r} is out of range ({'(' if lo_open else '['}{lo}, {hi}])")
    return float(v)


def _int(body: dict, name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, f"expected an integer, got {v!r}", "invalid_type")
    if v < lo or (hi is not None and v > hi):
        raise _bad(name, f"{v!r} is out of range (>= {lo}{f' and <= {hi}' if hi is not None else ''})")
    return v


def _bool(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(name, f"expected a boolean, got {v!r}", "invalid_type")
    return v


def _content(i: int, content) -> str:
    """A message's text: a string, or the concatenated text of a list of ``{"type": "text"}`` parts."""
    param = f"messages[{i}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(f"{param}[{j}]", f"only text parts ({{'type': 'text', 'text': str}}) are supported, "
                                            f"got {kind!r}", "unsupported_content")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(param, f"expected a string or a list of text parts, got {type(content).__name__}", "invalid_type")


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages", "expected a non-empty list of {'role', 'content'} objects",
                   "missing_required_parameter" if msgs is None else "invalid_type")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}]", f"expected an object, got {type(m).__name__}", "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role", f"unsupported role {role!r}; supported: {', '.join(ROLES)}")
        out.append({"role": ROLES[role], "content": _content(i, m.get("content"))})
    return out


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _bad("stop", f"expected a non-empty string or a list of them, got {v!r}", "invalid_type")
    if len(stops) > MAX_STOP:
        raise _bad("stop", f"at most {MAX_STOP} stop strings, got {len(stops)}")
    return stops


def parse_request(body, model_name: str) -> ChatRequest:
    """Validate a chat-completions request body. Unknown fields are ignored (clients send many).

    Raises :class:`APIError`: 404 for a model other than ``model_name``, 400 naming the bad field.
    """
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is None:
        raise _bad("model", "is required", "missing_required_parameter")
    if model != model_name:
        raise APIError(404, f"The model {model!r} does not exist; this server serves {model_name!r}",
                       param="model", code="model_not_found")
    top_logprobs = _int(body, "top_logprobs", 0, 20)
    if top_logprobs:
        raise _bad("top_logprobs", f"{top_logprobs} alternatives requested; only top_logprobs=0 is supported "
                                   f"(the sampled token's logprob comes with logprobs=true)", "unsupported_value")
    max_tokens = _int(body, "max_completion_tokens", 1)
    max_tokens = _int(body, "max_tokens", 1) if max_tokens is None else max_tokens
    seed = _int(body, "seed", -(2**63))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options", f"expected an object, got {options!r}", "invalid_type")
    return ChatRequest(
        messages=_messages(body),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        max_tokens=max_tokens,
        stop=_stop(body),
        n=_int(body, "n", 1, MAX_N) or 1,
        seed=seed,
        stream=_bool(body, "stream"),
        include_usage=_bool(options, "include_usage"),
        logprobs=_bool(body, "logprobs"),
    )


def finish_reason(sample) -> str:
    """OpenAI's finish reason: the sampler's ``eos``/``stop`` are both "stop"."""
    return "length" if sample.finish_reason == "length" else "stop"


class TokenText:
    """Per-token text of a sample: what each token adds to the decoded string, and its bytes."""

    def __init__(self, tokenizer, stop_ids: Sequence[int]):
        self.tok, self.stop_ids = tokenizer, set(stop_ids)

    def prefixes(self, ids: Sequence[int]) -> list[str]:
        """``decode`` of the first j text tokens, for j = 0..len(ids) (stop-id tokens add nothing)."""
        kept, out = [], [""]
        for i in ids:
            if i not in self.stop_ids:
                kept.append(i)
            out.append(self.tok.decode(kept) if kept else "")
        return out

    def entries(self, ids: Sequence[int], logprobs: Sequence[float], prefixes: list[str]) -> list[dict]:
        """``logprobs.content`` items: token text (its contribution to the decoded text), logprob, bytes."""
        out = []
        for j, (i, lp) in enumerate(zip(ids, logprobs, strict=True)):
            before, after = prefixes[j], prefixes[j + 1]
            piece = self.tok.id_to_token(i)
            if i in self.stop_ids:
                text = piece
            elif after.startswith(before) and not after.endswith("\ufffd"):
                text = after[len(before):]
            else:  # a byte of an unfinished UTF-8 character
                text = self.tok.decode([i])
            m = _BYTE_PIECE.match(piece)
            raw = [int(m.group(1), 16)] if m else list(text.encode("utf-8"))
            out.append({"token": text, "logprob": float(lp), "bytes": raw, "top_logprobs": []})
        return out


def text_deltas(text: str, prefixes: list[str]) -> list[str]:
    """Split the final ``text`` into one delta per token; the deltas always join to ``text``.

    Token j's delta is what its decoded prefix adds, while that prefix is still a prefix of ``text``
    (stop strings are cut from ``text``, and a half-decoded UTF-8 character waits for its last byte).
    """
    deltas, done = [], 0
    for p in prefixes[1:]:
        end = len(p) if text.startswith(p) and not p.endswith("\ufffd") else done
        end = max(done, end)
        deltas.append(text[done:end])
        done = end
    if deltas:
        deltas[-1] += text[done:]
    elif text:
        deltas.append(text)
    return deltas


def completion_body(*, id: str, created: int, model: str, fingerprint: str, samples, texts: TokenText,  # noqa: A002
                    logprobs: bool, prompt_tokens: int) -> dict:
    """A ``chat.completion`` object for ``samples`` (one choice each)."""
    choices = []
    for k, s in enumerate(samples):
        lp = {"content": texts.entries(s.ids, s.logprobs, texts.prefixes(s.ids)), "refusal": None} if logprobs else None
        choices.append({"index": k, "message": {"role": "assistant", "content": s.text, "refusal": None},
                        "logprobs": lp, "finish_reason": finish_reason(s)})
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": fingerprint, "choices": choices, "usage": usage(samples, prompt_tokens)}


def usage(samples, prompt_tokens: int) -> dict:
    """Token counts; the prompt is counted once however many choices (as OpenAI does)."""
    completion = sum(len(s.ids) for s in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def stream_chunks(*, id: str, created: int, model: str, fingerprint: str, samples, texts: TokenText,  # noqa: A002
                  logprobs: bool, prompt_tokens: int, include_usage: bool) -> Iterator[dict]:
    """``chat.completion.chunk`` objects: per choice a role delta, a delta per token, then the finish reason;
    a last usage chunk (empty choices) when ``include_usage``."""
    head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": fingerprint}
    extra = {"usage": None} if include_usage else {}

    def chunk(k, delta, lp=None, finish=None):
        return {**head, "choices": [{"index": k, "delta": delta, "logprobs": lp, "finish_reason": finish}], **extra}

    for k, s in enumerate(samples):
        prefixes = texts.prefixes(s.ids)
        yield chunk(k, {"role": "assistant", "content": ""})
        entries = texts.entries(s.ids, s.logprobs, prefixes) if logprobs else None
        for j, delta in enumerate(text_deltas(s.text, prefixes)):
            yield chunk(k, {"content": delta}, {"content": [entries[j]], "refusal": None} if logprobs else None)
        yield chunk(k, {}, finish=finish_reason(s))
    if include_usage:
        yield {**head, "choices": [], "usage": usage(samples, prompt_tokens)}
