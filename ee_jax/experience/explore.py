"""Exploration (``ee-jax collect explore``): K alternative actions at every expert state, executed.

For each expert state ``s_i`` the stage picks K alternatives to the expert action ``a_i``:

* ``uniform``: admissible actions drawn without replacement, the expert's excluded (closed sets);
* ``policy``: the current model's replies to the policy prompt at temperature T, parsed, canonicalised
  (whitespace; matched case-insensitively to the admissible list) and deduplicated; an invalid
  proposal is replaced by a random admissible action, and a closed set short of K distinct proposals
  is topped up uniformly (both counted). Open action spaces keep the distinct proposals, invalid ones
  included: the environment's answer to them is experience too;
* ``mixed``: ``round(K * policy_fraction)`` from the policy, the rest uniform.

Policy calls are batched over ``batch_states`` states. Every alternative is executed through
branching (snapshot/restore, or prefix replay checked against the recorded observations), in
process or in an environment pool, and written with the expert's own transition as ``transition``
records. Randomness is seeded per (run seed, trajectory, step), so shards are reproducible alone.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

from ee_jax.agent.policy import run_policy
from ee_jax.config import Config, PromptConfig
from ee_jax.envs.base import Task
from ee_jax.envs.branching import branch_trajectory
from ee_jax.envs.pool import EnvPool
from ee_jax.envs.registry import make_env_from_config
from ee_jax.experience.expert import KIND as EXPERT
from ee_jax.models.engine import rollout_engine
from ee_jax.records.prompts import parse_action
from ee_jax.records.schema import State, make_record, record_state
from ee_jax.records.store import read_shard, run_sharded_stage, shard_path, stage_input
from ee_jax.rundir import RunDir
from ee_jax.seeds import unit_seed

KIND = "transition"


def canonical(action: str) -> str:
    return " ".join(action.split())


def uniform_alternatives(admissible, expert: str, k: int, rng: random.Random, exclude=()) -> list[str]:
    """Up to ``k`` admissible actions other than ``expert`` and ``exclude``, without replacement."""
    taken = {expert, *exclude}
    pool = [a for a in admissible if a not in taken]
    return rng.sample(pool, min(k, len(pool)))


def policy_count(strategy: str, k: int, policy_fraction: float, closed: bool) -> int:
    """How many of the K alternatives the policy proposes (all of them for open action spaces)."""
    if strategy == "uniform":
        return 0
    return k if strategy == "policy" or not closed else round(k * policy_fraction)


def choose_alternatives(state: State, expert: str, strategy: str, k: int, policy_fraction: float,
                        proposals: list[str], rng: random.Random) -> tuple[list[tuple[str, str]], dict]:
    """``[(action, source)]`` for one state, and counters (replaced, topped_up, duplicates, short)."""
    counts = {"proposals": len(proposals), "replaced": 0, "topped_up": 0, "duplicates": 0, "short": 0}
    closed = state.admissible is not None
    if strategy == "uniform":
        if not closed:
            raise ValueError("strategy=uniform needs a closed action space; this environment's is open: "
                             "use experience.explore.strategy=policy")
        return [(a, "uniform") for a in uniform_alternatives(state.admissible, expert, k, rng)], counts
    k_policy = policy_count(strategy, k, policy_fraction, closed)
    by_key = {canonical(a).lower(): a for a in state.admissible} if closed else {}
    chosen: list[tuple[str, str]] = []
    seen = {canonical(expert).lower()}
    for p in proposals:
        if len(chosen) >= k_policy:
            break
        key = canonical(p).lower()
        if not key or key in seen:
            counts["duplicates"] += 1
            continue
        if closed and key not in by_key:
            # invalid proposal -> a random admissible action (the paper's replacement rule)
            repl = uniform_alternatives(state.admissible, expert, 1, rng, exclude=[a for a, _ in chosen])
            if not repl:
                continue
            counts["replaced"] += 1
            key, p = canonical(repl[0]).lower(), repl[0]
            if key in seen:
                continue
        seen.add(key)
        chosen.append((by_key.get(key, canonical(p)), "policy"))
    if closed:
        want = k - len(chosen)
        fill = uniform_alternatives(state.admissible, expert, want, rng, exclude=[a for a, _ in chosen])
        counts["topped_up"] += len(fill) if strategy == "policy" else 0
        chosen += [(a, "uniform") for a in fill]
    if len(chosen) < k:
        counts["short"] += 1
    return chosen, counts


class PolicyProposer:
    """Samples candidate actions from a policy for many states at once."""

    def __init__(self, policy, cfg: Config):
        self.policy = policy
        self.sampler = policy.sampler()
        self.cfg = cfg
        self.max_rows = max(cfg.sampler.batch_buckets)

    def propose(self, states: list[State], keys: list[tuple], n_each: int) -> list[list[str]]:
        """``n_each`` parsed replies per state; ``keys`` seed each state's samples independently of batching."""
        x = self.cfg.experience.explore
        rows, seeds = [], []
        for state, key in zip(states, keys):
            ids = self.policy.prompt_ids(state, self.cfg.prompt, x.max_new_tokens)  # shortened as training does
            for j in range(n_each):
                rows.append(ids)
                seeds.append(unit_seed(self.cfg.seed, *key, j))
        out = rollout_engine(self.sampler, min(self.max_rows, max(1, len(rows)))).generate(
            rows, seeds, max_new_tokens=x.max_new_tokens, temperature=x.temperature)
        replies = [parse_action(s.text or "") for s in out]
        return [replies[i * n_each:(i + 1) * n_each] for i in range(len(states))]


