"""Read a run's results: evaluations (checked against their episode logs), training budgets, metrics.

The per-episode JSONL logs are the source of truth: every evaluation summary (``eval/METHOD.json``)
is recomputed from the episodes it points to, and a summary that disagrees with its log is an error
naming both files. Everything the report shows comes from the recomputed numbers, computed by the
same :func:`ee_jax.eval.metrics.summarize_episodes` that wrote the summaries.

Layout read (``ee-jax run``)::

    RUN/config.yaml
    RUN/seeds/S/eval/METHOD.json          summary per split (+ world-model metrics)
    RUN/seeds/S/eval/METHOD/SPLIT.jsonl   one episode per line
    RUN/seeds/S/train/METHOD.json         training budget and checkpoint selection
    RUN/seeds/S/metrics.jsonl             {"step": N, "STAGE/train/loss": ..., ...}

A plain run directory without ``seeds/`` (``RUN/eval/METHOD.json``) counts as one seed.
"""

from __future__ import annotations

import json
import math
import os

from ee_jax.eval.metrics import summarize_episodes
from ee_jax.rundir import RunDir

METHOD_ORDER = ("il", "il_matched", "iwm", "sr")
# Numbers recomputed from the episodes are compared with the summary to this absolute tolerance:
# loose enough for a different summation order, far tighter than one episode of any real split.
TOLERANCE = 1e-6


class ReportError(ValueError):
    """Results are missing or inconsistent; the message names the file(s) involved."""


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_episodes(path: str) -> list[dict]:
    """The episodes of one JSONL log; a clear error naming the file and line when one is malformed."""
    if not os.path.exists(path):
        raise ReportError(f"{path}: episode log not found (the evaluation summary points to it)")
    episodes = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ep = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{path} line {i}: not valid JSON ({e})") from None
            missing = [k for k in ("task_id", "won", "score", "reward", "steps", "invalid", "ended") if k not in ep]
            if missing:
                raise ReportError(f"{path} line {i}: episode lacks field(s) {missing}")
            episodes.append(ep)
    return episodes


def _differs(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):  # counts: a reason with 0 episodes may be left out
        return any(_differs(a.get(k, 0), b.get(k, 0)) for k in set(a) | set(b))
    if isinstance(a, dict) or isinstance(b, dict):
        return True
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        if not isinstance(a, list | tuple) or not isinstance(b, list | tuple) or len(a) != len(b):
            return True
        return any(_differs(x, y) for x, y in zip(a, b))
    try:
        return not math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=TOLERANCE)
    except (TypeError, ValueError):
        return a != b


def check_split(summary: dict, episodes_path: str, eval_path: str, split: str) -> dict:
    """Recompute ``summary`` (one split of ``eval_path``) from ``episodes_path`` and return the
    recomputed numbers, plus ``per_task`` (task id -> share of its episodes won, for paired statistics); a
    :class:`ReportError` naming both files when any reported number differs."""
    episodes = read_episodes(episodes_path)
    if not episodes:
        raise ReportError(f"{episodes_path}: no episodes, but {eval_path} reports split {split!r}")
    wrong = sorted({str(e.get("split")) for e in episodes if e.get("split", split) != split})
    if wrong:
        raise ReportError(f"{episodes_path}: holds episodes of split(s) {wrong}, expected only {split!r}")
    ks = sorted(int(key[5:]) for key in summary if key.startswith("pass@") and key[5:].isdigit())
    try:
        got = summarize_episodes(episodes, ks or [1])
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{episodes_path}: cannot recompute the summary of {eval_path} split {split!r}: "
                          f"{type(e).__name__}: {e}") from None
    for key, value in summary.items():
        if key in got and _differs(value, got[key]):
            raise ReportError(f"{eval_path}: splits.{split}.{key} = {value!r}, but its episode log {episodes_path} "
                              f"gives {got[key]!r}; the summary and the log disagree (rerun the evaluation)")
    won: dict[str, list[float]] = {}
    for e in episodes:
        won.setdefault(str(e["task_id"]), []).append(float(bool(e["won"])))
    return {**got, "per_task": {t: sum(v) / len(v) for t, v in won.items()}}


def check_eval(path: str, seed_dir: str) -> dict:
    """One ``eval/METHOD.json`` with every split recomputed from its episode log (see :func:`check_split`)."""
    data = _read_json(path)
    splits = data.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise ReportError(f"{path}: no 'splits' with results")
    stage = data.get("stage") or os.path.splitext(os.path.basename(path))[0]
    method = os.path.splitext(os.path.basename(path))[0]
    out = {key: data.get(key) for key in ("stage", "source", "seed", "env", "difficulty", "settings", "created")}
    out["stage"] = stage
    out["file"] = os.path.relpath(path, seed_dir)
    out["world_model"] = data.get("world_model") or None
    out["splits"] = {}
    for split, summary in splits.items():
        if not isinstance(summary, dict):
            raise ReportError(f"{path}: splits.{split} is not an object")
        rel = summary.get("episodes_file") or os.path.relpath(RunDir(seed_dir).episodes(method, split), seed_dir)
        got = check_split(summary, os.path.join(seed_dir, rel), path, split)
        out["splits"][split] = {**got, "episodes_file": rel}
    return out


