"""Multi-turn rollouts for RL: the policy acts in batched episodes and every turn is kept as token ids.

A rollout is an evaluation episode (:mod:`ee_jax.agent.episodes`: the same state building, prompt
renderer, action parser, invalid-action and step limits) that also keeps, per turn, the prompt ids the
policy read, the reply ids it *generated* and their sampling log-probabilities. Training uses these ids
as they are: generated text is never re-tokenized.

Episodes are played on the sampler's :class:`~ee_jax.models.engine.RolloutEngine` (``chunk_rows`` rows,
continuous batching, each episode's KV cache kept between its turns); every turn samples with its own
seed derived from (seed, group, member, turn), so an episode does not depend on what it is batched with
and a resumed run replays the same rollouts. Under ``jax.distributed`` each host plays every
``process_count``-th episode on its own devices, and every host then gets all rollouts.

Two kinds of episode start:

* **task starts**: ``group_size`` rollouts of one task from its reset state (a GRPO group);
* **branch starts** (:class:`BranchStart`): an expert state of a training task, reached by replaying the
  expert prefix, where a given first action is executed (the expert's, or one of the K alternatives early
  experience executed there) and the policy continues. The first turn is *forced*: its reply ids are the
  rendered action (as imitation renders it) and its log-probabilities are computed by the trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

from tqdm import tqdm

from ee_jax.agent.episodes import Episode, advance_episode, start_episode
from ee_jax.config import Config
from ee_jax.envs.base import Task
from ee_jax.envs.registry import make_env_from_config
from ee_jax.models import engine
from ee_jax.parallel.distributed import allgather_json
from ee_jax.records.prompts import action_target
from ee_jax.records.schema import Step
from ee_jax.seeds import unit_seed
from ee_jax.tokenizer import render_target, stop_token_ids


@dataclasses.dataclass
class Turn:
    """One policy turn: what it read, what it replied, and the reward that turn earned."""

    prompt: list[int]
    response: list[int]
    logprobs: list[float]  # sampling log-probs of ``response`` (empty for a forced turn)
    reward: float
    valid: bool
    state_key: str  # identical prompts (the same state) share a key: step-level groups
    forced: bool = False
    truncated: bool = False  # the reply hit max_new_tokens


@dataclasses.dataclass
class Rollout:
    """One finished episode. ``group``: rollouts compared with each other (same task, or same branch state)."""

    group: str
    member: int
    task_id: str
    seed: int
    turns: list[Turn]
    won: bool
    score: float
    invalid: int
    ended: str

    @property
    def episode_return(self) -> float:
        return float(sum(t.reward for t in self.turns))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Rollout:
        return cls(**{**d, "turns": [Turn(**t) for t in d["turns"]]})


@dataclasses.dataclass(frozen=True)
class BranchStart:
    """An expert state (task + expert prefix) and the first action to execute there."""

    task: Task
    prefix: tuple[str, ...]
    action: str
    group: str  # the branch group: every action executed at this state
    member: int


@dataclasses.dataclass
class RewardSpec:
    """Per-turn reward: ``-invalid_penalty`` on an invalid action; at the end ``success_reward`` x won +
    ``score_reward`` x the environment's final score."""

    success_reward: float = 10.0
    invalid_penalty: float = 0.1
    score_reward: float = 0.0

    @classmethod
    def from_config(cls, cfg: Config) -> RewardSpec:
        r = cfg.rl
        return cls(r.success_reward, r.invalid_penalty, r.score_reward)


def state_key(prompt_ids: list[int]) -> str:
    """A short digest of a prompt: equal for the same rendered state."""
    return hashlib.sha1(",".join(map(str, prompt_ids)).encode()).hexdigest()[:16]


@dataclasses.dataclass
class _Live:
    ep: Episode
    group: str
    member: int
    turns: list[Turn]
    index: int = 0  # position in the start list (the output order)
    forced: str | None = None  # the first action of a branch start, executed before the policy acts


