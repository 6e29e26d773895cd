"""One process of the 2-process collection test (run by tests/test_experience_multihost.py)."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

from ee_jax.config import DistributedConfig, load_config  # noqa: E402
from ee_jax.parallel import initialize_distributed  # noqa: E402


def main(pid: int, port: int, overrides: list[str]) -> None:
    initialize_distributed(DistributedConfig(enabled=True, auto=False, coordinator_address=f"127.0.0.1:{port}",
                                             num_processes=2, process_id=pid, initialization_timeout_s=60))
    from ee_jax.experience.collect import run_stage

    cfg = load_config(None, overrides)
    sections = {stage: run_stage(cfg, stage, progress=False) for stage in ("expert", "explore", "reflect")}
    print(json.dumps({"pid": pid, "process_count": jax.process_count(),
                      "records": {k: s.get("records") for k, s in sections.items()}}))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
