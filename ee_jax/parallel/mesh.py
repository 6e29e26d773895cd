"""Device mesh from config: axes ``data``, ``fsdp``, ``tensor``."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from ee_jax.config import Config, resolve_mesh_shape, validate_mesh
from ee_jax.parallel.rules import MESH_AXES


def make_mesh(cfg: Config, devices: list | None = None, steps: tuple[str, ...] = ("train", "rl")) -> Mesh:
    """Mesh over ``devices`` (default: all) shaped by ``cfg.mesh``; validates divisibility first.

    Axes are ``Auto`` (GSPMD-style propagation): the model relies on propagation plus a few explicit
    constraints, not on sharding-in-types. ``steps``: the programs the mesh will run (see
    :func:`~ee_jax.config.validate_mesh`). Explicit TPU devices (e.g. a deviceless topology's) are laid out by
    ``mesh_utils`` so that mesh axes follow the physical torus, as ``jax.make_mesh`` does for local devices.
    """
    devices = list(devices if devices is not None else jax.devices())
    validate_mesh(cfg, len(devices), steps)
    shape = resolve_mesh_shape(cfg, len(devices))
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    if devices[0].platform == "tpu":
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    else:
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def single_device_mesh(device=None) -> Mesh:
    """A 1x1x1 mesh, so single-device code runs through exactly the same sharded path."""
    device = device or jax.devices()[0]
    return Mesh(np.asarray([device]).reshape(1, 1, 1), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
