"""One process of the host-barrier tests (run by tests/test_distributed.py).

``tokenizer``: the scratch tokenizer under jax.distributed when one host looks for it only after
process 0 has trained it (a slow host); both must still meet at the same barrier, then at a collective.
``timeout``: process 0 waits at a barrier process 1 never reaches.
"""

import json
import os
import sys
import time

import jax
import numpy as np

jax.config.update("jax_num_cpu_devices", 1)

from ee_jax.config import DistributedConfig, load_config  # noqa: E402
from ee_jax.parallel import host_barrier, initialize_distributed  # noqa: E402

LINES = [f"{verb} {obj} {i} {prep} {place} {j}" for i in range(1, 6) for j in range(1, 6)
         for verb, obj, prep, place in (("take", "apple", "from", "table"), ("put", "mug", "in", "fridge"),
                                        ("open", "drawer", "near", "sink"), ("go", "to", "the", "kitchen"))]


def main(pid: int, port: int, run_dir: str, case: str) -> None:
    initialize_distributed(DistributedConfig(enabled=True, auto=False, coordinator_address=f"127.0.0.1:{port}",
                                             num_processes=2, process_id=pid, initialization_timeout_s=60))
    jax.devices()  # the backend starts with a topology exchange between the hosts: both before anything else
    out: dict = {"pid": pid}
    if case == "tokenizer":
        from jax.experimental import multihost_utils

        import ee_jax.data.tokenizer_corpus as corpus

        corpus.corpus_lines = lambda *a, **k: LINES  # the barrier is under test here, not the corpus
        cfg = load_config(None, [f"run_dir={run_dir}", "tokenizer.vocab_size=300", "distributed.barrier_timeout_s=30"])
        if pid == 1:  # the slow host: it looks for the tokenizer only once process 0 has written it
            while not os.path.exists(os.path.join(run_dir, "tokenizer", "spm.model")):
                time.sleep(0.05)
        out["vocab"] = corpus.ensure_tokenizer(cfg).vocab_size
        out["gathered"] = multihost_utils.process_allgather(np.array([pid + 1])).ravel().tolist()
    else:
        if pid == 0:
            try:
                host_barrier("ee_jax_test_lonely", 2)
            except TimeoutError as e:
                out["error"] = str(e)
        else:
            time.sleep(4)
    print(json.dumps(out), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
