"""Our own plain layout: :func:`save_tracked` writes a :class:`TrackedSequence` as an ``.npz``
of its fields, :func:`read_own` reads that (or a folder of ``<field>.npy``) back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from flamejax.io.errors import PathLike, TrackerOutputError
from flamejax.io.trackers.files import load_npy, load_npz
from flamejax.io.trackers.record import _POSE_FIELDS, PIVOTS, TrackedSequence, _assemble
from flamejax.io.trackers.values import _get, _numeric, _rows


_OWN_FIELDS = ("shape", "expression", *_POSE_FIELDS, "frame_ids", "valid")


def read_own(path: PathLike, *, n_expr: Optional[int] = None, n_shape: Optional[int] = None
             ) -> TrackedSequence:
    """Our plain layout (:func:`save_tracked`): an ``.npz`` or a folder of ``<field>.npy``."""
    path = Path(path)
    if path.is_dir():
        data = {f.stem: load_npy(f) for f in path.glob("*.npy") if f.stem in _OWN_FIELDS
                or f.stem.startswith("camera_") or f.stem == "pivot"}
    else:
        data = load_npz(path)
    expression = _rows(_get(data, "expression", path), "expression", path, None)
    n = expression.shape[0]
    fields = {k: _rows(data[k], k, path, w, n) for k, w in _POSE_FIELDS.items() if k in data}
    shape = _numeric(data["shape"], "shape", path) if "shape" in data else np.zeros(0)
    if not (shape.ndim == 1 or (shape.ndim == 2 and shape.shape[0] == n)):
        raise TrackerOutputError(path, f"'shape' has shape {shape.shape}, expected (S,) or ({n}, S)")
    ids = np.arange(n)
    if "frame_ids" in data:
        ids = np.asarray(data["frame_ids"]).reshape(-1)
        if ids.dtype.kind not in "iu" or ids.shape[0] != n:
            raise TrackerOutputError(path, f"'frame_ids' must be {n} integers, got {ids.dtype} {ids.shape}")
    valid = None
    if "valid" in data:
        valid = np.asarray(data["valid"]).reshape(-1)
        if valid.dtype.kind not in "biu" or valid.shape[0] != n:
            raise TrackerOutputError(path, f"'valid' must be {n} booleans, got {valid.dtype} {valid.shape}")
    pivot = str(np.asarray(data["pivot"])) if "pivot" in data else "root"
    if pivot not in PIVOTS:
        raise TrackerOutputError(path, f"'pivot' is {pivot!r}, expected one of {PIVOTS}")
    camera = {k[len("camera_"):]: np.asarray(v) for k, v in data.items() if k.startswith("camera_")}
    return _assemble(path, "flamejax", expression=expression, fields=fields, shape=shape,
                     frame_ids=ids.astype(np.int64), camera=camera or None, n_expr=n_expr,
                     n_shape=n_shape, pivot=pivot, given_valid=valid)


def save_tracked(path: PathLike, seq: TrackedSequence) -> None:
    """Write ``seq`` in our plain ``.npz`` layout (no pickles; :func:`read_own` reads it)."""
    arrays = {k: np.asarray(getattr(seq, k)) for k in _OWN_FIELDS}
    arrays.update({f"camera_{k}": np.asarray(v) for k, v in (seq.camera or {}).items()})
    arrays["pivot"] = np.asarray(seq.pivot)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
