"""Which checkpoint of a stage is reported: the same rule for every method.

``last``: the final step. ``best``: the evaluation step with the highest score on the *valid* split
(never the test split): valid-episode success (ties go to the lower valid loss, then to the later
step) or, with ``select_metric=loss``, the lowest valid loss of the stage's objective. The choice is
written to ``ckpt/STAGE/selection.json`` and :func:`ee_jax.agent.policy.load_policy` loads that step.
"""

from __future__ import annotations

import json
import os

from ee_jax.files import atomic_write_text, read_json

SELECTION_FILE = "selection.json"


def score(metrics: dict, metric: str) -> float | None:
    """Higher is better. None when the metric was not measured at this evaluation."""
    loss = metrics.get("loss")
    if metric == "success":
        if metrics.get("success") is None:
            return None
        return float(metrics["success"]) - 1e-4 * min(float(loss), 1e3) if loss is not None else float(
            metrics["success"])
    return None if loss is None else -float(loss)


def choose(evaluations: list[dict], last_step: int, rule: str, metric: str) -> dict:
    """The selection record: rule, metric, chosen step and its metrics, all evaluations seen."""
    scored = [(e["score"], e["step"], e) for e in evaluations if e.get("score") is not None]
    if rule == "best" and scored:
        _, step, best = max(scored, key=lambda t: (t[0], t[1]))
        return {"rule": "best", "metric": metric, "step": step, "metrics": best, "evaluations": evaluations}
    why = "" if rule == "last" else " (no valid evaluation to choose by)"
    return {"rule": "last" + why, "metric": metric, "step": last_step, "metrics": None, "evaluations": evaluations}


def write_selection(ckpt_dir: str, record: dict) -> None:
    """Write the selection record as ``CKPT_DIR/selection.json`` (atomically)."""
    atomic_write_text(os.path.join(ckpt_dir, SELECTION_FILE), json.dumps(record, indent=1))


def selected_step(ckpt_dir: str) -> int | None:
    """The step ``selection.json`` names, or None when the stage has no selection (use the latest)."""
    path = os.path.join(ckpt_dir, SELECTION_FILE)
    if not os.path.exists(path):
        return None
    return int(read_json(path, "delete it to use the newest checkpoint of the stage")["step"])
