"""One process of the 2-process jax.distributed test (run by tests/test_distributed.py)."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

from ee_jax.config import DistributedConfig, load_config  # noqa: E402
from ee_jax.parallel import initialize_distributed, make_mesh  # noqa: E402


def main(pid: int, port: int, overrides: list[str]) -> None:
    initialize_distributed(DistributedConfig(enabled=True, auto=False, coordinator_address=f"127.0.0.1:{port}",
                                             num_processes=2, process_id=pid, initialization_timeout_s=60))
    import numpy as np

    from ee_jax.train import create_train_state, global_batch, make_batch, make_optimizer, make_train_step

    cfg = load_config(None, overrides)
    mesh = make_mesh(cfg)
    tx = make_optimizer(cfg.optimizer, 10)
    gdef, state, shard = create_train_state(cfg, tx, mesh)
    step = make_train_step(gdef, tx, shard, mesh)
    rng = np.random.default_rng(0)
    losses = []
    half = cfg.train.batch_size // 2
    for _ in range(3):
        tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1))
        local = make_batch(tokens[pid * half:(pid + 1) * half])  # this host's rows only
        state, metrics = step(state, global_batch(local, mesh))
        losses.append(float(metrics["loss"]))
    print(json.dumps({"pid": pid, "process_count": jax.process_count(), "devices": jax.device_count(),
                      "losses": losses}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
