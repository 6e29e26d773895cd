"""Reflection generators: who writes the reflections of ``ee-jax collect reflect``.

* ``grounded`` (:class:`GroundedGenerator`, the default): the deterministic monologue of
  :mod:`ee_jax.experience.reflect.grounded`, built only from what the paper's reflection prompt shows (goal,
  observations, actions); for scratch models and tests. Records are labelled ``grounded``.
* ``oracle_template`` (:class:`OracleTemplateGenerator`): the rationale of
  :mod:`ee_jax.experience.reflect.oracle_rationale`, built from the environment's hidden reward / won / valid flags
  and hand-written per-environment notes. **Privileged**: reports label it "privileged: reward +
  hand-written notes". Records are labelled ``oracle_template``.
* ``self`` (:class:`SelfGenerator`): the policy model itself through the sampler, as in the paper.
  Labelled ``self``.
* ``http`` (:class:`HttpGenerator`): any OpenAI-compatible chat-completions endpoint. A stronger model
  makes the data teacher-assisted, so records are labelled ``teacher:<model>`` unless the caller says
  the served model is the policy (``label="self"``).

Every generator maps ``generate(cases, seed)`` to one text per case. A case that fails (an HTTP error,
a prompt that does not fit the context) gives ``""`` (the filters drop it as ``empty``) and is counted
in ``errors`` with its message in ``error_messages``; only configuration errors raise. Each case's
sampling seed is derived from ``seed`` and the case itself (:func:`~ee_jax.experience.reflect.reflection.case_seed`),
so a case gets the same text whatever it is batched with.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ee_jax.config import Config, PromptConfig
from ee_jax.experience.reflect.chat_client import ChatClient
from ee_jax.experience.reflect.grounded import GROUNDED_VERSION, grounded_rationale
from ee_jax.experience.reflect.oracle_rationale import RATIONALE_VERSION, oracle_template_rationale
from ee_jax.experience.reflect.reflection import PROMPT_VERSION, ReflectionCase, case_seed, reflection_messages
from ee_jax.models.engine import rollout_engine
from ee_jax.records.prompts import shrinking_prompt_cfgs
from ee_jax.tokenizer import render_prompt

log = logging.getLogger(__name__)

GENERATORS = ("grounded", "oracle_template", "self", "http")
PRIVILEGED_GENERATORS = {"oracle_template": "privileged: reward + hand-written notes",
                         "template": "privileged: reward + hand-written notes; oracle_template's name before 2026-12"}
"""Generators whose text uses information the paper's reflection prompt does not show, with their label."""
MAX_ERROR_MESSAGES = 20


@runtime_checkable
class ReflectionGenerator(Protocol):
    """What the reflect stage calls. ``name`` labels every record; ``settings()`` goes into the manifest
    (no secrets); ``errors`` counts the cases that got ``""`` because generation failed."""

    name: str
    errors: int

    def settings(self) -> dict: ...

    def generate(self, cases: Sequence[ReflectionCase], seed: int) -> list[str]: ...


class _Errors:
    """The shared error bookkeeping: a count and the first few messages."""

    def __init__(self) -> None:
        self.errors = 0
        self.error_messages: list[str] = []

    def _failed(self, case: ReflectionCase, message: str) -> str:
        self.errors += 1
        text = f"{case.env} case {case.key()}: {message}"
        if len(self.error_messages) < MAX_ERROR_MESSAGES:
            self.error_messages.append(text)
        log.warning("reflection generation failed: %s", text)
        return ""


_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def clean_reply(text: str) -> str:
    """A generated reflection without surrounding whitespace or a leading ``<think>...</think>`` block
    (reasoning models put their scratchpad there; it is not the monologue)."""
    return _THINK.sub("", text or "").strip()