def explore_item(env, item: dict) -> list[list[dict]]:
    """Pool work function: branch a trajectory's alternatives -> branches (JSON) per expert state."""
    task = Task.from_json(item["task"])
    rows = branch_trajectory(env, task, item["actions"], item["alternatives"], item["observations"])
    return [[b.to_json() for b in row] for row in rows]


def _trajectories(records: list[dict]) -> list[list[dict]]:
    by_traj: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_traj[r["traj_id"]].append(r)
    return [sorted(steps, key=lambda r: r["step"]) for steps in by_traj.values()]


def _transition(step: dict, action: str, obs: str, reward: float, done: bool, info: dict, source: str) -> dict:
    return make_record(KIND, env=step["env"], task_id=step["task_id"], split=step["split"],
                       traj_id=step["traj_id"], step=step["step"], state=step["state"], action=action,
                       next_observation=obs, reward=float(reward), done=bool(done), valid=bool(info["valid"]),
                       won=bool(info["won"]), score=float(info["score"]), is_expert=source == "expert",
                       source=source)


class _Timer:
    def __init__(self):
        self.env_s = self.policy_s = 0.0
        self.branches = 0
        self.t0 = time.perf_counter()

    def postfix(self) -> dict:
        wall = time.perf_counter() - self.t0
        return {"branches/s": f"{self.branches / max(wall, 1e-9):.0f}",
                "env": f"{self.env_s / max(wall, 1e-9):.0%}", "policy": f"{self.policy_s / max(wall, 1e-9):.0%}"}


def _choose_all(cfg: Config, trajs: list[list[dict]], proposals: list[list[str]], counters: dict) -> list:
    """The alternatives of every expert step (per trajectory, per step: ``[(action, source)]``), each from
    its own seeded generator; counts what was chosen in ``counters``."""
    x = cfg.experience.explore
    alternatives, i = [], 0
    for traj in trajs:
        per_step = []
        for s in traj:
            rng = random.Random(unit_seed(cfg.seed, s["traj_id"], s["step"]))
            chosen, c = choose_alternatives(record_state(s), s["action"], x.strategy, x.k, x.policy_fraction,
                                            proposals[i], rng)
            for key, v in c.items():
                counters[key] = counters.get(key, 0) + v
            per_step.append(chosen)
            i += 1
        alternatives.append(per_step)
    return alternatives


def _branch_records(trajs: list[list[dict]], alternatives: list, branches: list, counters: dict) -> list[dict]:
    """Transition records: each expert step, then its branched alternatives (counted in ``counters``)."""
    records = []
    for traj, per_step, rows in zip(trajs, alternatives, branches):
        for s, alts, row in zip(traj, per_step, rows):
            info = {"valid": s["valid"], "won": s["won"], "score": s["score"]}
            records.append(_transition(s, s["action"], s["next_observation"], s["reward"], s["done"], info,
                                       "expert"))
            for (action, source), b in zip(alts, row):
                records.append(_transition(s, action, b["observation"], b["reward"], b["done"], b["info"], source))
                counters["by_source"][source] = counters["by_source"].get(source, 0) + 1
                counters["invalid"] = counters.get("invalid", 0) + (not b["info"]["valid"])
            counters["branches"] += len(row)
    return records


