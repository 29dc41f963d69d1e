"""Validation of arrays read from files: each failed check is a FlameFileError naming the file.

Checks run on NumPy arrays in the file's own layout, before anything becomes a JAX array,
so a bad file fails with a message about the file rather than deep inside a jitted function.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np

from flamejax.io.errors import FlameFileError, PathLike
from flamejax.io.safe_pickle import describe, to_array


def array(value: Any, name: str, path: PathLike) -> np.ndarray:
    """``value`` (array, chumpy/sparse stand-in, list) as a NumPy array, or a FlameFileError."""
    try:
        return to_array(value)
    except (TypeError, ValueError) as exc:
        raise FlameFileError(path, f"'{name}' is not an array ({describe(value)}): {exc}") from None


def shape(arr: np.ndarray, expected: Sequence[Optional[int]], name: str, path: PathLike,
          hint: str = "") -> np.ndarray:
    """Require ``arr.shape`` to match ``expected`` (None = any size on that axis)."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise FlameFileError(path, f"'{name}' has shape {arr.shape}, expected {want}{hint}")
    return arr


def real(arr: np.ndarray, name: str, path: PathLike) -> np.ndarray:
    """Require a finite real (float or integer) array; returns it as float64."""
    if arr.dtype.kind not in "fiub":
        raise FlameFileError(path, f"'{name}' has dtype {arr.dtype}, expected real numbers")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise FlameFileError(path, f"'{name}' contains {int(bad.sum())} NaN or infinite values")
    return arr


def indices(arr: np.ndarray, name: str, path: PathLike, upper: Optional[int] = None,
            what: str = "entries") -> np.ndarray:
    """Require integer ids in [0, upper) (upper None: only >= 0); returns them as int64."""
    if arr.dtype.kind not in "iu":
        raise FlameFileError(path, f"'{name}' has dtype {arr.dtype}, expected integer ids")
    ids = arr.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise FlameFileError(path, f"'{name}' holds negative ids (min {ids.min()})")
    if upper is not None and ids.size and ids.max() >= upper:
        raise FlameFileError(path, f"'{name}' holds id {ids.max()}, out of range for {upper} {what}")
    return ids


def barycentric(arr: np.ndarray, name: str, path: PathLike, atol: float = 1e-3) -> np.ndarray:
    """Require finite barycentric coordinates (..., 3) whose rows sum to 1 (within ``atol``)."""
    arr = real(arr, name, path)
    err = np.abs(arr.sum(-1) - 1.0)
    if err.size and err.max() > atol:
        raise FlameFileError(path, f"'{name}' rows must sum to 1 (barycentric coordinates); "
                                   f"worst row sums to {1.0 + float(err.max()):.6g}")
    return arr


def float_dtype(dtype: Any) -> np.dtype:
    """The NumPy float dtype a loader should produce; float64 needs JAX's x64 mode."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError("float64 requested but JAX's x64 mode is off; enable it first with "
                         "jax.config.update('jax_enable_x64', True)")
    return dt
