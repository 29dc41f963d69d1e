"""FLAME vertex masks (``FLAME_masks.pkl``): region name -> vertex ids.

The file is a Python 2 pickle (read with latin1) of a dict such as ``{"face": array([...]),
"lips": ..., "left_eyeball": ..., ...}`` with integer NumPy arrays of vertex ids. Calibration
uses these regions to weight per-expression errors.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax.numpy as jnp
import numpy as np

from flamejax.io import checks
from flamejax.io.pickle_writer import dump_legacy
from flamejax.io.errors import FlameFileError, PathLike
from flamejax.io.safe_pickle import load_pickle

PICKLE_PROTOCOL = 4


def check_masks(masks: Mapping, source: PathLike,
                n_vertices: Optional[int] = None) -> dict[str, np.ndarray]:
    """Validate a region -> vertex ids mapping; returns int64 NumPy arrays in the same order."""
    if not isinstance(masks, Mapping):
        raise FlameFileError(source, f"expected a dict of region name -> vertex ids, found a "
                                     f"{type(masks).__name__}")
    out = {}
    for name, ids in masks.items():
        if not isinstance(name, str):
            raise FlameFileError(source, f"region name {name!r} is not a string")
        arr = checks.array(ids, name, source)
        checks.shape(arr, (None,), name, source)
        out[name] = checks.indices(arr, name, source, n_vertices, "vertices")
    return out


def load_masks(path: PathLike, *, n_vertices: Optional[int] = None) -> dict[str, jnp.ndarray]:
    """Read ``FLAME_masks.pkl``: region name -> int32 vertex ids (checked against ``n_vertices``)."""
    masks = check_masks(load_pickle(path), path, n_vertices)
    return {name: jnp.asarray(ids, jnp.int32) for name, ids in masks.items()}


def save_masks(masks: Mapping[str, object], path: PathLike) -> None:
    """Write ``masks`` in the layout of ``FLAME_masks.pkl`` (int64 vertex id arrays)."""
    data = {str(name): np.asarray(ids, np.int64) for name, ids in masks.items()}
    with open(path, "wb") as fh:
        dump_legacy(data, fh, PICKLE_PROTOCOL)   # NumPy 1.x environments read it too
