"""The policy acting in its environment: episodes on a fixed task list, played on the rollout engine.

Every evaluated method sees the same tasks, ``env.make_tasks(split, n)`` (the first ``n`` of the
split), ``eval.samples`` episodes each. Episodes run on :class:`~ee_jax.models.engine.RolloutEngine`
(``eval.batch_size`` rows, continuous batching, each episode's KV cache kept between its turns); under
``jax.distributed`` each host plays every ``process_count``-th episode and the episodes are gathered. Every
turn samples with its own seed derived from (seed, task index, sample index, step): an episode's actions
do not depend on what it is batched with. A state is built exactly as expert collection builds it
(:func:`~ee_jax.experience.expert.play_trajectory`): the task's goal, every earlier (action,
observation) step, the current observation and the admissible actions read before acting; the prompt is
:meth:`~ee_jax.agent.policy.Policy.prompt_ids` of that state, and the reply is parsed with
:func:`~ee_jax.records.prompts.parse_action`, the renderer's own inverse.

An episode ends when it is won, when the environment ends it (``done``: lost), at the step limit
(``max_steps``), or after ``eval.max_invalid`` invalid actions (``max_invalid``; 0 = no such limit).
"""

from __future__ import annotations

import dataclasses

from tqdm import tqdm

from ee_jax.config import Config
from ee_jax.envs.base import Env, Task
from ee_jax.envs.registry import make_env_from_config
from ee_jax.models.engine import EngineStats, Turn, episode_share, rollout_engine
from ee_jax.parallel.distributed import allgather_json
from ee_jax.records.prompts import parse_action
from ee_jax.records.schema import State, Step
from ee_jax.seeds import unit_seed
from ee_jax.tokenizer import stop_token_ids


@dataclasses.dataclass
class Episode:
    """One episode in progress: where it is, and what has happened so far."""

    task: Task
    task_index: int
    sample: int
    seed: int
    env: Env | None
    observation: str = ""
    admissible: tuple[str, ...] | None = None
    history: list[Step] = dataclasses.field(default_factory=list)
    transcript: list[dict] = dataclasses.field(default_factory=list)
    reward: float = 0.0
    score: float = 0.0
    won: bool = False
    invalid: int = 0
    ended: str | None = None

    def state(self) -> State:
        """What the policy sees now (built as expert collection builds it)."""
        return State(self.task.goal, tuple(self.history), self.observation, self.admissible)

    def step_seed(self) -> int:
        """The sampling seed of the next action: (episode seed, step)."""
        return unit_seed(self.seed, len(self.transcript))

    def to_json(self) -> dict:
        """The episode line of ``eval/STAGE/SPLIT.jsonl``."""
        return {"task_id": self.task.id, "split": self.task.split, "sample": self.sample, "seed": self.seed,
                "goal": self.task.goal, "won": self.won, "score": self.score, "reward": self.reward,
                "steps": len(self.transcript), "invalid": self.invalid, "ended": self.ended,
                "transcript": self.transcript, "final_observation": self.observation}


def start_episode(env: Env, task: Task, task_index: int = 0, sample: int = 0, seed: int = 0) -> Episode:
    """Reset ``env`` to ``task``; the episode's seed is derived from (seed, task index, sample)."""
    ep = Episode(task, task_index, sample, unit_seed(seed, task_index, sample), env)
    ep.observation = env.reset(task)
    ep.admissible = _admissible(env)
    return ep


def _admissible(env: Env) -> tuple[str, ...] | None:
    adm = env.admissible_actions()
    return None if adm is None else tuple(adm)


def advance_episode(ep: Episode, reply: str, max_invalid: int) -> bool:
    """Act on ``reply`` (parsed with ``parse_action``) in the episode's environment; True once it ended."""
    action = parse_action(reply)
    seen = ep.observation
    result = ep.env.step(action)
    info = result.info
    valid = bool(info["valid"])
    ep.transcript.append({"observation": seen, "reply": reply, "action": action, "valid": valid,
                          "reward": float(result.reward), "done": bool(result.done)})
    ep.history.append(Step(action, result.observation))
    ep.observation = result.observation
    ep.reward += float(result.reward)
    ep.score = float(info["score"])
    ep.won = bool(info["won"])
    ep.invalid += not valid
    if ep.won:
        ep.ended = "won"
    elif result.done:
        ep.ended = "max_steps" if info.get("truncated") else "done"
    elif max_invalid and ep.invalid >= max_invalid:
        ep.ended = "max_invalid"
    else:
        ep.admissible = _admissible(ep.env)
    return ep.ended is not None


