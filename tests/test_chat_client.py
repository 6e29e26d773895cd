"""ChatClient: against ``ee-jax serve``, and against a loopback stub for retries, timeouts, concurrency, secrets."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ee_jax.experience.reflect.chat_client import ChatClient, ChatError

SECRET = "sk-test-0123456789-SECRET"


class Stub:
    """A loopback chat-completions stub. ``script`` is a list of responses used in order (the last one
    repeats): ``(status, headers, body)`` or ``"hang"``; a 200 body of None echoes the last user message."""

    def __init__(self, script, delay_s: float = 0.0):
        self.script, self.delay_s = list(script), delay_s
        self.requests, self.auth, self.in_flight, self.max_in_flight = 0, [], 0, 0
        self.lock, self.release = threading.Lock(), threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    step = stub.script[min(stub.requests, len(stub.script) - 1)]
                    stub.requests += 1
                    stub.auth.append(self.headers.get("Authorization"))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                counted = True
                try:
                    if step == "hang":
                        stub.release.wait(10)
                        return
                    time.sleep(stub.delay_s)
                    status, headers, payload = step
                    if payload is None:
                        payload = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                        "content": body["messages"][-1]["content"]},
                                                "finish_reason": "stop"}]}
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    # Leave the count before the client can read the body and send its next request
                    # (counting after the write raced with the client and could report one too many).
                    with stub.lock:
                        stub.in_flight -= 1
                        counted = False
                    self.wfile.write(data)
                finally:
                    if counted:
                        with stub.lock:
                            stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


OK = (200, {}, None)


def _error(status, message, headers=None):
    return (status, headers or {}, {"error": {"message": message, "type": "x", "param": None, "code": None}})


@pytest.fixture
def stub():
    made = []

    def make(script, delay_s=0.0):
        made.append(Stub(script, delay_s))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_retries_transient_errors_then_succeeds(stub, caplog):
    s = stub([_error(503, "overloaded"), _error(503, "overloaded"), OK])
    c = ChatClient(s.url, "m", backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="ee_jax.experience.reflect.chat_client"):
        assert c.complete("hello") == "hello"
    assert s.requests == 3
    assert len(caplog.records) == 2 and "retry 2/4" in caplog.text and "HTTP 503: overloaded" in caplog.text


def test_retry_after_is_honoured(stub):
    s = stub([_error(429, "slow down", {"Retry-After": "1"}), OK])
    c = ChatClient(s.url, "m", backoff_s=0.001)
    t0 = time.monotonic()
    assert c.complete([{"role": "user", "content": "x"}]) == "x"
    assert time.monotonic() - t0 >= 0.9 and s.requests == 2


def test_client_errors_fail_at_once_with_the_server_message(stub):
    s = stub([_error(401, "Incorrect API key provided")])
    c = ChatClient(s.url, "m", backoff_s=0.01)
    with pytest.raises(ChatError, match="HTTP 401: Incorrect API key provided") as e:
        c.complete("x")
    assert s.requests == 1 and e.value.status == 401 and e.value.attempts == 1
    assert s.url + "/chat/completions" in str(e.value)


def test_gives_up_after_max_retries(stub):
    s = stub([_error(502, "bad gateway")])
    c = ChatClient(s.url, "m", max_retries=2, backoff_s=0.01)
    with pytest.raises(ChatError) as e:
        c.complete("x")
    msg = str(e.value)
    assert s.requests == 3 and e.value.attempts == 3 and e.value.status == 502
    assert s.url in msg and "3 attempts" in msg and "HTTP 502: bad gateway" in msg


def test_timeout_and_connection_errors(stub):
    s = stub(["hang"])
    c = ChatClient(s.url, "m", timeout_s=0.3, max_retries=1, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(ChatError, match="giving up after 2 attempts.*no HTTP response.*timed out") as e:
        c.complete("x")
    assert e.value.status is None and s.requests == 2 and time.monotonic() - t0 < 5
    import portpicker

    dead = ChatClient(f"http://127.0.0.1:{portpicker.pick_unused_port()}/v1", "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(ChatError, match="giving up after 2 attempts") as e:
        dead.complete("x")
    assert e.value.status is None


def test_complete_many_keeps_order_and_limits_concurrency(stub):
    s = stub([OK], delay_s=0.15)
    c = ChatClient(s.url, "m", concurrency=3)
    prompts = [f"prompt {i}" for i in range(9)]
    assert c.complete_many(prompts, progress=True) == prompts
    assert s.max_in_flight == 3 and s.requests == 9


def test_complete_many_returns_errors_in_place(stub):
    s = stub([OK, _error(400, "bad request"), OK])
    c = ChatClient(s.url, "m", concurrency=1)
    out = c.complete_many(["a", "b", "c"], seeds=[1, 2, 3], max_tokens=4)
    assert out[0] == "a" and out[2] == "c"
    assert isinstance(out[1], ChatError) and "bad request" in str(out[1]) and out[1].status == 400
    with pytest.raises(ValueError, match="2 seeds for 3 conversations"):
        c.complete_many(["a", "b", "c"], seeds=[1, 2])


def test_api_key_is_sent_but_never_shown(stub, monkeypatch, caplog):
    monkeypatch.setenv("EE_TEST_KEY", SECRET)
    s = stub([_error(503, f"key {SECRET} is rate limited"), _error(401, f"Incorrect API key provided: {SECRET}")])
    c = ChatClient(s.url, "m", api_key_env="EE_TEST_KEY", backoff_s=0.01)
    with caplog.at_level(logging.DEBUG), pytest.raises(ChatError) as e:
        c.complete("x")
    assert s.auth == [f"Bearer {SECRET}"] * 2
    shown = [str(e.value), repr(e.value), repr(c), str(vars(c)), caplog.text]
    assert "Incorrect API key provided" in shown[0] and "rate limited" in caplog.text
    assert not any(SECRET in text for text in shown)
    monkeypatch.delenv("EE_TEST_KEY")
    with pytest.raises(ValueError, match="EE_TEST_KEY is not set"):
        ChatClient(s.url, "m", api_key_env="EE_TEST_KEY")


def test_bad_arguments():
    with pytest.raises(ValueError, match="url="):
        ChatClient("127.0.0.1:8000/v1", "m")
    with pytest.raises(ValueError, match="concurrency=0"):
        ChatClient("http://127.0.0.1:1/v1", "m", concurrency=0)


def test_against_ee_jax_serve(tmp_path):
    from tests.conftest import require

    require("fastapi")
    require("uvicorn")
    from ee_jax.agent.policy import load_policy
    from ee_jax.serve import create_app
    from ee_jax.tokenizer import render_prompt, stop_token_ids
    from tests.test_serve import MODEL, ServerThread, make_run

    policy = load_policy(cfg=make_run(str(tmp_path / "run")), init_if_missing=True)
    sampler = policy.sampler()
    srv = ServerThread(create_app(sampler, policy.tokenizer, policy.template, MODEL, source=policy.source))
    try:
        c = ChatClient(srv.url + "/", MODEL, concurrency=2)
        msgs = [{"role": "user", "content": "what is 2 plus 3"}]
        prompt = render_prompt(policy.tokenizer, policy.template, msgs)
        ref = sampler.generate([prompt], max_new_tokens=12, temperature=0,
                               stop_ids=stop_token_ids(policy.tokenizer, policy.template))[0]
        assert c.complete(msgs, temperature=0, max_tokens=12) == ref.text
        convs = [msgs, "hello", msgs]
        out = c.complete_many(convs, seeds=[4, 5, 4], temperature=1.0, max_tokens=12)
        assert out[0] == out[2] == c.complete(msgs, temperature=1.0, max_tokens=12, seed=4)
        with pytest.raises(ChatError, match="HTTP 404: The model 'other' does not exist"):
            ChatClient(srv.url, "other", backoff_s=0.01).complete("x")
    finally:
        srv.stop()