class _Deterministic(_Errors):
    """A reflection written by a function of the case (no model, no randomness)."""

    def __init__(self, name: str, version: str, write: Callable[[ReflectionCase], str]):
        self.name, self.version, self._write = name, version, write
        super().__init__()

    def settings(self) -> dict:
        return {"kind": self.name, "rationale_version": self.version}

    def generate(self, cases: Sequence[ReflectionCase], seed: int) -> list[str]:
        """One text per case; ``seed`` is unused (the text is a function of the case)."""
        out = []
        for case in cases:
            try:
                out.append(self._write(case))
            except Exception as e:  # one odd observation must not sink the shard; it is counted
                out.append(self._failed(case, f"{type(e).__name__}: {e}"))
        return out


class GroundedGenerator(_Deterministic):
    """Monologues from the goal, observations and actions alone (no model): labelled ``grounded``."""

    def __init__(self):
        super().__init__("grounded", GROUNDED_VERSION, grounded_rationale)


class OracleTemplateGenerator(_Deterministic):
    """Rationales from the environment's hidden feedback and hand-written notes: labelled
    ``oracle_template`` (privileged)."""

    def __init__(self):
        super().__init__("oracle_template", RATIONALE_VERSION, oracle_template_rationale)


class SelfGenerator(_Errors):
    """Reflections written by the policy model itself through its sampler (the paper's setting).

    Prompts are :func:`reflection_messages` rendered with the policy's chat template; a prompt longer
    than ``model.max_seq_len - max_new_tokens`` is re-rendered with less history and shorter
    observations, and a case whose prompt still does not fit fails (``""``, counted). ``batch_size``
    prompts go to each sampler call, each with its own seed.
    """

    def __init__(self, policy, cfg_reflect, prompt_cfg: PromptConfig, *, label: str = "self"):
        self.policy, self.cfg, self.prompt_cfg, self.name = policy, cfg_reflect, prompt_cfg, label
        if cfg_reflect.batch_size < 1 or cfg_reflect.max_new_tokens < 1:
            raise ValueError(f"experience.reflect.batch_size={cfg_reflect.batch_size} and max_new_tokens="
                             f"{cfg_reflect.max_new_tokens} must be >= 1")
        limit = policy.cfg.model.max_seq_len
        if cfg_reflect.max_new_tokens >= limit:
            raise ValueError(f"experience.reflect.max_new_tokens={cfg_reflect.max_new_tokens} leaves no room for "
                             f"the prompt in model.max_seq_len={limit}")
        self._sampler = None
        super().__init__()

    def settings(self) -> dict:
        c = self.cfg
        return {"kind": "self", "policy": self.policy.source, "template": self.policy.template,
                "temperature": c.temperature, "max_new_tokens": c.max_new_tokens, "batch_size": c.batch_size,
                "prompt_version": PROMPT_VERSION, "show_reward": c.show_reward}

    def prompt_ids(self, case: ReflectionCase):
        """The prompt token ids of ``case`` (tightened to fit the context), or None if nothing fits."""
        room = self.policy.cfg.model.max_seq_len - self.cfg.max_new_tokens
        for pcfg in shrinking_prompt_cfgs(self.prompt_cfg):
            messages = reflection_messages(case, pcfg, max_words=self.cfg.max_words,
                                           show_reward=self.cfg.show_reward)
            ids = render_prompt(self.policy.tokenizer, self.policy.template, messages)
            if len(ids) <= room:
                return ids
        return None

    def generate(self, cases: Sequence[ReflectionCase], seed: int) -> list[str]:
        """One reflection per case, sampled at ``temperature`` with a per-case seed."""
        if self._sampler is None:
            self._sampler = self.policy.sampler()
        out = [""] * len(cases)
        todo = []
        for i, case in enumerate(cases):
            ids = self.prompt_ids(case)
            if ids is None:
                self._failed(case, f"the prompt does not fit model.max_seq_len={self.policy.cfg.model.max_seq_len} "
                                   f"with max_new_tokens={self.cfg.max_new_tokens}, even with less history")
            else:
                todo.append((i, [int(x) for x in ids]))
        seeds = [case_seed(seed, cases[i]) for i, _ in todo]
        engine = rollout_engine(self._sampler, min(self.cfg.batch_size, max(1, len(todo))))
        try:
            samples = engine.generate([ids for _, ids in todo], seeds, max_new_tokens=self.cfg.max_new_tokens,
                                      temperature=self.cfg.temperature)
        except Exception as e:  # counted per case; the stage goes on (its other shards)
            for i, _ in todo:
                self._failed(cases[i], f"sampler: {type(e).__name__}: {e}")
            return out
        for (i, _), s in zip(todo, samples):
            text = s.text if s.text is not None else self.policy.tokenizer.decode(s.ids)
            out[i] = clean_reply(text)
        return out


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment (what may go into a manifest)."""
    p = urllib.parse.urlparse(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunparse((p.scheme, netloc, p.path, "", "", ""))


class HttpGenerator(_Errors):
    """Reflections from an OpenAI-compatible chat-completions endpoint (``experience.reflect.url``).

    Labelled ``teacher:<model>``: a model other than the policy makes the data teacher-assisted. Pass
    ``label="self"`` when the endpoint serves the policy itself (e.g. ``ee-jax serve`` of this run).
    The API key is read by the client from the environment variable ``api_key_env`` and appears
    nowhere in settings, logs or errors.
    """

    def __init__(self, cfg_reflect, prompt_cfg: PromptConfig, *, label: str | None = None, backoff_s: float = 1.0):
        c = cfg_reflect
        if not c.url:
            raise ValueError("experience.reflect.url is empty: the http generator needs an OpenAI-compatible base "
                             "URL, e.g. http://127.0.0.1:8000/v1")
        if not c.model:
            raise ValueError("experience.reflect.model is empty: give the model name the endpoint serves")
        try:
            self.client = ChatClient(c.url, c.model, api_key_env=c.api_key_env, timeout_s=c.timeout_s,
                                     max_retries=c.max_retries, backoff_s=backoff_s, concurrency=c.concurrency)
        except ValueError as e:
            raise ValueError(f"experience.reflect (http generator): {e}") from None
        self.cfg, self.prompt_cfg = c, prompt_cfg
        self.name = label or f"teacher:{c.model}"
        super().__init__()

    def settings(self) -> dict:
        c = self.cfg
        return {"kind": "http", "url": _public_url(c.url), "model": c.model, "api_key_env": c.api_key_env,
                "temperature": c.temperature, "max_tokens": c.max_new_tokens, "timeout_s": c.timeout_s,
                "max_retries": c.max_retries, "concurrency": c.concurrency, "prompt_version": PROMPT_VERSION,
                "show_reward": c.show_reward}

    def generate(self, cases: Sequence[ReflectionCase], seed: int) -> list[str]:
        """One reflection per case; requests carry per-case seeds (endpoints that honour ``seed`` repeat)."""
        conversations = [reflection_messages(c, self.prompt_cfg, max_words=self.cfg.max_words,
                                             show_reward=self.cfg.show_reward) for c in cases]
        replies = self.client.complete_many(conversations, seeds=[case_seed(seed, c) for c in cases],
                                            temperature=self.cfg.temperature, max_tokens=self.cfg.max_new_tokens)
        out = []
        for case, reply in zip(cases, replies):
            out.append(clean_reply(reply) if isinstance(reply, str) else self._failed(case, str(reply)))
        return out


def make_generator(cfg: Config, policy_loader: Callable[[], object] | None = None) -> ReflectionGenerator:
    """The generator named by ``cfg.experience.reflect.generator``; ``policy_loader`` gives the policy
    for ``self`` (called only then, so other generators never load a model)."""
    r = cfg.experience.reflect
    if r.generator == "grounded":
        return GroundedGenerator()
    if r.generator == "oracle_template":
        return OracleTemplateGenerator()
    if r.generator == "self":
        if policy_loader is None:
            raise ValueError("experience.reflect.generator=self needs the policy model, but no policy loader "
                             "was given")
        return SelfGenerator(policy_loader(), r, cfg.prompt)
    if r.generator == "http":
        return HttpGenerator(r, cfg.prompt)
    raise ValueError(f"experience.reflect.generator={r.generator!r}: expected one of {list(GENERATORS)}")
