"""``ee-jax serve``: protocol conformance with the official ``openai`` client, batching, determinism, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import TINY, require

MODEL = "tiny-test"
HI = [{"role": "user", "content": "what is 2 plus 3"}]


def make_run(run_dir: str):
    """A tiny run: a sentencepiece tokenizer at ``run_dir/tokenizer/spm.model`` and its ``config.yaml``."""
    from ee_jax.config import load_config, save_config
    from ee_jax.data import synthetic_corpus
    from ee_jax.tokenizer import train_sentencepiece

    train_sentencepiece(synthetic_corpus(400), os.path.join(run_dir, "tokenizer", "spm"), 320, seed=0)
    cfg = load_config(None, TINY + [f"run_dir={run_dir}"])
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    return cfg


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app):
        import portpicker
        import uvicorn

        self.port = portpicker.pick_unused_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    require("fastapi")
    require("uvicorn")
    from ee_jax.agent.policy import load_policy

    cfg = make_run(str(tmp_path_factory.mktemp("run")))
    return load_policy(cfg=cfg, init_if_missing=True)


@pytest.fixture(scope="module")
def served(policy):
    from ee_jax.serve import create_app

    sampler = policy.sampler()
    app = create_app(sampler, policy.tokenizer, policy.template, MODEL, max_batch=8, source=policy.source)
    srv = ServerThread(app)
    yield srv, app, sampler
    srv.stop()


@pytest.fixture(scope="module")
def client(served):
    openai = require("openai")
    return openai.OpenAI(base_url=served[0].url, api_key="unused", max_retries=0, timeout=60)


def _reference(policy, sampler, messages, **kw):
    """What the sampler itself generates for the rendered prompt (the server's stop ids included)."""
    from ee_jax.tokenizer import render_prompt, stop_token_ids

    prompt = render_prompt(policy.tokenizer, policy.template, messages)
    out = sampler.generate([prompt], stop_ids=stop_token_ids(policy.tokenizer, policy.template), **kw)[0]
    return prompt, out


def test_models_and_health(served, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "ee-jax"
    with urllib.request.urlopen(served[0].url.removesuffix("/v1") + "/health", timeout=10) as r:
        assert json.load(r)["status"] == "ok"


def test_greedy_reply_equals_sampler_and_usage(policy, served, client):
    _, _, sampler = served
    r = client.chat.completions.create(model=MODEL, messages=HI, temperature=0, max_tokens=16)
    prompt, ref = _reference(policy, sampler, HI, temperature=0, max_new_tokens=16)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    assert r.system_fingerprint == f"ee-jax:{policy.source}" and "init:seed=" in r.system_fingerprint
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content == ref.text
    assert choice.finish_reason == {"length": "length"}.get(ref.finish_reason, "stop")
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == len(ref.ids)
    assert r.usage.total_tokens == len(prompt) + len(ref.ids)
    assert choice.logprobs is None
    # Content given as a list of text parts renders the same prompt.
    parts = [{"role": "user", "content": [{"type": "text", "text": "what is 2 "}, {"type": "text", "text": "plus 3"}]}]
    r2 = client.chat.completions.create(model=MODEL, messages=parts, temperature=0, max_tokens=16)
    assert r2.choices[0].message.content == ref.text and r2.usage.prompt_tokens == len(prompt)


def test_n_choices_follow_seeds_and_stream_reassembles(client):
    kw = dict(model=MODEL, messages=HI, temperature=1.0, max_tokens=16)
    two = client.chat.completions.create(n=2, seed=5, **kw)
    assert [c.index for c in two.choices] == [0, 1]
    # Row k of a request with seed s samples with seed s + k.
    alone = [client.chat.completions.create(seed=s, **kw).choices[0].message.content for s in (5, 6)]
    assert [c.message.content for c in two.choices] == alone and alone[0] != alone[1]
    again = client.chat.completions.create(seed=5, **kw)
    assert again.choices[0].message.content == alone[0]
    assert two.usage.completion_tokens == 2 * 16 and two.usage.prompt_tokens == again.usage.prompt_tokens

    chunks = list(client.chat.completions.create(n=2, seed=5, stream=True, stream_options={"include_usage": True},
                                                 **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    texts, roles, finish = ["", ""], [None, None], [None, None]
    for c in chunks[:-1]:
        (ch,) = c.choices
        if ch.delta.role:
            assert roles[ch.index] is None and texts[ch.index] == ""  # the role comes first
            roles[ch.index] = ch.delta.role
        texts[ch.index] += ch.delta.content or ""
        if ch.finish_reason:
            finish[ch.index] = ch.finish_reason
    assert roles == ["assistant", "assistant"] and texts == alone
    assert finish == [c.finish_reason for c in two.choices]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == two.usage.model_dump()


def test_logprobs_match_sampler(policy, served, client):
    _, _, sampler = served
    r = client.chat.completions.create(model=MODEL, messages=HI, temperature=0, max_tokens=16, logprobs=True)
    _, ref = _reference(policy, sampler, HI, temperature=0, max_new_tokens=16)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == len(ref.ids)
    np.testing.assert_allclose([t.logprob for t in content], ref.logprobs, atol=1e-4)
    assert all(t.top_logprobs == [] and isinstance(t.bytes, list) for t in content)
    assert all(t.logprob <= 0 for t in content)
    # Streamed logprobs: one entry per token, the same values.
    streamed = [e for c in client.chat.completions.create(model=MODEL, messages=HI, temperature=0, max_tokens=16,
                                                          logprobs=True, stream=True)
                for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert [e.logprob for e in streamed] == [t.logprob for t in content]


def test_output_does_not_depend_on_batch(served, client):
    _, app, _ = served
    kw = dict(model=MODEL, temperature=1.0, max_tokens=16)
    prompts = [HI, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count: 1 2 3 4"}],
               [{"role": "user", "content": "hello"}], HI]
    seeds = [11, 12, 13, 14]
    alone = [client.chat.completions.create(messages=m, seed=s, **kw).choices[0].message.content
             for m, s in zip(prompts, seeds)]
    calls_before = len(app.state.batcher.calls)
    app.state.batcher.wait_s = 0.5  # a generous window, so that the concurrent requests reliably share a call
    barrier, out = threading.Barrier(len(prompts)), [None] * len(prompts)

    def call(i):
        barrier.wait()
        out[i] = client.chat.completions.create(messages=prompts[i], seed=seeds[i], **kw).choices[0].message.content

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    app.state.batcher.wait_s = 0.005
    assert out == alone
    calls = app.state.batcher.calls[calls_before:]
    assert sum(calls) == len(prompts) and max(calls) > 1, calls  # at least two requests shared a call


def test_batcher_groups_equal_settings(served):
    from ee_jax.serve.batcher import Batcher, Settings

    _, _, sampler = served
    a, b = Settings(0.0, 1.0, 8, ()), Settings(1.0, 1.0, 8, ())
    batcher = Batcher(sampler, max_batch=3, batch_wait_ms=2000)
    futures = [batcher.submit(a, [[2, 40, 41]], [0]), batcher.submit(b, [[2, 42]], [1]),
               batcher.submit(a, [[2, 43], [2, 44]], [2, 3])]
    batcher.close()
    assert batcher.calls == [3, 1]  # both greedy jobs (3 rows) in one call, then the sampled one
    assert [len(f.result(0)) for f in futures] == [1, 1, 2]
    assert futures[2].result(0)[1].ids == sampler.generate([[2, 44]], max_new_tokens=8, temperature=0)[0].ids


def test_errors_are_openai_errors(client, served):
    openai = require("openai")
    kw = dict(model=MODEL, messages=HI, max_tokens=8)
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(**{**kw, "model": "no-such-model"})
    bad = [({"temperature": 5}, "temperature"), ({"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
           ({"max_tokens": 0}, "max_tokens"), ({"n": 0}, "n"), ({"stop": [""]}, "stop"),
           ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
           ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]"),
           ({"messages": HI + [{"role": "assistant", "content": "5"}]}, "messages")]
    for extra, param in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**{**kw, **extra})
        err = e.value.body
        assert err["type"] == "invalid_request_error" and err["param"] == param, (extra, err)
        assert param.split("[")[0] in err["message"]
    with pytest.raises(openai.BadRequestError, match=r"context is 128 tokens.*max_tokens is 200") as e:
        client.chat.completions.create(**{**kw, "max_tokens": 200})
    assert e.value.body["code"] == "context_length_exceeded"
    # Unknown fields are ignored; a bad JSON body is a 400 in the same error format.
    r = client.chat.completions.create(**kw, temperature=0, extra_body={"frequency_penalty": 0, "whatever": [1]})
    assert r.choices[0].finish_reason in ("stop", "length")
    req = urllib.request.Request(served[0].url + "/chat/completions", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.load(e.value)["error"]["code"] == "invalid_json"


def test_near_context_limit_and_per_row_seeds(policy, served):
    """The sampler fills the context exactly (prompt + max_tokens == max_seq_len), and per-row seeds
    make each row independent of the batch."""
    from ee_jax.tokenizer import render_prompt

    _, _, sampler = served
    prompt = render_prompt(policy.tokenizer, policy.template, HI)
    room = policy.cfg.model.max_seq_len - len(prompt)
    full = sampler.generate([prompt], max_new_tokens=room, temperature=0, stop=[])[0]
    short = sampler.generate([prompt], max_new_tokens=16, temperature=0, stop=[])[0]
    assert full.ids[:16] == short.ids and len(full.ids) <= room
    with pytest.raises(ValueError, match=f"prompt of {len(prompt)} tokens \\+ {room + 1} new tokens"):
        sampler.generate([prompt], max_new_tokens=room + 1)
    pair = sampler.generate([prompt, [2, 50, 51, 52]], max_new_tokens=16, temperature=1.0, seed=[7, 8])
    assert pair[0].ids == sampler.generate([prompt], max_new_tokens=16, temperature=1.0, seed=[7])[0].ids
    assert pair[1].ids == sampler.generate([[2, 50, 51, 52]], max_new_tokens=16, temperature=1.0, seed=8)[0].ids
    with pytest.raises(ValueError, match="seed has 1 entries for 2 prompts"):
        sampler.generate([prompt, prompt], max_new_tokens=4, seed=[1])


def test_cli_serve(tmp_path):
    from ee_jax.cli.serve import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.org"]))
    openai = require("openai")
    require("uvicorn")
    run_dir = str(tmp_path / "run")
    make_run(run_dir)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ee_jax.cli.main", "serve", run_dir, "--init", "--port", "0", "--json",
           "--model-name", MODEL, "--log-level", "warning", "sampler.max_new_tokens=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        info, lines = None, []
        deadline = time.monotonic() + 120
        while info is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("{"):
                info = json.loads(line)
        if info is None:
            proc.terminate()
            pytest.fail(f"no JSON line from ee-jax serve; stdout: {''.join(lines)!r}; stderr: {proc.stderr.read()!r}")
        assert info["model"] == MODEL and info["source"] == "init:seed=0"
        assert info["url"].startswith("http://127.0.0.1:") and info["url"].endswith("/v1")
        assert any(info["url"] in ln for ln in lines[:-1])  # the human line names the URL too
        c = openai.OpenAI(base_url=info["url"], api_key="unused", max_retries=0, timeout=60)
        r = c.chat.completions.create(model=MODEL, messages=HI, temperature=0)
        assert r.usage.completion_tokens <= 8  # the override set the default max_tokens
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode in (0, -15)


def test_serve_refuses_to_run_as_one_of_several_processes(monkeypatch):
    from ee_jax.cli.serve import _check_single_host
    from ee_jax.config import ConfigError

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    _check_single_host([])  # a plain machine
    _check_single_host(["distributed.enabled=true"])  # one process (JAX's own detection, one host)
    with pytest.raises(ConfigError, match="one process on one host"):
        _check_single_host(["distributed.enabled=true", "distributed.num_processes=2"])
    monkeypatch.setenv("SLURM_NTASKS", "4")  # srun started four copies
    with pytest.raises(ConfigError, match="srun -n1"):
        _check_single_host([])
    _check_single_host(["distributed.auto=false"])  # the user says this copy is alone
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")  # a multi-host TPU slice
    with pytest.raises(ConfigError):
        _check_single_host([])
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # a single-host TPU VM
    _check_single_host([])
