"""Test session set-up: 8 simulated CPU devices, before JAX initialises its backend."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from absl import flags  # noqa: E402

# grain 0.2.18 reads absl flags in mp_prefetch workers (google/grain#1355).
flags.FLAGS.mark_as_parsed()
