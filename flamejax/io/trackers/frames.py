"""metrical-tracker and Pixel3DMM: a folder of ``checkpoint/NNNNN.frame`` torch files, one
per frame, with 6D rotations (formats: the :mod:`flamejax.io.trackers` docstring).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from flamejax import rotations
from flamejax.io.errors import PathLike, TrackerOutputError
from flamejax.io.trackers.files import load_torch_file
from flamejax.io.trackers.record import TrackedSequence, _from_frames
from flamejax.io.trackers.values import _frame_number, _get, _rows


def _degenerate_6d(d6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (...,) True where the two rows cannot span a rotation (zero or parallel)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    n1 = np.linalg.norm(a1, axis=-1)
    return (n1 < 1e-8) | (np.linalg.norm(np.cross(a1, a2), axis=-1) < 1e-8 * np.maximum(n1, 1e-30))


def rotation_6d_to_axis_angle(d6: np.ndarray) -> np.ndarray:
    """(..., 6) rotations in the pytorch3d 6D convention -> (..., 3) axis-angle (float64 array).

    Uses :mod:`flamejax.rotations`; degenerate rows (zeros, parallel rows) give NaN.
    """
    d6 = np.asarray(d6, np.float64)
    bad = _degenerate_6d(d6) | ~np.isfinite(d6).all(-1)
    safe = np.where(bad[..., None], np.array([1.0, 0, 0, 0, 1.0, 0]), d6)
    aa = np.asarray(rotations.matrix_to_axis_angle(rotations.rotation_6d_to_matrix(jnp.asarray(safe))),
                    np.float64)
    return np.where(bad[..., None], np.nan, aa)


def _frame_files(folder: Path) -> list[Path]:
    sub = folder / "checkpoint"
    files = sorted(sub.glob("*.frame")) if sub.is_dir() else []
    return files or sorted(folder.glob("*.frame"))


def _read_frame_file(file: Path) -> dict:
    obj = load_torch_file(file)
    if not isinstance(obj, dict) or not isinstance(obj.get("flame"), dict):
        raise TrackerOutputError(file, "not a tracker checkpoint: expected a dict with a 'flame' "
                                       "dict (metrical-tracker / Pixel3DMM .frame)")
    return obj


def _six_d(flame: Mapping, key: str, file: Path, count: int = 1) -> tuple[np.ndarray, Optional[str]]:
    """The raw 6D row(s) of ``flame[key]`` (converted later, all frames at once)."""
    d6 = _rows(_get(flame, key, file, "flame."), f"flame.{key}", file, 6 * count, 1)[0]
    blocks = d6.reshape(count, 6)
    lost = "degenerate 6D rotation" if np.isfinite(blocks).all() and _degenerate_6d(blocks).any() else None
    return d6, lost


_SIX_D_FIELDS = ("jaw_pose", "eye_pose", "neck_pose", "global_pose")


def _convert_6d(frames: Sequence[dict]) -> None:
    """Replace the 6D fields of every frame by axis-angle, in one batched conversion per field."""
    for field in _SIX_D_FIELDS:
        if field in frames[0]:
            d6 = np.stack([f[field] for f in frames])
            aa = rotation_6d_to_axis_angle(d6.reshape(len(frames), -1, 6)).reshape(len(frames), -1)
            for f, row in zip(frames, aa):
                f[field] = row


def _metrical_frame(obj: dict, file: Path, pixel3dmm: bool) -> tuple[dict, dict]:
    flame = obj["flame"]
    frame = {"expression": _rows(_get(flame, "exp", file, "flame."), "flame.exp", file, None, 1)[0],
             "shape": _rows(_get(flame, "shape", file, "flame."), "flame.shape", file, None, 1)[0]}
    losts = []
    for field, key, count in (("jaw_pose", "jaw", 1), ("eye_pose", "eyes", 2)) + (
            (("neck_pose", "neck", 1), ("global_pose", "R", 1)) if pixel3dmm else ()):
        frame[field], lost = _six_d(flame, key, file, count)
        losts.append(lost)
    if "eyelids" in flame:
        frame["eyelids"] = _rows(flame["eyelids"], "flame.eyelids", file, 2, 1)[0]
    if pixel3dmm:
        frame["translation"] = _rows(_get(flame, "t", file, "flame."), "flame.t", file, 3, 1)[0]
    frame["_lost"] = next((x for x in losts if x), None)
    camera = {}
    groups = [("camera", "")] + ([] if pixel3dmm else [("opencv", "opencv_")])
    for group, prefix in groups:
        for key, value in (obj.get(group) or {}).items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
                camera[prefix + str(key)] = value[0] if value.ndim and value.shape[0] == 1 else value
    if isinstance(obj.get("img_size"), np.ndarray):
        camera["image_size"] = obj["img_size"].astype(np.float64)
    return frame, camera


def read_frames(folder: PathLike, *, tracker: str = "auto", n_expr: Optional[int] = None,
                n_shape: Optional[int] = None) -> TrackedSequence:
    """metrical-tracker or Pixel3DMM ``checkpoint/*.frame`` files (see the package docstring)."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else _frame_files(folder)
    if not files:
        raise TrackerOutputError(folder, "no checkpoint/*.frame files")
    objs = [_read_frame_file(f) for f in files]
    pixel3dmm = "R" in objs[0]["flame"] if tracker == "auto" else tracker == "pixel3dmm"
    name = "pixel3dmm" if pixel3dmm else "metrical"
    frames, cameras = zip(*[_metrical_frame(o, f, pixel3dmm) for o, f in zip(objs, files)])
    _convert_6d(frames)
    ids = [_frame_number(f.stem, f) for f in files]
    issues = []
    if not pixel3dmm:
        issues.append("metrical-tracker moves the camera, not the head: global_pose and translation "
                      "are zero; the head pose relative to the camera is camera['R'] (6D) / ['t']")
    else:
        issues.append("Pixel3DMM rotates the mesh about the origin (pivot='origin'); "
                      "to_flame_params(seq, model) moves the translation to FLAME's root joint")
    return _from_frames(folder, name, ids, list(frames), list(cameras), issues=issues,
                        n_expr=n_expr, n_shape=n_shape, pivot="origin" if pixel3dmm else "root")
