"""The canonical record, :class:`TrackedSequence`, and what every reader shares to build it
(stacking per-frame files, masking lost frames, fitting coefficient counts), and
:func:`to_flame_params`, the record as batched FLAME parameters for the forward pass.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Mapping, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from flamejax import rotations
from flamejax.flame import FlameParams
from flamejax.io.errors import PathLike, TrackerOutputError


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
