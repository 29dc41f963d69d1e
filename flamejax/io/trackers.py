"""Face trackers' outputs -> one canonical per-sequence record, read without torch or pickles.

:func:`read_tracked` reads the FLAME parameters that a face tracker wrote for a video and
returns a :class:`TrackedSequence`: NumPy arrays, radians, axis-angle poses, one row per frame.
Frames the tracker lost (a missing file in a numbered sequence, NaN/inf values, a degenerate
rotation, an all-zero code from a regressor) are *kept*, with zeros in every per-frame array
and ``valid[t] = False``; ``issues`` says which frames and why. Nothing is ever dropped, so
frame ``t`` of the record is always frame ``frame_ids[t]`` of the video.

Formats (``tracker=`` name, what :func:`read_tracked` looks for when ``tracker="auto"``):

- ``"metrical"``: metrical-tracker, ``<out>/checkpoint/00000.frame`` ... (one ``torch.save``
  zip per frame, a dict ``flame{exp (1,E), shape (1,S), eyes (1,12) 6D, eyelids (1,2),
  jaw (1,6) 6D, tex, sh}``, ``camera{R (1,6) 6D, t (1,3), fl (1,1), pp (1,2)}``,
  ``opencv{R (1,3,3), t (1,3), K (1,3,3)}``, ``img_size``, ``frame_id`` (str), ``global_step``;
  the arrays are NumPy arrays inside the torch pickle). The head does not move in
  metrical-tracker's world, the camera does: ``global_pose``/``translation`` are zero and
  the camera (6D ``R`` as written, pytorch3d convention) is in ``camera``.
- ``"pixel3dmm"``: Pixel3DMM's tracker, the same ``checkpoint/NNNNN.frame`` layout with
  ``flame{exp, shape, eyes (1,12), eyelids (1,2), jaw (1,6), neck (1,6), R (1,6), t (1,3),
  R_rotation_matrix}`` and ``camera{fl, pp, R_base_<i>, t_base_<i>}``; told apart from
  metrical-tracker by ``flame['R']``. Its head pose rotates the mesh about the *origin*
  (``v -> R v + t``), not about FLAME's root joint: the record says so in ``pivot`` and
  :func:`to_flame_params` moves the translation to FLAME's pivot given the model.
- ``"vhap"``: VHAP ``tracked_flame_params[_<epoch>].npz`` (``rotation, translation,
  neck_pose, jaw_pose (T,3), eyes_pose (T,6)``, ``shape (S,)``, ``expr (T,E)``,
  ``timestep_id (T,)`` strings, optional ``focal_length``, ``image_size``, ``static_offset``
  ...), and its exported per-frame folder ``flame_param/00000.npz`` (the same keys, (1, k)).
  For an output folder holding several epochs the highest epoch is read (an un-numbered
  file counts as the final one).
- ``"smirk"``: SMIRK's encoder outputs saved with ``np.savez`` (SMIRK itself saves no
  parameter file): ``expression_params (T,50)``, ``jaw_params (T,3)``, ``eyelid_params
  (T,2)``, ``pose_params (T,3)``, ``shape_params (T,300)``, optional ``cam (T,3)`` and
  ``frame_ids``; or a folder of per-frame ``.npz`` files with those keys.
- ``"deca"``: DECA/EMOCA codes: EMOCA's ``save_codes`` folders (``<out>/<frame>/shape.npy
  (100,), exp.npy (50,), pose.npy (6,) = global + jaw``, optional ``cam.npy``), or one
  ``.npz`` with ``shape``/``shapecode``, ``exp``/``expcode``, ``pose``/``posecode``, ``cam``.
- ``"flamejax"``: our own plain layout (:func:`save_tracked`): an ``.npz`` (or a folder of
  ``<field>.npy``) whose keys are the :class:`TrackedSequence` field names: ``expression
  (T,E)`` required; ``shape (S,)`` or per-frame ``(T,S)``; ``global_pose, neck_pose,
  jaw_pose, translation (T,3)``, ``eye_pose (T,6)``, ``eyelids (T,2)``, ``frame_ids (T,)``,
  ``valid (T,)`` optional (zeros / ``arange`` / all True); ``camera_<name>`` arrays;
  ``pivot`` ("root" or "origin").

Every file is decoded by the allow-list unpickler (torch files, :mod:`flamejax.io.safe_pickle`)
or by ``np.load(allow_pickle=False)``; a file that is hostile, truncated, of another format, or
missing a key or of a wrong shape/dtype raises :class:`~flamejax.io.errors.TrackerOutputError`
(a :class:`~flamejax.io.errors.FlameFileError`) naming the file and the problem.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from flamejax import rotations
from flamejax.flame import FlameParams
from flamejax.io.errors import PathLike, TrackerOutputError, reading
from flamejax.io.safe_pickle import SafeUnpickler
from flamejax.io.torch_pickle import STORAGE_DTYPES, StorageType, TorchStorage

TRACKERS = ("metrical", "pixel3dmm", "vhap", "smirk", "deca", "flamejax")
_ALIASES = {"metrical-tracker": "metrical", "metrical_tracker": "metrical", "emoca": "deca",
            "ours": "flamejax", "npz": "flamejax"}
PIVOTS = ("root", "origin")


class TrackedSequence(NamedTuple):
    """One tracked sequence in canonical form (NumPy float64, radians, axis-angle, T frames).

    shape (S,): the identity (per-frame shapes are reduced to their median over valid frames;
    ``shape_spread`` is the largest deviation of a frame's shape from it, 0 if the tracker
    stores one shape); expression (T, E); global_pose, neck_pose, jaw_pose (T, 3);
    eye_pose (T, 6) = left eye then right eye (FLAME joints 3 and 4); eyelids (T, 2) (left,
    right; zeros if the tracker has none; not part of FLAME itself); translation (T, 3);
    frame_ids (T,) int64, increasing; valid (T,) bool: False for masked frames, whose
    per-frame values are zeros; camera: per-sequence or per-frame camera arrays as the
    tracker wrote them (or None); source: "<tracker>: <path>"; issues: what was masked,
    padded, truncated or ignored, in words. pivot: "root" when ``global_pose`` rotates about
    FLAME's root joint (FLAME, VHAP, DECA, SMIRK), "origin" when the tracker rotates the
    whole mesh about the origin before translating (Pixel3DMM).
    """

    shape: np.ndarray
    expression: np.ndarray
    jaw_pose: np.ndarray
    neck_pose: np.ndarray
    global_pose: np.ndarray
    eye_pose: np.ndarray
    eyelids: np.ndarray
    translation: np.ndarray
    frame_ids: np.ndarray
    valid: np.ndarray
    camera: Optional[dict]
    source: str
    issues: tuple
    shape_spread: float = 0.0
    pivot: str = "root"

    @property
    def n_frames(self) -> int:
        return int(self.frame_ids.shape[0])


# Per-frame fields and their widths (besides expression, whose width is the tracker's).
_POSE_FIELDS = {"global_pose": 3, "neck_pose": 3, "jaw_pose": 3, "eye_pose": 6, "eyelids": 2,
                "translation": 3}


# ----------------------------------------------------------------------------------------------
# Reading files safely

class _TorchZipUnpickler(SafeUnpickler):
    """``data.pkl`` of a ``torch.save`` zip: the allow-list unpickler, plus torch storage types
    as names and storages as persistent ids ``('storage', type, key, location, numel)`` whose
    bytes are the archive member ``<prefix>data/<key>``."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, little_endian: bool):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._order = "<" if little_endian else ">"
        self._storages: dict[str, TorchStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id in torch file: {pid!r}")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype.newbyteorder(self._order)
            member = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(member)
            except KeyError:
                raise ValueError(f"torch file has no data for storage {key!r} ({member})") from None
            if not isinstance(numel, int) or numel < 0 or len(raw) != numel * dtype.itemsize:
                raise ValueError(f"storage {key!r} holds {len(raw)} bytes, its header says "
                                 f"{numel} x {dtype.itemsize}")
            storage = TorchStorage(storage_type.dtype, numel)
            storage.fill(np.frombuffer(raw, dtype).astype(dtype.newbyteorder("=")))
            self._storages[key] = storage
        return self._storages[key]


def load_torch_file(path: PathLike) -> Any:
    """The object in a ``torch.save`` file (zip format, torch >= 1.6), read without torch.

    Tensors come back as NumPy arrays; only the allow-listed globals may appear (NumPy
    arrays, torch tensor rebuilders and storage types, plain containers): anything else is
    refused before it is imported. Every failure is a FlameFileError naming the file.
    """
    _magic(path, 4)  # a missing or unreadable file fails here, with its own message
    with reading(path, "torch.save file"):
        if not zipfile.is_zipfile(path):
            raise TrackerOutputError(path, "not a torch.save zip archive (truncated, or not written "
                                           "by torch.save >= 1.6)")
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise TrackerOutputError(path, f"not a torch.save archive: expected one data.pkl "
                                               f"member, found {len(pickles)}")
            prefix = pickles[0][: -len("data.pkl")]
            little = True
            if f"{prefix}byteorder" in archive.namelist():
                order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise TrackerOutputError(path, f"unknown byte order {order!r}")
                little = order == "little"
            with archive.open(pickles[0]) as fh:
                return _TorchZipUnpickler(fh, archive, prefix, little).load()


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _magic(path: PathLike, n: int = 6) -> bytes:
    with reading(path, "file"), open(path, "rb") as fh:
        return fh.read(n)


def _refuse_pickled(path: PathLike, key: str, exc: ValueError) -> None:
    if "allow_pickle" in str(exc):
        raise TrackerOutputError(path, f"'{key}' is an object array (a pickle); refused: tracker "
                                       "parameter files hold plain numeric arrays") from None


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All members of an ``.npz`` archive, with ``np.load(allow_pickle=False)``.

    An object (pickled) member is refused, not unpickled; every failure is a FlameFileError.
    """
    if _magic(path, 4) != _ZIP_MAGIC:
        raise TrackerOutputError(path, "not an .npz archive (no zip header)")
    out = {}
    with reading(path, ".npz archive"), np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            try:
                out[key] = archive[key]
            except ValueError as exc:
                _refuse_pickled(path, key, exc)
                raise
    return out


def load_npy(path: PathLike) -> np.ndarray:
    """The array in an ``.npy`` file, with ``np.load(allow_pickle=False)``."""
    if _magic(path) != _NPY_MAGIC:
        raise TrackerOutputError(path, "not an .npy file (no NumPy header)")
    with reading(path, ".npy file"):
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            _refuse_pickled(path, os.path.basename(path), exc)
            raise


# ----------------------------------------------------------------------------------------------
# Checks and conversions

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


def _frame_number(name: str, path: PathLike) -> int:
    match = re.match(r"\D*(\d+)", name)
    if match is None:
        raise TrackerOutputError(path, f"cannot read a frame number from the name {name!r}")
    return int(match.group(1))


def _ranges(ids: Sequence[int]) -> str:
    ids = sorted(int(i) for i in ids)
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    text = ", ".join(parts[:12])
    return text + (f", ... ({len(ids)} frames)" if len(parts) > 12 else "")


def _fit_width(arr: np.ndarray, n: Optional[int], name: str, issues: list, path: PathLike,
               frames_axis: bool = True) -> np.ndarray:
    """Zero-pad or truncate the last axis to ``n`` (a warning and an issue either way)."""
    have = arr.shape[-1]
    if n is None or n == have:
        return arr
    if n > have:
        msg = f"{name}: {have} coefficients zero-padded to {n}"
        arr = np.concatenate([arr, np.zeros(arr.shape[:-1] + (n - have,))], -1)
    else:
        dropped = float(np.abs(arr[..., n:]).max()) if arr[..., n:].size else 0.0
        msg = f"{name}: {have} coefficients truncated to {n} (largest dropped |value| {dropped:.3g})"
        arr = arr[..., :n]
    issues.append(msg)
    warnings.warn(f"{os.fspath(path)}: {msg}", stacklevel=4)
    return arr


# ----------------------------------------------------------------------------------------------
# Assembling the record

def _assemble(path: PathLike, tracker: str, *, expression: np.ndarray, fields: Mapping[str, np.ndarray],
              shape: np.ndarray, frame_ids: np.ndarray, present: Optional[np.ndarray] = None,
              lost: Optional[Mapping[int, str]] = None, camera: Optional[dict] = None,
              issues: Sequence[str] = (), n_expr: Optional[int] = None, n_shape: Optional[int] = None,
              zero_is_lost: bool = False, pivot: str = "root", given_valid: Optional[np.ndarray] = None
              ) -> TrackedSequence:
    """Build a TrackedSequence from (T, k) arrays; mask missing/NaN/lost frames; sort by id."""
    issues = list(issues)
    n = expression.shape[0]
    present = np.ones(n, bool) if present is None else present.astype(bool)
    reasons: dict[int, str] = {}
    for i in np.flatnonzero(~present):
        reasons[int(i)] = "missing"
    for i, why in (lost or {}).items():
        reasons.setdefault(int(i), why)
    if given_valid is not None:
        for i in np.flatnonzero(~given_valid.astype(bool)):
            reasons.setdefault(int(i), "marked invalid in the file")
    per_frame = {"expression": expression, **fields}
    if shape.ndim == 2:
        per_frame["shape"] = shape
    finite = np.ones(n, bool)
    for arr in per_frame.values():
        finite &= np.isfinite(arr).reshape(n, -1).all(1)
    for i in np.flatnonzero(~finite):
        reasons.setdefault(int(i), "NaN or infinite values")
    if zero_is_lost:
        core = np.concatenate([expression] + [fields[k] for k in ("jaw_pose", "global_pose") if k in fields], 1)
        for i in np.flatnonzero(np.all(core == 0, axis=1)):
            reasons.setdefault(int(i), "all-zero code (face not found)")
    valid = np.ones(n, bool)
    valid[list(reasons)] = False
    by_reason: dict[str, list[int]] = {}
    for i, why in reasons.items():
        by_reason.setdefault(why, []).append(int(frame_ids[i]))
    for why, ids in sorted(by_reason.items()):
        issues.append(f"{len(ids)} frame(s) masked ({why}): {_ranges(ids)}")

    def clean(arr):
        arr = np.array(arr, np.float64)
        arr[~valid] = 0.0
        return arr

    out = {name: clean(fields[name]) if name in fields else np.zeros((n, width))
           for name, width in _POSE_FIELDS.items()}
    expression = _fit_width(clean(expression), n_expr, "expression", issues, path)
    spread = 0.0
    if shape.ndim == 2:
        if not valid.any():
            issues.append("no valid frame: shape set to zeros")
            shape = np.zeros(shape.shape[1])
        else:
            good = shape[valid]
            median = np.median(good, axis=0)
            spread = float(np.abs(good - median).max())
            if spread > 1e-6:
                issues.append(f"shape is stored per frame and varies (largest deviation from the "
                              f"median {spread:.3g}); using the median over {int(valid.sum())} valid frames")
            shape = median
    elif not np.isfinite(shape).all():
        raise TrackerOutputError(path, "'shape' contains NaN or infinite values")
    shape = _fit_width(np.asarray(shape, np.float64), n_shape, "shape", issues, path)
    order = np.argsort(frame_ids, kind="stable")
    if np.any(np.diff(frame_ids[order]) == 0):
        dup = np.unique(frame_ids[order][1:][np.diff(frame_ids[order]) == 0])
        raise TrackerOutputError(path, f"frame id(s) {_ranges(dup)} appear more than once")
    if camera is not None:
        camera = {k: (np.array(v)[order] if _per_frame(v, n) else np.array(v)) for k, v in camera.items()}
    return TrackedSequence(
        shape=shape, expression=expression[order], frame_ids=frame_ids[order].astype(np.int64),
        valid=valid[order], camera=camera, source=f"{tracker}: {os.fspath(path)}",
        issues=tuple(issues), shape_spread=spread, pivot=pivot,
        **{k: v[order] for k, v in out.items()})


def _per_frame(value: np.ndarray, n: int) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n and n > 1


def _fill_gaps(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ids from min to max at the sequence's step (gcd of differences); which are present."""
    ids = np.sort(ids)
    if ids.size < 2:
        return ids, np.ones(ids.size, bool)
    step = math.gcd(*[int(d) for d in np.diff(ids) if d > 0]) or 1
    full = np.arange(ids[0], ids[-1] + 1, step)
    return full, np.isin(full, ids)


def _from_frames(path: PathLike, tracker: str, ids: Sequence[int], frames: Sequence[dict],
                 cameras: Optional[Sequence[dict]] = None, **kwargs) -> TrackedSequence:
    """Stack per-frame dicts (1-D arrays) into a sequence; frames missing from the numbering
    become masked rows. Each dict has 'expression', 'shape' and some of _POSE_FIELDS."""
    ids = np.asarray(ids, np.int64)
    if len(np.unique(ids)) != len(ids):
        raise TrackerOutputError(path, "two files carry the same frame number")
    full, present = _fill_gaps(ids)
    where = {int(i): k for k, i in enumerate(ids)}
    n = len(full)
    widths_e = {f["expression"].shape[0] for f in frames}
    widths_s = {f["shape"].shape[0] for f in frames}
    if len(widths_e) != 1 or len(widths_s) != 1:
        raise TrackerOutputError(path, f"frames disagree on the number of coefficients "
                                       f"(expression {sorted(widths_e)}, shape {sorted(widths_s)})")
    stacked: dict[str, np.ndarray] = {}
    for name in ["expression", "shape", *[k for k in _POSE_FIELDS if k in frames[0]]]:
        width = frames[0][name].shape[0]
        arr = np.zeros((n, width))
        for t, frame_id in enumerate(full):
            if present[t]:
                arr[t] = frames[where[int(frame_id)]][name]
        stacked[name] = arr
    lost = {}
    for t, frame_id in enumerate(full):
        if present[t] and frames[where[int(frame_id)]].get("_lost"):
            lost[t] = frames[where[int(frame_id)]]["_lost"]
    camera = None
    if cameras:
        camera = {}
        for key in cameras[0]:
            values = [c.get(key) for c in cameras]
            shapes = {np.shape(v) for v in values if v is not None}
            if len(shapes) != 1:
                continue
            (shp,) = shapes
            arr = np.zeros((n,) + shp)
            for t, frame_id in enumerate(full):
                if present[t] and values[where[int(frame_id)]] is not None:
                    arr[t] = values[where[int(frame_id)]]
            camera[key] = arr
    expression = stacked.pop("expression")
    shape = stacked.pop("shape")
    good = shape[present]
    if good.shape[0] and np.array_equal(good, np.broadcast_to(good[0], good.shape)):
        shape = good[0]  # one identity, repeated in every frame's file
    return _assemble(path, tracker, expression=expression, fields=stacked, shape=shape,
                     frame_ids=full, present=present, lost=lost, camera=camera, **kwargs)


# ----------------------------------------------------------------------------------------------
# metrical-tracker and Pixel3DMM: checkpoint/*.frame

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
    """metrical-tracker or Pixel3DMM ``checkpoint/*.frame`` files (see the module docstring)."""
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


# ----------------------------------------------------------------------------------------------
# VHAP

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


# ----------------------------------------------------------------------------------------------
# SMIRK and DECA/EMOCA (regressors: an all-zero code is a placeholder for "no face")

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


# ----------------------------------------------------------------------------------------------
# Our own layout

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


# ----------------------------------------------------------------------------------------------
# Dispatch

def _npz_kind(path: Path) -> str:
    keys = set(load_npz(path))
    if {"expr", "eyes_pose"} <= keys:
        return "vhap"
    if "expression_params" in keys:
        return "smirk"
    if keys & {"exp", "expcode"} and keys & {"pose", "posecode"}:
        return "deca"
    if "expression" in keys:
        return "flamejax"
    raise TrackerOutputError(path, f"not a known tracker output (keys: {', '.join(sorted(keys)) or 'none'}); "
                                   f"expected VHAP, SMIRK, DECA/EMOCA or flamejax keys")


def detect_tracker(path: PathLike) -> str:
    """Which tracker wrote ``path`` (a file or an output folder), from names and keys."""
    path = Path(path)
    if not path.exists():
        raise TrackerOutputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix == ".frame":
            return "pixel3dmm" if "R" in _read_frame_file(path)["flame"] else "metrical"
        if path.suffix == ".npz":
            return _npz_kind(path)
        raise TrackerOutputError(path, f"not a tracker output: unknown file type {path.suffix!r} "
                                       "(expected .frame, .npz, or a folder)")
    files = _frame_files(path)
    if files:
        return "pixel3dmm" if "R" in _read_frame_file(files[0])["flame"] else "metrical"
    if list(path.glob("tracked_flame_params*.npz")) or (path / "flame_param").is_dir():
        return "vhap"
    if (path / "expression.npy").is_file():
        return "flamejax"
    if any(d.is_dir() and (d / "exp.npy").is_file() for d in path.iterdir()):
        return "deca"
    per_frame = sorted(f for f in path.glob("*.npz") if re.match(r"\D*\d", f.stem))
    if per_frame:
        return _npz_kind(per_frame[0])
    raise TrackerOutputError(path, "no tracker output found (looked for checkpoint/*.frame, "
                                   "tracked_flame_params*.npz, flame_param/*.npz, <frame>/exp.npy, "
                                   "expression.npy, per-frame *.npz)")


def read_tracked(path: PathLike, *, tracker: str = "auto", n_expr: Optional[int] = None,
                 n_shape: Optional[int] = None) -> TrackedSequence:
    """Read a tracker's output for one sequence as a :class:`TrackedSequence`.

    ``tracker``: "auto" (detected from names and keys, see :func:`detect_tracker`) or one of
    :data:`TRACKERS` ("metrical", "pixel3dmm", "vhap", "smirk", "deca", "flamejax"; also
    "metrical-tracker", "emoca"). ``n_expr`` / ``n_shape``: zero-pad or truncate the
    expression / shape coefficients to this many (with a warning and an entry in ``issues``).
    """
    name = _ALIASES.get(tracker, tracker)
    if name != "auto" and name not in TRACKERS:
        raise ValueError(f"unknown tracker {tracker!r}; expected 'auto' or one of {TRACKERS}")
    if not Path(path).exists():
        raise TrackerOutputError(path, "no such file or folder")
    if name == "auto":
        name = detect_tracker(path)
    if name in ("metrical", "pixel3dmm"):
        return read_frames(path, tracker=name, n_expr=n_expr, n_shape=n_shape)
    reader = {"vhap": read_vhap, "smirk": read_smirk, "deca": read_deca, "flamejax": read_own}[name]
    return reader(path, n_expr=n_expr, n_shape=n_shape)


# ----------------------------------------------------------------------------------------------
# To the forward pass

def _fit_model(arr: np.ndarray, n: int, name: str) -> np.ndarray:
    if arr.shape[-1] > n:
        dropped = np.abs(arr[..., n:])
        if dropped.size and dropped.max() > 0:
            warnings.warn(f"to_flame_params: {name} has {arr.shape[-1]} coefficients, the model "
                          f"{n}; dropping the rest (largest |value| {dropped.max():.3g})", stacklevel=3)
        return arr[..., :n]
    return np.concatenate([arr, np.zeros(arr.shape[:-1] + (n - arr.shape[-1],))], -1)


def to_flame_params(seq: TrackedSequence, model=None, *, dtype=None) -> FlameParams:
    """Batched :class:`~flamejax.flame.FlameParams` (leading axis = frames) for
    ``jax.vmap(flame_forward, in_axes=(None, 0))``; shape is repeated per frame.

    ``model`` (a :class:`~flamejax.flame.FlameModel`), if given, fixes the coefficient counts
    (zero-pad / truncate, warning when nonzero values are dropped) and the dtype; it is
    required for ``pivot="origin"`` sequences (Pixel3DMM), whose translation is moved to
    FLAME's root-joint pivot: t_flame = t + (R - I) J0, with J0 the frame's rest root joint.
    Masked frames are zeros (use ``seq.valid`` to ignore them). Eyelids are not FLAME
    parameters and are not included.
    """
    if seq.pivot not in PIVOTS:
        raise ValueError(f"unknown pivot {seq.pivot!r}")
    n = seq.n_frames
    shape = np.broadcast_to(seq.shape, (n, seq.shape.shape[0]))
    expression = seq.expression
    if model is not None:
        shape = _fit_model(shape, int(model.n_shape), "shape")
        expression = _fit_model(expression, int(model.n_expr), "expression")
        dtype = dtype or model.v_template.dtype
    dtype = dtype or jnp.float32
    translation = seq.translation
    if seq.pivot == "origin":
        if model is None:
            raise ValueError(f"{seq.source}: poses rotate about the origin (pivot='origin'); pass the "
                             "FLAME model so the translation can be moved to FLAME's root-joint pivot")
        betas = np.concatenate([shape, expression], -1)
        rest = np.asarray(model.v_template, np.float64)[None] + np.einsum(
            "tk,kvc->tvc", betas, np.asarray(model.shapedirs, np.float64))
        j0 = np.einsum("v,tvc->tc", np.asarray(model.j_regressor, np.float64)[0], rest)
        rot = np.asarray(rotations.axis_angle_to_matrix(jnp.asarray(seq.global_pose)), np.float64)
        translation = translation + np.einsum("tij,tj->ti", rot, j0) - j0
        translation[~seq.valid] = 0.0

    def arr(x):
        return jnp.asarray(np.ascontiguousarray(x), dtype)

    return FlameParams(shape=arr(shape), expression=arr(expression), global_pose=arr(seq.global_pose),
                       neck_pose=arr(seq.neck_pose), jaw_pose=arr(seq.jaw_pose),
                       eye_pose=arr(seq.eye_pose), translation=arr(translation))


__all__ = [
    "PIVOTS",
    "TRACKERS",
    "TrackedSequence",
    "detect_tracker",
    "load_npy",
    "load_npz",
    "load_torch_file",
    "read_deca",
    "read_frames",
    "read_own",
    "read_smirk",
    "read_tracked",
    "read_vhap",
    "rotation_6d_to_axis_angle",
    "save_tracked",
    "to_flame_params",
]
