"""The FastAPI app: ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions``.

Requests are validated (:mod:`.protocol`), rendered with the run's chat template, and queued to the
single sampler thread (:mod:`.batcher`). A streamed reply is generated whole, then sent as
server-sent events, one chunk per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ee_jax.serve.batcher import Batcher, Settings
from ee_jax.serve.protocol import APIError, TokenText, completion_body, parse_request, stream_chunks
from ee_jax.tokenizer import render_prompt, stop_token_ids


def _generation_request(body, model_name: str, tokenizer, template: str, sampler_cfg, max_seq_len: int,
                        base_stop: tuple, next_seed) -> tuple:
    """A chat-completions body as ``(request, prompt ids, Settings, seeds)``; bad input is an :class:`APIError`."""
    req = parse_request(body, model_name)
    try:
        prompt = render_prompt(tokenizer, template, req.messages)
    except ValueError as e:
        raise APIError(400, f"messages: {e}", param="messages", code="invalid_value") from None
    max_tokens = req.max_tokens
    if max_tokens is None:  # the policy's default, shortened to what the context has left
        max_tokens = max(1, min(sampler_cfg.max_new_tokens, max_seq_len - len(prompt)))
    if len(prompt) + max_tokens > max_seq_len:
        raise APIError(400, f"this model's context is {max_seq_len} tokens: the prompt is {len(prompt)} tokens "
                            f"and max_tokens is {max_tokens} ({len(prompt) + max_tokens} > {max_seq_len})",
                       param="max_tokens" if req.max_tokens is not None else "messages",
                       code="context_length_exceeded")
    seeds = [req.seed + k for k in range(req.n)] if req.seed is not None else [next(next_seed) for _ in range(req.n)]
    settings = Settings(req.temperature, req.top_p, max_tokens, tuple(dict.fromkeys(base_stop + tuple(req.stop))))
    return req, prompt, settings, seeds


def _add_model_routes(app: FastAPI, model_name: str, created_at: int) -> None:
    """Errors as OpenAI error bodies, ``/health`` and the ``/v1/models`` listing of the one served model."""

    @app.exception_handler(APIError)
    async def _api_error(_request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created_at, "owned_by": "ee-jax"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str):
        if model != model_name:
            raise APIError(404, f"The model {model!r} does not exist", param="model", code="model_not_found")
        return model_card()


def create_app(sampler, tokenizer, template: str, model_name: str, *, max_batch: int = 16,
               batch_wait_ms: float = 5, source: str = "") -> FastAPI:
    """An OpenAI-compatible chat-completions app serving ``sampler`` as model ``model_name``.

    Args:
        sampler: a :class:`~ee_jax.models.sampler.Sampler` (e.g. ``Policy.sampler()``); its config's
            ``stop`` strings (the template's end of turn) always apply, and ``max_new_tokens`` is the
            default ``max_tokens``.
        tokenizer: the policy's tokenizer; ``template``: its chat template name.
        model_name: the only value of the request's ``model`` field accepted (others: 404).
        max_batch: most prompt rows per ``generate`` call; batch_wait_ms: how long the sampler thread
            waits for more requests with the same settings before generating.
        source: where the weights came from (``Policy.source``); sent as ``system_fingerprint``.

    The sampler thread starts here and stops when the app shuts down (``app.state.batcher``).
    """
    stop_ids = stop_token_ids(tokenizer, template)
    batcher = Batcher(sampler, max_batch=max_batch, batch_wait_ms=batch_wait_ms, stop_ids=stop_ids)
    texts = TokenText(tokenizer, stop_ids + [i for i in [getattr(tokenizer, "eos_id", -1)] if i >= 0])
    max_seq_len = sampler.model_cfg.max_seq_len
    base_stop = tuple(sampler.cfg.stop)
    fingerprint = f"ee-jax:{source}" if source else "ee-jax"
    created_at = int(time.time())
    # Rows without a request seed take the next seeds of a counter: fresh, yet reproducible per server run.
    next_seed = itertools.count(1)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="ee-jax", lifespan=lifespan)
    app.state.batcher = batcher

    _add_model_routes(app, model_name, created_at)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
        req, prompt, settings, seeds = _generation_request(body, model_name, tokenizer, template, sampler.cfg,
                                                           max_seq_len, base_stop, next_seed)
        future = batcher.submit(settings, [prompt] * req.n, seeds)
        try:
            samples = await asyncio.wrap_future(future)
        except ValueError as e:
            raise APIError(400, str(e)) from None
        except Exception as e:
            raise APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error") from None
        common = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                      fingerprint=fingerprint, samples=samples, texts=texts, logprobs=req.logprobs,
                      prompt_tokens=len(prompt))
        if not req.stream:
            return completion_body(**common)

        def events():
            for chunk in stream_chunks(**common, include_usage=req.include_usage):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