def seed_dirs(run_dir: str) -> dict[int, str]:
    """``{seed: directory}``: ``RUN/seeds/S`` for each integer S, or the run itself when it has no
    ``seeds/`` (its seed from an eval summary, else its config, else 0)."""
    root = RunDir(run_dir).seeds_dir
    if os.path.isdir(root):
        out = {int(name): os.path.join(root, name) for name in os.listdir(root)
               if name.lstrip("-").isdigit() and os.path.isdir(os.path.join(root, name))}
        if out:
            return dict(sorted(out.items()))
    return {_own_seed(run_dir): run_dir}


def _own_seed(run_dir: str) -> int:
    eval_dir = RunDir(run_dir).eval_dir
    if os.path.isdir(eval_dir):
        for name in sorted(os.listdir(eval_dir)):
            if name.endswith(".json"):
                seed = _read_json(os.path.join(eval_dir, name)).get("seed")
                if isinstance(seed, int):
                    return seed
    cfg = read_config(run_dir)
    return int(cfg.get("seed", 0)) if isinstance(cfg.get("seed", 0), int) else 0


def read_config(run_dir: str) -> dict:
    """``RUN/config.yaml`` as plain data ({} when absent): read as YAML, not through the schema, so a
    report can still be written for a run made by an older version."""
    import yaml

    path = RunDir(run_dir).config
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ReportError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping at top level")
    return data


def read_metric_series(seed_dir: str) -> dict[str, list[list[float]]]:
    """``{key: [[step, value], ...]}`` from ``metrics.jsonl``, sorted by step, numeric values only.

    After a resume the steps between the last checkpoint and the interruption appear twice; the LAST
    record per (key, step) wins. A final line cut short by a crash is skipped; a bad line elsewhere
    is an error naming the file and line.
    """
    path = RunDir(seed_dir).metrics
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    series: dict[str, dict[int, float]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # an append interrupted mid-line
                break
            raise ReportError(f"{path} line {i}: not valid JSON ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int | float):
            raise ReportError(f"{path} line {i}: expected an object with a numeric 'step'")
        for key, value in rec.items():
            if key not in ("step", "time") and isinstance(value, int | float) and not isinstance(value, bool):
                series.setdefault(key, {})[int(rec["step"])] = float(value)
    return {k: [[s, v] for s, v in sorted(d.items())] for k, d in sorted(series.items())}


def _ordered(names) -> list[str]:
    names = set(names)
    rl = [f"{a}_from_{m}" for a in ("grpo", "ppo") for m in (*METHOD_ORDER, "init")]
    known = [m for m in (*METHOD_ORDER, *rl) if m in names]
    return known + sorted(names - set(known))


def collect_results(run_dir: str) -> dict:
    """Every seed's evaluations (recomputed from their episode logs), training budgets and metrics.

    Returns ``{"run_dir", "seeds": [int], "methods": [str], "splits": [str], "config": dict,
    "evals": {method: {seed: eval}}, "training": {method: {seed: train json}},
    "metrics": {seed: {key: [[step, value], ...]}}}`` with seeds as string keys (as in JSON). Each
    ``eval`` has ``stage``, ``source``, ``env``, ``difficulty``, ``settings``, ``file``,
    ``world_model`` and ``splits: {split: summary recomputed from the episodes}``.

    Raises:
        ReportError: no evaluation at all under ``run_dir``, a malformed file, or a summary that
            disagrees with its episode log (naming the files).
    """
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: run directory not found")
    seeds = seed_dirs(run_dir)
    evals: dict[str, dict[str, dict]] = {}
    training: dict[str, dict[str, dict]] = {}
    metrics: dict[str, dict] = {}
    splits: list[str] = []
    for seed, sdir in seeds.items():
        eval_dir = RunDir(sdir).eval_dir
        for name in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []:
            if name.endswith(".json"):
                ev = check_eval(os.path.join(eval_dir, name), sdir)
                evals.setdefault(name[:-5], {})[str(seed)] = ev
                splits += [s for s in ev["splits"] if s not in splits]
        train_dir = RunDir(sdir).train_dir
        for name in sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else []:
            if name.endswith(".json"):
                training.setdefault(name[:-5], {})[str(seed)] = _read_json(os.path.join(train_dir, name))
        metrics[str(seed)] = read_metric_series(sdir)
    if not evals:
        raise ReportError(f"{run_dir}: no evaluation results (expected seeds/S/eval/METHOD.json or eval/METHOD.json)")
    methods = _ordered(evals)
    config = read_config(run_dir) or read_config(next(iter(seeds.values())))
    return {
        "run_dir": os.path.abspath(run_dir), "seeds": list(seeds), "methods": methods, "splits": splits,
        "config": config,
        "evals": {m: evals[m] for m in methods},
        "training": {m: training[m] for m in _ordered(training)},
        "metrics": metrics,
    }
