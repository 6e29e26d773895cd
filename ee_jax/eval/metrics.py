"""Episode metrics: success with a Wilson interval, unbiased pass@k, and the summary of an episode list.

Pure functions over the episode dicts :func:`~ee_jax.agent.episodes.run_episodes` returns (or reads back
from ``eval/STAGE/SPLIT.jsonl``), so a summary can always be recomputed from the episode files.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

ENDED = ("won", "done", "max_steps", "max_invalid")
"""Why an episode ended: won; the environment ended it otherwise (lost); its step limit; its invalid-action
budget."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``z=1.96``: 95%); ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n successes,
    which matters for the small task lists agents are evaluated on.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` succeeded: ``1 - C(n-c, k) / C(n, k)``.

    The probability that at least one of ``k`` samples drawn without replacement from the ``n``
    succeeds (Chen et al., 2021), computed as a product so large ``n`` cannot overflow.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize_episodes(episodes: list[dict], pass_k: list[int] | tuple[int, ...] = (1,)) -> dict:
    """Aggregate metrics of ``episodes`` (dicts with task_id, won, score, reward, steps, invalid, ended).

    Returns ``episodes``, ``tasks``, ``success`` (mean of won over episodes) with ``success_ci95``
    (Wilson), ``score``, ``reward`` and ``steps`` (means over episodes), ``invalid_rate`` (invalid
    actions / actions taken), ``pass@K`` for each K (mean over tasks of the unbiased estimator on that
    task's samples) and ``ended`` (episodes per end reason). Episodes are grouped into tasks by
    ``(split, task_id)``.
    """
    by_task: dict[tuple, list[bool]] = defaultdict(list)
    for ep in episodes:
        by_task[(ep.get("split"), ep["task_id"])].append(bool(ep["won"]))
    wins = sum(bool(ep["won"]) for ep in episodes)
    actions = sum(int(ep["steps"]) for ep in episodes)
    lo, hi = wilson_interval(wins, len(episodes))
    out = {
        "episodes": len(episodes),
        "tasks": len(by_task),
        "success": wins / len(episodes) if episodes else 0.0,
        "success_ci95": [lo, hi],
        "score": _mean([float(ep["score"]) for ep in episodes]),
        "reward": _mean([float(ep["reward"]) for ep in episodes]),
        "invalid_rate": sum(int(ep["invalid"]) for ep in episodes) / actions if actions else 0.0,
        "steps": _mean([float(ep["steps"]) for ep in episodes]),
    }
    for k in pass_k:
        short = [key for key, won in by_task.items() if len(won) < k]
        if short:
            raise ValueError(f"pass@{k} needs at least {k} episodes per task; task {short[0][1]!r} has "
                             f"{len(by_task[short[0]])} (raise eval.samples or lower eval.pass_k)")
        out[f"pass@{k}"] = _mean([pass_at_k(len(won), sum(won), k) for won in by_task.values()])
    counts = Counter(ep["ended"] for ep in episodes)
    out["ended"] = {reason: counts.get(reason, 0) for reason in ENDED}
    out["ended"].update({r: n for r, n in counts.items() if r not in ENDED})  # keep unknown reasons visible
    return out
