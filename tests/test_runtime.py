"""Process-level settings: the tuned allocator keeps freed memory, and ``release_memory`` hands it back."""

import json
import subprocess
import sys

PROBE = """
import json
import jax  # noqa: F401  (release_memory imports it; import first so it is in the baseline)
import numpy as np
from ee_jax import runtime
assert runtime.configure_malloc()
base = runtime.resident_memory_gb()[0]
block = np.ones(600_000_000 // 8)   # 600 MB from the heap (mmap is off under configure_malloc)
held = runtime.resident_memory_gb()[0]
del block                            # freed, but the heap is never trimmed by itself
kept = runtime.resident_memory_gb()[0]
runtime.reset_peak_memory()
after = runtime.release_memory()
print(json.dumps({"base": base, "held": held, "kept": kept, "after": after,
                  "peak": runtime.resident_memory_gb()[1]}))
"""


def test_release_memory_returns_the_freed_heap():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["held"] - m["base"] > 0.55  # the block is resident
    assert m["kept"] - m["base"] > 0.55  # freeing it alone keeps it (the allocator setting's cost)
    assert m["kept"] - m["after"] > 0.5  # release_memory gives it back
    assert m["after"] <= m["peak"] < m["kept"] + 0.3  # the peak restarted at the reset, not the old high-water mark
