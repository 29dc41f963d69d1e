"""SMIRK and DECA/EMOCA, per-image regressors: their codes as one ``.npz`` or per-frame files
or folders; an all-zero code is a placeholder for "no face" and is masked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from flamejax.io.errors import PathLike, TrackerOutputError
from flamejax.io.trackers.files import load_npy, load_npz
from flamejax.io.trackers.record import TrackedSequence, _assemble, _from_frames
from flamejax.io.trackers.values import _first, _frame_number, _get, _numeric, _rows


_SMIRK = {"expression": ("expression_params", None), "jaw_pose": ("jaw_params", 3),
          "eyelids": ("eyelid_params", 2), "global_pose": ("pose_params", 3)}


def _regressor_arrays(data: Mapping, path: PathLike, n: Optional[int], kind: str) -> tuple[dict, dict]:
    if kind == "smirk":
        out = {field: _rows(_get(data, key, path), key, path, width, n)
               for field, (key, width) in _SMIRK.items()}
        shape = _rows(_get(data, "shape_params", path), "shape_params", path, None, n)
    else:
        out = {"expression": _rows(_first(data, ("exp", "expcode"), path), "exp", path, None, n)}
        pose = _rows(_first(data, ("pose", "posecode"), path), "pose", path, 6, out["expression"].shape[0])
        out["global_pose"], out["jaw_pose"] = pose[:, :3], pose[:, 3:]
        shape = _rows(_first(data, ("shape", "shapecode"), path), "shape", path, None,
                      out["expression"].shape[0])
    out["shape"] = shape
    camera = {}
    if "cam" in data:
        camera["cam"] = _rows(data["cam"], "cam", path, 3, out["expression"].shape[0])
    return out, camera


def _read_regressor(path: Path, kind: str, n_expr, n_shape) -> TrackedSequence:
    note = ("SMIRK: orthographic camera 'cam' = (scale, tx, ty); no translation" if kind == "smirk" else
            "DECA/EMOCA: pose = global + jaw axis-angle; orthographic 'cam' = (scale, tx, ty); no translation")
    if path.is_dir():
        if kind == "deca":
            subs = sorted(d for d in path.iterdir() if d.is_dir() and (d / "exp.npy").is_file())
            if not subs:
                raise TrackerOutputError(path, "no <frame>/exp.npy code folders (EMOCA save_codes layout)")
            items = []
            for d in subs:
                data = {k: load_npy(d / f"{k}.npy") for k in ("shape", "exp", "pose", "cam")
                        if (d / f"{k}.npy").is_file()}
                items.append((d, data))
        else:
            files = sorted(f for f in path.glob("*.npz") if re.match(r"\D*\d", f.stem))
            if not files:
                raise TrackerOutputError(path, "no per-frame .npz files")
            items = [(f, load_npz(f)) for f in files]
        frames, cameras = [], []
        for where, data in items:
            arrays, camera = _regressor_arrays(data, where, 1, kind)
            frames.append({k: v[0] for k, v in arrays.items()})
            cameras.append({k: v[0] for k, v in camera.items()})
        ids = [_frame_number(w.stem if w.is_file() else w.name, w) for w, _ in items]
        return _from_frames(path, kind, ids, frames, cameras if any(cameras) else None, issues=[note],
                            n_expr=n_expr, n_shape=n_shape, zero_is_lost=True)
    data = load_npz(path)
    arrays, camera = _regressor_arrays(data, path, None, kind)
    n = arrays["expression"].shape[0]
    ids = np.arange(n)
    if "frame_ids" in data:
        ids = _numeric(data["frame_ids"], "frame_ids", path).reshape(-1).astype(np.int64)
        if ids.shape[0] != n:
            raise TrackerOutputError(path, f"'frame_ids' has {ids.shape[0]} entries for {n} frames")
    shape = arrays.pop("shape")
    expression = arrays.pop("expression")
    return _assemble(path, kind, expression=expression, fields=arrays, shape=shape, frame_ids=ids,
                     camera=camera or None, issues=[note], n_expr=n_expr, n_shape=n_shape,
                     zero_is_lost=True)


def read_smirk(path: PathLike, *, n_expr: Optional[int] = None, n_shape: Optional[int] = None
               ) -> TrackedSequence:
    """SMIRK encoder outputs: one ``.npz`` (T rows) or a folder of per-frame ``.npz`` files."""
    return _read_regressor(Path(path), "smirk", n_expr, n_shape)


def read_deca(path: PathLike, *, n_expr: Optional[int] = None, n_shape: Optional[int] = None
              ) -> TrackedSequence:
    """DECA/EMOCA codes: EMOCA ``save_codes`` folders or one ``.npz`` of codes."""
    return _read_regressor(Path(path), "deca", n_expr, n_shape)