def eval_difficulty(cfg: Config) -> int | None:
    """The difficulty of the evaluation tasks: ``eval.difficulty``, else ``env.difficulty``, else the
    environment's default (None)."""
    return cfg.eval.difficulty or cfg.env.difficulty or None


def run_episodes(policy, cfg: Config, split: str, *, n_tasks: int | None = None, sampler=None,
                 progress: bool = True, seed: int | None = None, engine_stats: dict | None = None) -> list[dict]:
    """Episodes of ``policy`` on the first ``n_tasks`` (default ``eval.tasks``) tasks of ``split``.

    Played on the sampler's :class:`~ee_jax.models.engine.RolloutEngine` with ``eval.batch_size`` rows:
    an episode keeps its row (and the KV cache of its earlier turns) until it ends, then the row takes
    the next pending episode. Each turn samples with the episode's own seed for that step, so an
    episode's actions do not depend on which episodes share the batch.

    Args:
        policy: a :class:`~ee_jax.agent.policy.Policy` (tokenizer, template, context length).
        cfg: ``eval`` (samples, temperature, max_new_tokens, max_invalid, batch_size, difficulty),
            ``env`` (name, options, max_steps, difficulty), ``prompt`` and ``seed``.
        split: ``train`` | ``valid`` | ``test`` | ``ood``.
        sampler: a Sampler to reuse (its compiled functions; ``sampler.params`` is read per call), else
            ``policy.sampler()``.
        progress: show a tqdm bar over episodes.
        seed: default ``cfg.seed``.
        engine_stats: if given, updated with the engine's counters for this call (:class:`EngineStats`;
            summed over hosts) and ``episodes_per_host``.

    Returns:
        One dict per episode (see :meth:`Episode.to_json`), in (task, sample) order.
    """
    e = cfg.eval
    n_tasks = e.tasks if n_tasks is None else int(n_tasks)
    seed = cfg.seed if seed is None else int(seed)
    sampler = policy.sampler() if sampler is None else sampler
    stop_ids = stop_token_ids(policy.tokenizer, policy.template)
    envs = [make_env_from_config(cfg.env)]
    free = list(envs)
    finished: dict[tuple[int, int], dict] = {}
    try:
        tasks = envs[0].make_tasks(split, n_tasks, difficulty=eval_difficulty(cfg))
        order = [(i, s) for i in range(len(tasks)) for s in range(e.samples)]
        share = episode_share(sampler, len(order))  # several hosts: this one's episodes, gathered below
        split_hosts = share is not None
        if split_hosts:
            order = [order[j] for j in share]
        engine = rollout_engine(sampler, max(1, min(e.batch_size, len(order))))
        before = dataclasses.replace(engine.stats)
        bar = tqdm(total=len(order), desc=f"eval {cfg.env.name}/{split}", unit="ep", disable=not progress)

        def turn(ep: Episode) -> Turn:
            return Turn(ep, policy.prompt_ids(ep.state(), cfg.prompt, e.max_new_tokens), ep.step_seed())

        def first_turns():
            for i, s in order:  # an environment per live episode, made as rows free up
                if not free:
                    envs.append(make_env_from_config(cfg.env))
                    free.append(envs[-1])
                yield turn(start_episode(free.pop(), tasks[i], i, s, seed))

        def on_reply(t: Turn, sample) -> Turn | None:
            ep = t.session
            if not advance_episode(ep, sample.text or "", e.max_invalid):
                return turn(ep)
            finished[(ep.task_index, ep.sample)] = ep.to_json()
            free.append(ep.env)
            ep.env = None
            bar.update(1)
            bar.set_postfix(success=f"{sum(f['won'] for f in finished.values())}/{len(finished)}")
            return None

        try:
            engine.run(first_turns(), on_reply, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                       stop_ids=stop_ids)
        finally:
            bar.close()
        after = engine.stats.to_json()
        counts = {k: v - getattr(before, k) for k, v in after.items() if hasattr(before, k)}
        shares = [{"episodes": [[i, s, ep] for (i, s), ep in finished.items()], "engine": counts}]
        if split_hosts:
            shares = allgather_json(shares[0])
            finished = {(i, s): ep for share in shares for i, s, ep in share["episodes"]}
        if engine_stats is not None:  # totals over hosts, and how many episodes each host played
            engine_stats.update({k: sum(share["engine"][k] for share in shares) for k in counts})
            engine_stats.update(EngineStats(**{k: engine_stats[k] for k in counts}).to_json())
            engine_stats["episodes_per_host"] = [share["engine"]["sessions"] for share in shares]
        return [finished[key] for key in sorted(finished)]
    finally:
        for env in envs:
            env.close()