def collect_explore(cfg: Config, *, overwrite: bool = False, progress: bool = True, policy=None) -> dict:
    """Branch K alternatives at every expert state of ``cfg.run_dir/data``; returns the manifest section."""
    x = cfg.experience.explore
    data_dir = RunDir(cfg.run_dir).data
    expert, expert_shards = stage_input(data_dir, EXPERT, "ee-jax collect expert")
    uses_policy = x.strategy != "uniform"
    if uses_policy and policy is None:
        policy = run_policy(cfg, x.policy_stage)
    settings = {"env": cfg.env.name, "strategy": x.strategy, "k": x.k, "seed": cfg.seed,
                "expert_sha256": expert["content_sha256"]}
    if uses_policy:
        settings.update(policy=policy.source, temperature=x.temperature, policy_fraction=x.policy_fraction,
                        proposals_per_alternative=x.proposals_per_alternative, max_new_tokens=x.max_new_tokens,
                        prompt=vars(cfg.prompt))
    proposer = PolicyProposer(policy, cfg) if uses_policy else None
    env = make_env_from_config(cfg.env)
    pool = EnvPool.from_config(cfg.env) if cfg.env.pool_workers else None
    timer = _Timer()

    def work(chunk: list[int], index: int) -> tuple[list[dict], dict]:
        trajs = _trajectories(read_shard(shard_path(data_dir, EXPERT, index), EXPERT))
        steps = [s for t in trajs for s in t]
        proposals: list[list[str]] = [[] for _ in steps]
        policy_s = 0.0
        if proposer is not None and policy_count(x.strategy, x.k, x.policy_fraction, env.action_space == "closed"):
            t0 = time.perf_counter()
            n_each = policy_count(x.strategy, x.k, x.policy_fraction, env.action_space == "closed") \
                * x.proposals_per_alternative
            for start in range(0, len(steps), x.batch_states):
                batch = steps[start:start + x.batch_states]
                proposals[start:start + len(batch)] = proposer.propose(
                    [record_state(s) for s in batch], [(s["traj_id"], s["step"]) for s in batch], n_each)
            policy_s = time.perf_counter() - t0
            timer.policy_s += policy_s
        counters: dict = {"states": len(steps), "trajectories": len(trajs), "branches": 0, "by_source": {}}
        alternatives = _choose_all(cfg, trajs, proposals, counters)
        items = [{"task": t[0]["task"], "actions": [s["action"] for s in t],
                  "observations": [s["state"]["observation"] for s in t] + [t[-1]["next_observation"]],
                  "alternatives": [[a for a, _ in alts] for alts in per_step]}
                 for t, per_step in zip(trajs, alternatives)]
        t0 = time.perf_counter()
        branches = pool.map("ee_jax.experience.explore:explore_item", items) if pool else [
            explore_item(env, it) for it in items]
        env_s = time.perf_counter() - t0
        timer.env_s += env_s
        records = _branch_records(trajs, alternatives, branches, counters)
        timer.branches += counters["branches"]
        counters["env_s"], counters["policy_s"] = round(env_s, 3), round(policy_s, 3)
        return records, counters

    try:
        # one unit per trajectory (for the progress bar); explore shard i is built from expert shard i
        chunks = [list(range(expert_shards[i]["counters"]["trajectories"])) for i in sorted(expert_shards)]
        section = run_sharded_stage(data_dir, KIND, chunks, settings, work, overwrite=overwrite,
                                    progress=progress, desc=f"explore {cfg.env.name}", unit_name="traj",
                                    postfix=timer.postfix, barrier_timeout_s=cfg.distributed.barrier_timeout_s,
                                    defaults={"prompt": vars(PromptConfig())})
    finally:
        env.close()
        if pool is not None:
            pool.close()
    wall = time.perf_counter() - timer.t0
    section["timing"] = {"env_s": timer.env_s, "policy_s": timer.policy_s, "wall_s": wall,
                         "branches": timer.branches, "branches_per_s": timer.branches / max(wall, 1e-9)}
    return section