def _replay_prefix(ep: Episode, prefix: tuple[str, ...]) -> None:
    """Walk a fresh episode through the expert prefix (history as the expert saw it; not turns)."""
    for action in prefix:
        result = ep.env.step(action)
        if not result.info.get("valid", True) or result.done:
            raise RuntimeError(f"task {ep.task.id!r}: replaying the expert prefix failed at {action!r} "
                               f"(valid={result.info.get('valid')}, done={result.done}); the environment "
                               "is not deterministic or the record does not belong to it")
        ep.history.append(Step(action, result.observation))
        ep.observation = result.observation
        adm = ep.env.admissible_actions()
        ep.admissible = None if adm is None else tuple(adm)


def collect_rollouts(policy, sampler, cfg: Config, *, tasks: list[Task] | None = None, group_size: int = 1,
                     branches: list[BranchStart] | None = None, seed: int = 0, make_env=None,
                     chunk_rows: int = 64, progress: bool = False, stats: dict | None = None) -> list[Rollout]:
    """Episodes of ``policy`` (its sampler's current params): ``group_size`` per task, one per branch start.

    Args:
        policy: a :class:`~ee_jax.agent.policy.Policy` (tokenizer, template, context length).
        sampler: its :class:`~ee_jax.models.sampler.Sampler` (``sampler.params`` are the acting weights).
        cfg: ``rl`` (temperature, max_new_tokens, max_turns, max_invalid, rewards), ``env``, ``prompt``.
        tasks / group_size: task starts; group ``task:<id>``.
        branches: branch starts; group ``BranchStart.group``.
        seed: sampling seed of this call (the RL step's).
        make_env: ``() -> Env`` (default: the config's environment).
        chunk_rows: rows of the rollout engine (episodes decoding at once).
        stats: if given, filled with ``env_s`` (time in the environments), ``sample_s`` (in the sampler),
            ``generated_tokens`` and ``env_steps``.

    Returns:
        Rollouts in start order (task starts first, member order, then branch starts).
    """
    r = cfg.rl
    ctx = _RolloutContext(policy, sampler, cfg, seed, r.max_new_tokens or cfg.eval.max_new_tokens,
                          r.max_invalid or cfg.eval.max_invalid, RewardSpec.from_config(cfg))
    make_env = make_env or (lambda: make_env_from_config(with_turn_limit(cfg)))
    starts: list[tuple] = [(t, f"task:{t.id}", m, None) for t in (tasks or []) for m in range(group_size)]
    starts += [(b.task, b.group, b.member, b) for b in (branches or [])]
    share = engine.episode_share(sampler, len(starts))  # several hosts: this one's episodes, gathered below
    split_hosts = share is not None
    mine = share if split_hosts else list(range(len(starts)))
    free, envs, done = [], [], {}
    bar = tqdm(total=len(mine), desc="rollouts", unit="ep", disable=not progress)

    def finish(lv: _Live) -> None:
        done[lv.index] = Rollout(lv.group, lv.member, lv.ep.task.id, lv.ep.seed, lv.turns, lv.ep.won,
                                 lv.ep.score, lv.ep.invalid, lv.ep.ended)
        free.append(lv.ep.env)
        bar.update(1)

    def first_turns():
        for index in mine:  # an environment per live episode, made as rows free up
            if not free:
                envs.append(make_env())
                free.append(envs[-1])
            lv = ctx.begin(free.pop(), index, *starts[index])
            if lv.forced is not None and ctx.take_turn(lv, None):  # a branch whose forced action ended it
                finish(lv)
                continue
            yield ctx.request(lv)

    def on_reply(req: engine.Turn, smp) -> engine.Turn | None:
        lv = req.session
        if ctx.take_turn(lv, (req.prompt, smp)):
            finish(lv)
            return None
        return ctx.request(lv)

    rollout_engine = engine.rollout_engine(sampler, max(1, min(chunk_rows, len(mine))))
    t_run = time.perf_counter()
    try:
        rollout_engine.run(first_turns(), on_reply, max_new_tokens=ctx.max_new, temperature=r.temperature,
                           stop_ids=ctx.stop_ids)
    finally:
        bar.close()
        for env in envs:
            env.close()
        ctx.timing["sample_s"] = time.perf_counter() - t_run - ctx.timing["env_s"]
    if split_hosts:  # every host gets every rollout (the update is computed on all of them, as on one host)
        shares = allgather_json({"rollouts": {i: x.to_json() for i, x in done.items()}, "timing": ctx.timing})
        done = {int(i): Rollout.from_json(x) for share in shares for i, x in share["rollouts"].items()}
        for key in ("generated_tokens", "env_steps"):  # totals; the times stay this host's
            ctx.timing[key] = sum(share["timing"][key] for share in shares)
    if stats is not None:
        stats.update(ctx.timing)
    return [done[i] for i in sorted(done)]


