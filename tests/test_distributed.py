"""Two real processes on localhost under jax.distributed (gloo), 4 CPU devices each."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.conftest import TINY

OVERRIDES = TINY + ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def test_two_process_training_matches_single_process():
    port = portpicker.pick_unused_port()
    worker = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    procs = [subprocess.Popen([sys.executable, worker, str(pid), str(port), *OVERRIDES], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["process_count"] for o in outs] == [2, 2] and outs[0]["devices"] == 8
    assert outs[0]["losses"] == outs[1]["losses"]

    # The same global batches in one process on 8 local devices.
    import jax

    from ee_jax.config import load_config
    from ee_jax.parallel import make_mesh
    from ee_jax.train import create_train_state, make_batch, make_optimizer, make_train_step

    cfg = load_config(None, OVERRIDES)
    mesh = make_mesh(cfg, jax.devices())
    tx = make_optimizer(cfg.optimizer, 10)
    gdef, state, shard = create_train_state(cfg, tx, mesh)
    step = make_train_step(gdef, tx, shard, mesh)
    rng = np.random.default_rng(0)
    ref = []
    for _ in range(3):
        tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1))
        state, metrics = step(state, make_batch(tokens))
        ref.append(float(metrics["loss"]))
    np.testing.assert_allclose(outs[0]["losses"], ref, rtol=1e-5)
