"""VHAP: ``tracked_flame_params[_<epoch>].npz`` (T rows) or an exported ``flame_param``
folder of per-frame ``.npz`` files.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from flamejax.io.errors import PathLike, TrackerOutputError
from flamejax.io.trackers.files import load_npz
from flamejax.io.trackers.record import TrackedSequence, _assemble, _from_frames
from flamejax.io.trackers.values import _frame_number, _get, _numeric, _rows


_VHAP_KEYS = {"global_pose": ("rotation", 3), "translation": ("translation", 3),
              "neck_pose": ("neck_pose", 3), "jaw_pose": ("jaw_pose", 3), "eye_pose": ("eyes_pose", 6)}


def _vhap_ids(data: Mapping, n: int, path: PathLike, issues: list) -> np.ndarray:
    if "timestep_id" not in data:
        return np.arange(n)
    raw = np.asarray(data["timestep_id"]).reshape(-1)
    if raw.shape[0] != n:
        raise TrackerOutputError(path, f"'timestep_id' has {raw.shape[0]} entries for {n} frames")
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    found = [re.search(r"\d+", str(x)) for x in raw]
    if all(found):
        return np.array([int(m.group(0)) for m in found], np.int64)
    issues.append("timestep_id holds names without frame numbers; frames numbered 0..T-1")
    return np.arange(n)


def _vhap_extras(data: Mapping, issues: list) -> Optional[dict]:
    for key in ("static_offset", "dynamic_offset"):
        if key in data:
            issues.append(f"'{key}' (per-vertex offsets on FLAME) is not part of the record")
    camera = {k: np.asarray(data[k], np.float64) for k in ("focal_length", "image_size") if k in data
              and np.asarray(data[k]).dtype.kind in "fiu"}
    return camera or None


def _vhap_arrays(data: Mapping, path: PathLike, n: Optional[int]) -> dict:
    expr = _rows(_get(data, "expr", path), "expr", path, None, n)
    n = expr.shape[0]
    out = {"expression": expr}
    for field, (key, width) in _VHAP_KEYS.items():
        out[field] = _rows(_get(data, key, path), key, path, width, n)
    shape = _numeric(_get(data, "shape", path), "shape", path)
    if shape.ndim == 2 and shape.shape[0] == 1:
        shape = shape[0]
    if shape.ndim != 1:
        raise TrackerOutputError(path, f"'shape' has shape {shape.shape}, expected (S,)")
    out["shape"] = shape
    return out


def read_vhap(path: PathLike, *, n_expr: Optional[int] = None, n_shape: Optional[int] = None
              ) -> TrackedSequence:
    """VHAP ``tracked_flame_params*.npz``, a VHAP output folder, or an exported ``flame_param``
    folder of per-frame ``.npz`` files."""
    path = Path(path)
    issues: list[str] = []
    if path.is_dir():
        candidates = sorted(path.glob("tracked_flame_params*.npz"))
        if candidates:
            def epoch(p: Path) -> float:
                m = re.fullmatch(r"tracked_flame_params_(\d+)", p.stem)
                return int(m.group(1)) if m else math.inf
            chosen = max(candidates, key=epoch)
            if len(candidates) > 1:
                issues.append(f"{len(candidates)} tracked_flame_params files; read {chosen.name}")
            path = chosen
        else:
            folder = path / "flame_param" if (path / "flame_param").is_dir() else path
            files = sorted(f for f in folder.glob("*.npz") if re.match(r"\d", f.name))
            if not files:
                raise TrackerOutputError(path, "no tracked_flame_params*.npz and no flame_param/*.npz")
            frames = []
            for f in files:
                arrays = _vhap_arrays(load_npz(f), f, 1)
                frames.append({k: (v[0] if k != "shape" else v) for k, v in arrays.items()})
            ids = [_frame_number(f.stem, f) for f in files]
            return _from_frames(folder, "vhap", ids, frames, issues=issues, n_expr=n_expr, n_shape=n_shape)
    data = load_npz(path)
    arrays = _vhap_arrays(data, path, None)
    n = arrays["expression"].shape[0]
    camera = _vhap_extras(data, issues)
    fields = {k: arrays[k] for k in _VHAP_KEYS}
    return _assemble(path, "vhap", expression=arrays["expression"], fields=fields, shape=arrays["shape"],
                     frame_ids=_vhap_ids(data, n, path, issues), camera=camera, issues=issues,
                     n_expr=n_expr, n_shape=n_shape)