class _RolloutContext:
    """What every turn of one :func:`collect_rollouts` call shares, and its timing counters."""

    def __init__(self, policy, sampler, cfg: Config, seed: int, max_new: int, max_invalid: int, reward: RewardSpec):
        self.policy, self.sampler, self.cfg, self.seed = policy, sampler, cfg, seed
        self.max_new, self.max_invalid, self.reward = max_new, max_invalid, reward
        self.stop_ids = stop_token_ids(policy.tokenizer, policy.template)
        self.timing = {"env_s": 0.0, "sample_s": 0.0, "generated_tokens": 0, "env_steps": 0}

    def begin(self, env, index: int, task: Task, group: str, member: int, branch) -> _Live:
        """Start an episode on ``env`` (a branch start replays its prefix; its first action is forced)."""
        t_env = time.perf_counter()
        ep = start_episode(env, task, seed=unit_seed(self.seed, group, member))
        live = _Live(ep, group, member, [], index)
        if branch is not None:
            _replay_prefix(ep, branch.prefix)
            live.forced = branch.action
        self.timing["env_s"] += time.perf_counter() - t_env
        return live

    def request(self, lv: _Live) -> engine.Turn:
        """The engine request of ``lv``'s next turn: its prompt and the turn's seed (seed, group, member, turn)."""
        prompt = self.policy.prompt_ids(lv.ep.state(), self.cfg.prompt, self.max_new)
        return engine.Turn(lv, prompt, unit_seed(self.seed, lv.group, lv.member, len(lv.turns)))

    def take_turn(self, lv: _Live, reply: tuple | None) -> bool:
        """Play ``lv``'s forced action or sampled ``reply``; record the turn and its reward; True when
        the episode ended."""
        policy = self.policy
        if lv.forced is not None:
            prompt = policy.prompt_ids(lv.ep.state(), self.cfg.prompt, self.max_new)
            text = action_target(lv.forced)
            ids = render_target(policy.tokenizer, policy.template, text).tolist()
            turn = Turn(prompt, ids, [], 0.0, True, state_key(prompt), forced=True)
            lv.forced = None
        else:
            prompt, smp = reply
            text = smp.text or ""
            self.timing["generated_tokens"] += len(smp.ids)
            turn = Turn(prompt, list(smp.ids), list(smp.logprobs), 0.0, True, state_key(prompt),
                        truncated=smp.finish_reason == "length")
        t_env = time.perf_counter()
        ended = advance_episode(lv.ep, text, self.max_invalid)
        self.timing["env_s"] += time.perf_counter() - t_env
        self.timing["env_steps"] += 1
        turn.valid = bool(lv.ep.transcript[-1]["valid"])
        turn.reward = 0.0 if turn.valid else -self.reward.invalid_penalty
        lv.turns.append(turn)
        if ended:
            turn.reward += self.reward.success_reward * lv.ep.won + self.reward.score_reward * lv.ep.score
        return ended


def with_turn_limit(cfg: Config):
    """The env config with ``rl.max_turns`` as its step limit when set."""
    if not cfg.rl.max_turns:
        return cfg.env
    return dataclasses.replace(cfg.env, max_steps=cfg.rl.max_turns)
