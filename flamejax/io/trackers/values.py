"""Checking the values read from a tracker's files: numeric arrays of the expected shape, keys
that must be there, frame numbers in file names; each failure is a TrackerOutputError.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from flamejax.io.errors import PathLike, TrackerOutputError


def _numeric(value: Any, name: str, path: PathLike) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        if isinstance(value, (int, float, np.generic)):
            value = np.asarray(value)
        else:
            raise TrackerOutputError(path, f"'{name}' is a {type(value).__name__}, expected an array")
    if value.dtype.kind not in "fiub":
        raise TrackerOutputError(path, f"'{name}' has dtype {value.dtype}, expected real numbers")
    return value.astype(np.float64)


def _rows(value: Any, name: str, path: PathLike, width: Optional[int], n: Optional[int] = None
          ) -> np.ndarray:
    """(n, width) float64 from a (n, width) array; (width,) counts as one row when n is 1."""
    arr = _numeric(value, name, path)
    if arr.ndim == 1 and n in (None, 1) and (width is None or arr.shape[0] == width):
        arr = arr[None]
    ok = arr.ndim == 2 and (width is None or arr.shape[1] == width) and (n is None or arr.shape[0] == n)
    if not ok:
        want = f"({'T' if n is None else n}, {'*' if width is None else width})"
        raise TrackerOutputError(path, f"'{name}' has shape {arr.shape}, expected {want}")
    return arr


def _get(mapping: Mapping, key: str, path: PathLike, what: str = "") -> Any:
    if key not in mapping:
        have = ", ".join(sorted(map(str, mapping))) or "nothing"
        raise TrackerOutputError(path, f"missing '{what}{key}' (found: {have})")
    return mapping[key]


def _first(mapping: Mapping, keys: Sequence[str], path: PathLike) -> Any:
    for key in keys:
        if key in mapping:
            return mapping[key]
    return _get(mapping, keys[0], path)


def _frame_number(name: str, path: PathLike) -> int:
    match = re.match(r"\D*(\d+)", name)
    if match is None:
        raise TrackerOutputError(path, f"cannot read a frame number from the name {name!r}")
    return int(match.group(1))
