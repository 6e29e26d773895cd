"""World-model metrics: how well the model predicts the next observation of held-out transitions.

The transitions are rendered exactly as implicit world modeling trains on them (the ``iwm`` pipeline:
``world_model_prompt(state, action)`` -> ``world_model_target(next_observation)`` + end of turn), one
example per row (packing off), in store order (no shuffle), so the numbers are deterministic. Under
teacher forcing, per transition:

* ``token_accuracy``: share of target tokens (the next observation and its end-of-turn) whose logit is
  the maximum of their row (the train step's accuracy rule), pooled over all target tokens;
* ``exact_match``: share of transitions whose every target token is predicted;
* ``loss``: mean cross-entropy per target token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ee_jax.config import Config
from ee_jax.data.batch import BATCH_KEYS, batch_sharding
from ee_jax.data.experience_dataset import dataset_sizes, experience_batches, to_train_batch
from ee_jax.models.factory import apply_model
from ee_jax.parallel.rules import use_mesh
from ee_jax.rundir import RunDir


def _row_sums(graphdef, params, batch):
    """Totals over a batch: (ce, target tokens, correct tokens, transitions, exactly predicted transitions)."""
    logits, _ = apply_model(graphdef, params, batch["inputs"], batch["positions"], batch["segment_ids"])
    logits = logits.astype(jnp.float32)
    w = batch["weights"].astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    correct = (target >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    tokens = jnp.sum(w, axis=-1)
    wrong = jnp.sum(w * (1.0 - correct), axis=-1)
    rows = tokens > 0  # padding rows of the last batch carry no target
    return {"loss_sum": jnp.sum((lse - target) * w), "tokens": jnp.sum(tokens), "correct": jnp.sum(w * correct),
            "transitions": jnp.sum(rows), "exact": jnp.sum(rows & (wrong == 0))}


_row_sums_jit = jax.jit(_row_sums, static_argnums=0)  # module level: one compilation per model and shape


def world_model_metrics(policy, cfg: Config, *, data_dir: str | None = None, split: str = "valid",
                        limit: int | None = None) -> dict | None:
    """Teacher-forced next-observation metrics of ``policy`` on the first ``limit`` transitions of ``split``.

    Args:
        policy: the :class:`~ee_jax.agent.policy.Policy` (weights, tokenizer, mesh).
        cfg: ``data``, ``prompt``, ``tokenizer.template`` and ``train.seq_len``, as the ``iwm`` pipeline
            uses them; ``train.batch_size`` rows per batch (rounded up to the data-parallel devices).
        data_dir: the experience store (default ``cfg.run_dir/data``).
        split: the transitions' split (held out from training: ``valid`` by default).
        limit: first N transitions (default ``eval.wm_transitions``; 0 -> None).

    Returns:
        ``{"split", "transitions", "token_accuracy", "exact_match", "loss", "target_tokens",
        "dropped_too_long"}``, or None when ``limit`` is 0 or the split has no transitions.
    """
    limit = cfg.eval.wm_transitions if limit is None else int(limit)
    data_dir = data_dir if data_dir is not None else RunDir(cfg.run_dir).data
    if limit <= 0 or dataset_sizes(cfg, "iwm", split, data_dir)["transition"] == 0:
        return None
    # one example per row: a transition's tokens are then exactly one row's weighted targets
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, packing=False))
    dp = policy.mesh.shape["data"] * policy.mesh.shape["fsdp"]
    rows = -(-cfg.train.batch_size // dp) * dp  # the batch axis is sharded over the data-parallel devices
    it = experience_batches(cfg, "iwm", policy.tokenizer, data_dir=data_dir, split=split, shuffle=False,
                            repeat=False, batch_size=rows)
    pid, nproc = jax.process_index(), jax.process_count()
    local_limit = len(range(pid, limit, nproc))  # this host's share of the first `limit` (shares interleave)
    sharding = batch_sharding(policy.mesh)
    totals = dict.fromkeys(("loss_sum", "tokens", "correct", "transitions", "exact"), 0.0)
    seen = 0
    try:
        for item in it:
            if seen >= local_limit:
                break
            batch = to_train_batch(item)
            has_target = batch["weights"].sum(axis=1) > 0
            keep = np.cumsum(has_target) + seen <= local_limit
            batch["weights"] = batch["weights"] * keep[:, None]
            seen += int(np.count_nonzero(has_target & keep))
            glob = {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in BATCH_KEYS}
            with use_mesh(policy.mesh):
                out = jax.device_get(_row_sums_jit(policy.graphdef, policy.params, glob))
            for k in totals:
                totals[k] += float(out[k])
        stats = it.stats()
    finally:
        it.close()
    n, tokens = int(totals["transitions"]), totals["tokens"]
    return {"split": split, "transitions": n,
            "token_accuracy": totals["correct"] / tokens if tokens else 0.0,
            "exact_match": totals["exact"] / n if n else 0.0,
            "loss": totals["loss_sum"] / tokens if tokens else 0.0,
            "target_tokens": int(tokens), "dropped_too_long": int(stats["dropped_too_long"].get("transition", 0))}
