"""Per-frame semantic controls as files other tools read: CSV, ``.npz`` and Live Link Face CSV.

Three layouts, each with a writer and a validating reader:

- **controls CSV** (:func:`write_controls_csv` / :func:`read_controls_csv`): a header
  ``frame[,time_s][,valid],<control>,...`` then one row per frame. ``frame`` is the tracker's
  frame id (an integer), ``time_s`` its time in seconds (``frame / fps``, present when the
  writer was given ``fps``), ``valid`` 1/0 (present when the writer was given ``valid``). An
  invalid frame's control cells are *empty*: a masked frame never looks like a real value.
  Values are written with the fewest digits that read back as the same float32.
- **controls npz** (:func:`write_controls_npz` / :func:`read_controls_npz`): ``controls``
  (T, K) float32 (NaN on invalid frames), ``names`` (K,) unicode, ``frames`` (T,) int64,
  ``valid`` (T,) bool, optionally ``fps`` (0-d float64) and any extra per-frame arrays of the
  caller (``residual_mm``, ``iterations``, ...). No pickles: read with ``allow_pickle=False``.
- **Live Link Face CSV** (:func:`write_live_link_csv` / :func:`read_live_link_csv`): the take
  layout of Epic's iPhone app "Live Link Face", which Unreal's LiveLinkFaceImporter turns into a
  Level Sequence that drives a character. Header ``Timecode,BlendShapeCount,`` the 52 ARKit
  blendshapes in the app's column order (:data:`LIVE_LINK_BLENDSHAPES`, the app's capitalised
  names), then the 9 rotations :data:`LIVE_LINK_ROTATIONS`; ``BlendShapeCount`` is 61 on every
  row; ``Timecode`` is ``HH:MM:SS:FF.mmm`` with FF.mmm the (fractional) frame within the second
  at ``fps``.

All values of a control set live in [0, 1]; readers allow :data:`RANGE_TOLERANCE` beyond that
(solver round-off) and refuse anything further. Every problem with a file is a
:class:`~flamejax.io.errors.FlameFileError` naming the file and the line/column; every writer
writes a temporary file next to the target and renames it over the target, so a reader never
sees half a file. Bad arguments to a writer (a caller's bug, not a file's) are ValueErrors.

Live Link Face conventions chosen here (the app documents none of them):

- Head and eye rotations are yaw, pitch, roll in **radians**, decomposed from an axis-angle
  rotation R in FLAME's frame (+x the subject's left, +y up, +z toward the viewer) as
  ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``: positive yaw turns the face toward the subject's left,
  positive pitch tilts it down (chin to chest), positive roll tilts the head toward the
  subject's right shoulder. The head's is FLAME's global pose (compose the neck pose in first
  when the neck moves too); the eyes' are FLAME's ``eye_pose[:, :3]`` (left) and
  ``eye_pose[:, 3:]`` (right), relative to the head. Not given: zeros.
- An invalid frame **holds** the last valid frame's values (blendshapes and rotations); frames
  before the first valid one are zeros (the neutral face). The format has no way to mark a
  frame missing, and Unreal's importer aborts on an empty cell, so holding is what keeps a
  character from snapping to neutral for one frame at every lost frame.
- Unreal's importer infers the frame rate as 30 or 60 (60 when a timecode's frame field
  reaches 30): write at ``fps=30`` or ``fps=60`` for Unreal. :func:`read_live_link_csv`
  infers it the same way unless told.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np

from flamejax.io.errors import FlameFileError, PathLike, reading

# How far beyond [0, 1] a control value may be (box-constrained solvers land on the bounds up
# to float round-off; anything further is a different quantity, not a control).
RANGE_TOLERANCE = 1e-3

# The controls CSV's columns besides the controls.
FRAME_COLUMN, TIME_COLUMN, VALID_COLUMN = "frame", "time_s", "valid"
# The controls npz's keys besides the caller's extras.
NPZ_KEYS = ("controls", "names", "frames", "valid", "fps")

# The 52 ARKit blendshapes in the column order of a Live Link Face recording, with the app's
# names (ARKit's camelCase with a capital first letter). This is the recorded CSV's order, which
# differs from ARKit's / Unreal's EARFaceBlendShape enum in two places: JawRight before JawLeft,
# MouthRight before MouthLeft (readers match columns by name, so the order only matters to be
# faithful to the app's files).
LIVE_LINK_BLENDSHAPES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft",
    "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawRight", "JawLeft", "JawOpen",
    "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight",
    "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight",
    "NoseSneerLeft", "NoseSneerRight",
    "TongueOut",
)
LIVE_LINK_ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                       "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVE_LINK_HEADER = ("Timecode", "BlendShapeCount", *LIVE_LINK_BLENDSHAPES, *LIVE_LINK_ROTATIONS)
# What the app writes in the BlendShapeCount column: the number of values that follow.
LIVE_LINK_COUNT = len(LIVE_LINK_BLENDSHAPES) + len(LIVE_LINK_ROTATIONS)

_TIMECODE = re.compile(r"^(\d{2,}):(\d{2}):(\d{2}):(\d+(?:\.\d+)?)$")
_DAY_SECONDS = 24 * 3600


class ControlsTake(NamedTuple):
    """A take's per-frame controls as read from a controls CSV or npz.

    names: (K,) control names (column order of ``controls``); controls: (T, K) float32 values in
    [0, 1], NaN on invalid frames; frames: (T,) int64 the tracker's frame ids; valid: (T,) bool;
    fps: frames per second (None when the file does not say); extras: the npz's other per-frame
    arrays by name (empty for a CSV).
    """

    names: tuple[str, ...]
    controls: np.ndarray
    frames: np.ndarray
    valid: np.ndarray
    fps: Optional[float]
    extras: dict


class LiveLinkTake(NamedTuple):
    """A Live Link Face CSV as read by :func:`read_live_link_csv`.

    names: the 52 blendshape names (:data:`LIVE_LINK_BLENDSHAPES`, the app's column order);
    values: (T, 52) float32 in that order; head, left_eye, right_eye: (T, 3) float32 yaw, pitch,
    roll (radians with this module's writer; the app's own files use the app's convention);
    timecodes: (T,) the rows' timecode strings; frames: (T,) int64 frame numbers counted from
    00:00:00:00 at ``fps`` (the frame a subframe timecode falls in; a take written from frame 0
    reads back 0, 1, ...; a time-of-day take that passes midnight keeps counting); fps: the frame
    rate used for ``frames`` (given, or inferred as Unreal's importer does).
    """

    names: tuple[str, ...]
    values: np.ndarray
    head: np.ndarray
    left_eye: np.ndarray
    right_eye: np.ndarray
    timecodes: tuple[str, ...]
    frames: np.ndarray
    fps: float


# --------------------------------------------------------------------------------------------
# shared helpers


def _write_atomic(path: PathLike, data) -> Path:
    """Write ``data`` (str or bytes) to a temporary file next to ``path``, then rename it over
    ``path``: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(data, str):
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                fh.write(data)
        else:
            with open(tmp, "wb") as fh:
                fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _number(value) -> str:
    """The shortest text that reads back (as a float, then float32) as the same float32.

    NumPy's float32 repr is the shortest such text for a float32 parser; reading it as a
    float64 first could in principle round twice, so it is checked and, if ever needed, the
    float64 repr (always exact) is written instead."""
    v = np.float32(value)
    text = str(v)
    return text if np.float32(float(text)) == v else repr(float(v))


def _frame_table(names: Sequence[str], controls, frame_ids, valid):
    """Check a writer's arguments -> (names tuple, controls (T, K) float32, frames (T,) int64,
    valid (T,) bool). Values on valid frames must be finite and in [0, 1] (within tolerance)."""
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate control names: {dup}")
    if any(not n for n in names):
        raise ValueError("empty control name")
    controls = np.asarray(controls, np.float64)
    if controls.ndim != 2 or controls.shape[1] != len(names):
        raise ValueError(f"controls must be (T, {len(names)}) for {len(names)} names, got {controls.shape}")
    t = controls.shape[0]
    if frame_ids is None:
        frames = np.arange(t, dtype=np.int64)
    else:
        raw = np.asarray(frame_ids)
        if raw.shape != (t,):
            raise ValueError(f"frame_ids must be ({t},), got {raw.shape}")
        if raw.size and (raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw))):
            raise ValueError("frame_ids must be integers")
        frames = raw.astype(np.int64)
        if len(np.unique(frames)) != t:
            raise ValueError("frame_ids must be unique")
    if valid is None:
        ok = np.ones(t, bool)
    else:
        ok = np.asarray(valid, bool)
        if ok.shape != (t,):
            raise ValueError(f"valid must be ({t},), got {ok.shape}")
    good = controls[ok]
    bad = ~np.isfinite(good) | (good < -RANGE_TOLERANCE) | (good > 1 + RANGE_TOLERANCE)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        frame = frames[np.flatnonzero(ok)[row]]
        raise ValueError(f"frame {frame}, control {names[col]!r}: {good[row, col]} is not a control value in "
                         f"[0, 1] (mark the frame invalid instead)")
    out = controls.astype(np.float32)
    out[~ok] = np.nan
    return names, out, frames, ok


def _check_fps(fps) -> Optional[float]:
    if fps is None:
        return None
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return fps


# --------------------------------------------------------------------------------------------
# controls CSV


def write_controls_csv(path: PathLike, names: Sequence[str], controls, frame_ids=None, valid=None,
                       fps: Optional[float] = None) -> Path:
    """Write a take's controls as the module doc's controls CSV -> the path.

    names: (K,) control names (the columns, in this order); controls: (T, K) values in [0, 1];
    frame_ids: (T,) the tracker's frame ids (default 0..T-1); valid: (T,) bool (None: no
    ``valid`` column, every frame valid); fps: adds ``time_s`` = frame / fps. Invalid frames'
    control cells are left empty.
    """
    names, values, frames, ok = _frame_table(names, controls, frame_ids, valid)
    fps = _check_fps(fps)
    reserved = {FRAME_COLUMN, TIME_COLUMN, VALID_COLUMN} & set(names)
    if reserved:
        raise ValueError(f"control names {sorted(reserved)} collide with the CSV's own columns")
    header = [FRAME_COLUMN] + ([TIME_COLUMN] if fps else []) + ([VALID_COLUMN] if valid is not None else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header + list(names))
    for frame, good, row in zip(frames, ok, values):
        cells = [str(int(frame))]
        if fps:
            cells.append(repr(int(frame) / fps))
        if valid is not None:
            cells.append("1" if good else "0")
        cells += [_number(v) for v in row] if good else [""] * len(names)
        writer.writerow(cells)
    return _write_atomic(path, buffer.getvalue())


def _csv_rows(path: PathLike) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV file; blank lines are skipped (and a UTF-8 byte
    order mark, which spreadsheet programs write, is not part of the first column's name)."""
    with reading(path, "CSV file"), open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        rows = []
        header = None
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if header is None:
                header = [c.strip() for c in cells]
            else:
                rows.append((reader.line_num, cells))
    if header is None:
        raise FlameFileError(path, "empty file: no header row")
    return header, rows


def _check_header(path: PathLike, header: list[str]) -> None:
    if any(not h for h in header):
        raise FlameFileError(path, f"header has an empty column name (column {header.index('') + 1})")
    seen = set()
    for h in header:
        if h in seen:
            raise FlameFileError(path, f"header names column {h!r} twice")
        seen.add(h)


def _cells(path: PathLike, header: list[str], line: int, cells: list[str]) -> list[str]:
    if len(cells) != len(header):
        raise FlameFileError(path, f"line {line} has {len(cells)} cells, the header has {len(header)} columns "
                                   f"(truncated or ragged row)")
    return [c.strip() for c in cells]


def _float_cell(path: PathLike, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FlameFileError(path, f"line {line}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FlameFileError(path, f"line {line}, column {column!r}: {text!r} is not a finite number")
    return value


def _control_cell(path: PathLike, line: int, column: str, text: str) -> float:
    value = _float_cell(path, line, column, text)
    if not -RANGE_TOLERANCE <= value <= 1 + RANGE_TOLERANCE:
        raise FlameFileError(path, f"line {line}, column {column!r}: {value} is outside the controls' range [0, 1]")
    return value


def read_controls_csv(path: PathLike) -> ControlsTake:
    """Read a controls CSV (module doc) -> :class:`ControlsTake` (extras empty).

    Checks: a ``frame`` column of unique integers, no duplicate or empty column names, at least
    one control column, every row as long as the header, numbers in every control cell of a
    valid frame (finite, in [0, 1]), empty or numbers on invalid ones, ``valid`` cells 0/1,
    ``time_s`` consistent with one frame rate. Any failure is a FlameFileError naming the line
    and column.
    """
    header, rows = _csv_rows(path)
    _check_header(path, header)
    if FRAME_COLUMN not in header:
        raise FlameFileError(path, f"no {FRAME_COLUMN!r} column (header: {','.join(header[:5])}...)")
    names = tuple(h for h in header if h not in (FRAME_COLUMN, TIME_COLUMN, VALID_COLUMN))
    if not names:
        raise FlameFileError(path, "no control columns")
    col = {h: i for i, h in enumerate(header)}
    t = len(rows)
    frames = np.zeros(t, np.int64)
    times = np.zeros(t, np.float64)
    valid = np.ones(t, bool)
    controls = np.full((t, len(names)), np.nan, np.float32)
    first_line = {}
    for r, (line, raw) in enumerate(rows):
        cells = _cells(path, header, line, raw)
        text = cells[col[FRAME_COLUMN]]
        if not re.fullmatch(r"[+-]?\d+", text):
            raise FlameFileError(path, f"line {line}, column {FRAME_COLUMN!r}: {text!r} is not an integer frame id")
        frames[r] = int(text)
        if frames[r] in first_line:
            raise FlameFileError(path, f"line {line}: frame {frames[r]} already appears on line {first_line[frames[r]]}")
        first_line[frames[r]] = line
        if TIME_COLUMN in col:
            times[r] = _float_cell(path, line, TIME_COLUMN, cells[col[TIME_COLUMN]])
        if VALID_COLUMN in col:
            flag = cells[col[VALID_COLUMN]]
            if flag not in ("0", "1"):
                raise FlameFileError(path, f"line {line}, column {VALID_COLUMN!r}: {flag!r} is not 0 or 1")
            valid[r] = flag == "1"
        for k, name in enumerate(names):
            text = cells[col[name]]
            if valid[r]:
                if not text:
                    raise FlameFileError(path, f"line {line}, column {name!r}: empty cell on a valid frame")
                controls[r, k] = _control_cell(path, line, name, text)
            elif text:
                _float_cell(path, line, name, text)   # a number or nothing; masked either way
    fps = _fps_from_times(path, frames, times) if TIME_COLUMN in col else None
    return ControlsTake(names, controls, frames, valid, fps, {})


def _fps_from_times(path: PathLike, frames: np.ndarray, times: np.ndarray) -> Optional[float]:
    """The frame rate that makes time_s = frame / fps on every row (None: only frame 0, which
    fixes no rate)."""
    nonzero = frames != 0
    if not nonzero.any():
        if np.any(times != 0):
            raise FlameFileError(path, f"{TIME_COLUMN!r} must be 0 at frame 0")
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = frames[nonzero] / times[nonzero]
    fps = float(np.median(rates))
    if not (math.isfinite(fps) and fps > 0):
        raise FlameFileError(path, f"{TIME_COLUMN!r} does not follow a positive frame rate")
    err = np.abs(times - frames / fps)
    worst = int(np.argmax(err))
    if err[worst] > 1e-6 * max(1.0, abs(times[worst])):
        raise FlameFileError(path, f"{TIME_COLUMN!r} of frame {frames[worst]} is {times[worst]}, but the other rows "
                                   f"say {fps:g} frames per second (expected {frames[worst] / fps})")
    return fps


# --------------------------------------------------------------------------------------------
# controls npz


def write_controls_npz(path: PathLike, names: Sequence[str], controls, frame_ids=None, valid=None,
                       fps: Optional[float] = None, **extras) -> Path:
    """Write a take's controls as the module doc's controls npz -> the path.

    names, controls, frame_ids, valid, fps as :func:`write_controls_csv` (invalid frames' rows
    are NaN); extras: more per-frame arrays by name, each with T rows and a plain numeric or
    bool dtype (``residual_mm=..., iterations=..., converged=...``).
    """
    names, values, frames, ok = _frame_table(names, controls, frame_ids, valid)
    fps = _check_fps(fps)
    arrays = dict(controls=values, names=np.asarray(names, dtype=str), frames=frames, valid=ok)
    if fps is not None:
        arrays["fps"] = np.asarray(fps, np.float64)
    for key, value in extras.items():
        if key in NPZ_KEYS:
            raise ValueError(f"extra array {key!r} collides with the file's own key")
        value = np.asarray(value)
        if value.dtype.kind not in "biuf" or value.ndim < 1 or value.shape[0] != len(frames):
            raise ValueError(f"extra array {key!r} must be per-frame numbers ({len(frames)}, ...), "
                             f"got {value.dtype} {value.shape}")
        arrays[key] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return _write_atomic(path, buffer.getvalue())


def _load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` with ``np.load(allow_pickle=False)``: an object (pickled)
    member is refused without being unpickled."""
    with reading(path, ".npz archive"):
        with open(path, "rb") as fh:   # a missing file says so, rather than "not a zip"
            fh.read(1)
        if not zipfile.is_zipfile(path):
            raise FlameFileError(path, "not an .npz archive (no zip structure)")
        out = {}
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    out[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise FlameFileError(path, f"{key!r} is an object array (a pickle); refused: a controls "
                                                   f"file holds plain arrays") from None
                    raise
        return out


def read_controls_npz(path: PathLike) -> ControlsTake:
    """Read a controls npz (module doc) -> :class:`ControlsTake`.

    Checks: ``controls`` a float (T, K) array, ``names`` (K,) unique non-empty unicode,
    ``frames`` (T,) unique integers, ``valid`` (T,) bool (absent: every frame valid, as files
    written before it existed), ``fps`` a positive 0-d number when present, every other member
    per-frame (T rows); valid frames' values finite and in [0, 1]. Invalid frames come back NaN
    whatever the file holds there.
    """
    arrays = _load_npz(path)
    missing = [k for k in ("controls", "names", "frames") if k not in arrays]
    if missing:
        raise FlameFileError(path, f"missing {', '.join(repr(k) for k in missing)} (a controls npz holds "
                                   f"controls, names, frames, valid)")
    controls, names, frames = arrays.pop("controls"), arrays.pop("names"), arrays.pop("frames")
    if controls.ndim != 2 or controls.dtype.kind != "f":
        raise FlameFileError(path, f"'controls' is {controls.dtype} {controls.shape}, expected a float (T, K) array")
    t, k = controls.shape
    if names.dtype.kind != "U" or names.shape != (k,):
        raise FlameFileError(path, f"'names' is {names.dtype} {names.shape}, expected ({k},) unicode strings")
    names = tuple(str(n) for n in names)
    if any(not n for n in names) or len(set(names)) != k:
        raise FlameFileError(path, "'names' has an empty or duplicate control name")
    if frames.dtype.kind not in "iu" or frames.shape != (t,):
        raise FlameFileError(path, f"'frames' is {frames.dtype} {frames.shape}, expected ({t},) integers")
    frames = frames.astype(np.int64)
    if len(np.unique(frames)) != t:
        raise FlameFileError(path, "'frames' repeats a frame id")
    valid = arrays.pop("valid", None)
    if valid is None:
        valid = np.ones(t, bool)
    elif valid.dtype != np.bool_ or valid.shape != (t,):
        raise FlameFileError(path, f"'valid' is {valid.dtype} {valid.shape}, expected ({t},) bool")
    fps = arrays.pop("fps", None)
    if fps is not None:
        if fps.shape != () or fps.dtype.kind not in "iuf" or not (np.isfinite(fps) and fps > 0):
            raise FlameFileError(path, f"'fps' must be one positive number, got {fps.dtype} {fps.shape}")
        fps = float(fps)
    values = controls.astype(np.float32)
    good = controls[valid]
    bad = ~np.isfinite(good) | (good < -RANGE_TOLERANCE) | (good > 1 + RANGE_TOLERANCE)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise FlameFileError(path, f"'controls' at frame {frames[np.flatnonzero(valid)[row]]}, control "
                                   f"{names[col]!r}: {good[row, col]} is not a value in [0, 1] on a valid frame")
    values[~valid] = np.nan
    for key, value in arrays.items():
        if value.ndim < 1 or value.shape[0] != t:
            raise FlameFileError(path, f"{key!r} is {value.dtype} {value.shape}, expected per-frame values ({t}, ...)")
    return ControlsTake(names, values, frames, valid, fps, dict(arrays))


# --------------------------------------------------------------------------------------------
# rotations (plain NumPy: the exporters must not need JAX)


def axis_angle_to_yaw_pitch_roll(axis_angle) -> np.ndarray:
    """(..., 3) axis-angle (radians) -> (..., 3) yaw, pitch, roll (radians) with
    ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` in FLAME's frame (module doc)."""
    aa = np.asarray(axis_angle, np.float64)
    if aa.shape[-1:] != (3,):
        raise ValueError(f"axis-angle rotations must be (..., 3), got {aa.shape}")
    theta2 = (aa ** 2).sum(-1)
    theta = np.sqrt(theta2)
    small = theta2 < 1e-8
    safe = np.where(small, 1.0, theta)
    # Rodrigues: R = I + a K + b K^2 with K the cross-product matrix of the (unnormalised) axis;
    # a = sin t / t and b = (1 - cos t) / t^2 switch to their series near zero.
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / safe ** 2)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    r = np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)
    yaw = np.arctan2(r[..., 0, 2], r[..., 2, 2])
    pitch = np.arcsin(np.clip(-r[..., 1, 2], -1.0, 1.0))
    roll = np.arctan2(r[..., 1, 0], r[..., 1, 1])
    return np.stack([yaw, pitch, roll], -1)


# --------------------------------------------------------------------------------------------
# Live Link Face CSV


def live_link_name(control: str) -> str:
    """The app's name of an ARKit control name: ``eyeBlinkLeft`` -> ``EyeBlinkLeft``."""
    return control[:1].upper() + control[1:]


def _fps_fraction(fps: float) -> Fraction:
    """``fps`` as an exact fraction (29.97 -> 2997/100, 30000/1001 stays 30000/1001), so that
    timecodes of integer frames at integer rates are exact and NTSC rates do not drift."""
    return Fraction(fps).limit_denominator(100_000)


def _timecode_frames(text: str, fps: Fraction) -> Optional[Fraction]:
    """Frames from 00:00:00:00 (exact) of an ``HH:MM:SS:FF.mmm`` timecode; None if malformed."""
    match = _TIMECODE.match(text.strip())
    if not match:
        return None
    hours, minutes, seconds = (int(g) for g in match.groups()[:3])
    frame = Fraction(match.group(4))
    if minutes >= 60 or seconds >= 60 or frame >= fps:
        return None
    return (hours * 3600 + minutes * 60 + seconds) * fps + frame


def format_timecode(frame, fps: float = 30.0) -> str:
    """``HH:MM:SS:FF.mmm`` of a (possibly fractional) frame count from 00:00:00:00 at ``fps``:
    whole seconds, then the frame within the second with three decimals (e.g. frame 61 at 60
    fps -> ``00:00:01:01.000``). Hours go past 23 rather than wrap."""
    rate = _fps_fraction(_check_fps(fps))
    position = Fraction(frame) if not isinstance(frame, float) else Fraction(frame).limit_denominator(1_000_000)
    if position < 0:
        raise ValueError(f"timecodes start at 00:00:00:00; frame {frame} is before that")
    return _format_position(position, rate)


def _format_position(position: Fraction, rate: Fraction) -> str:
    """:func:`format_timecode` of an exact frame count at an exact rate."""
    seconds = math.floor(position / rate)
    milli = round((position - seconds * rate) * 1000)
    if milli >= rate * 1000:   # rounded up onto the next second
        seconds, milli = seconds + 1, 0
    return (f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:"
            f"{milli // 1000:02d}.{milli % 1000:03d}")


def _arkit_columns(names: Sequence[str]) -> np.ndarray:
    """Column of each :data:`LIVE_LINK_BLENDSHAPES` entry in ``names`` (the rig's ARKit
    control names); a ValueError naming the missing / unknown controls if it is not ARKit's set."""
    by_app = {live_link_name(str(n)): i for i, n in enumerate(names)}
    missing = [n[:1].lower() + n[1:] for n in LIVE_LINK_BLENDSHAPES if n not in by_app]
    unknown = [str(n) for n in names if live_link_name(str(n)) not in LIVE_LINK_BLENDSHAPES]
    if missing or unknown or len(by_app) != len(names):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ARKit controls: {', '.join(missing)}")
        if unknown:
            parts.append(f"{len(unknown)} controls ARKit does not have: {', '.join(unknown[:10])}"
                         + (" ..." if len(unknown) > 10 else ""))
        if not parts:
            parts.append("a control name appears twice")
        raise ValueError("a Live Link Face file needs the ARKit control set (flamejax/semantic/data/arkit.yaml); "
                         + "; ".join(parts))
    return np.array([by_app[n] for n in LIVE_LINK_BLENDSHAPES])


def _rotations(value, ok: np.ndarray, what: str) -> np.ndarray:
    """(T, 3) yaw, pitch, roll of (T, 3) axis-angle rotations (None: zeros); non-finite values
    are allowed on invalid frames only (they are held over, never written)."""
    t = len(ok)
    if value is None:
        return np.zeros((t, 3))
    value = np.asarray(value, np.float64)
    if value.shape != (t, 3):
        raise ValueError(f"{what} must be ({t}, 3) axis-angle, got {value.shape}")
    finite = np.isfinite(value).all(-1)
    if not finite[ok].all():
        raise ValueError(f"{what} holds NaN or infinite values on valid frames (mark those frames invalid)")
    return axis_angle_to_yaw_pitch_roll(np.where(finite[:, None], value, 0.0))


def _hold(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Each invalid row replaced by the last valid row before it (zeros before the first)."""
    out = np.where(ok[:, None], values, 0.0)
    last = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), -1)) if len(ok) else np.zeros(0, int)
    held = last >= 0
    out[held] = out[last[held]]
    return out


def write_live_link_csv(path: PathLike, names: Sequence[str], controls, fps: float = 30,
                        start_timecode: str = "00:00:00:00.000", head_rotation=None, left_eye=None,
                        right_eye=None, valid=None, frame_ids=None) -> Path:
    """Write an ARKit-rig take as a Live Link Face CSV (module doc) -> the path.

    names: (52,) the rig's ARKit control names (camelCase, any order; the columns are
    reordered to the app's); controls: (T, 52) in [0, 1]; fps: frames per second (30 or 60 for
    Unreal's importer); start_timecode: the timecode of frame 0; head_rotation: (T, 3)
    axis-angle, FLAME's global pose (None: zeros); left_eye, right_eye: (T, 3) axis-angle,
    FLAME's ``eye_pose[:, :3]`` and ``eye_pose[:, 3:]`` (None: zeros); valid: (T,) bool (invalid
    frames hold the last valid frame, module doc); frame_ids: (T,) frame numbers of the rows
    (default 0..T-1): row i's timecode is start_timecode + frame_ids[i] frames.
    """
    order = _arkit_columns(names)
    names, values, frames, ok = _frame_table(names, controls, frame_ids, valid)
    rate = _fps_fraction(_check_fps(fps))
    start = _timecode_frames(start_timecode, rate)
    if start is None:
        raise ValueError(f"start_timecode must be HH:MM:SS:FF.mmm with FF below {float(rate):g}, got {start_timecode!r}")
    t = len(frames)
    if t and start + int(frames.min()) < 0:
        raise ValueError(f"frame {int(frames.min())} falls before 00:00:00:00 from start {start_timecode}")
    rotations = np.concatenate([_rotations(head_rotation, ok, "head_rotation"), _rotations(left_eye, ok, "left_eye"),
                                _rotations(right_eye, ok, "right_eye")], axis=1)
    table = _hold(np.concatenate([values[:, order].astype(np.float64), rotations], axis=1), ok)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LIVE_LINK_HEADER)
    for frame, row in zip(frames, table):
        timecode = _format_position(start + int(frame), rate)
        writer.writerow([timecode, str(LIVE_LINK_COUNT), *(_number(v) for v in row)])
    return _write_atomic(path, buffer.getvalue())


def _infer_live_link_fps(frame_fields: Iterable[Fraction]) -> float:
    """Unreal's rule: the app records at 30 or 60 fps, and only at 60 does a timecode's frame
    field reach 30."""
    return 60.0 if any(f >= 30 for f in frame_fields) else 30.0


def read_live_link_csv(path: PathLike, fps: Optional[float] = None) -> LiveLinkTake:
    """Read a Live Link Face CSV (the app's recordings or :func:`write_live_link_csv`'s) ->
    :class:`LiveLinkTake`.

    Columns are matched by name (case-insensitively, so camelCase exports read too), and must be
    exactly ``Timecode``, ``BlendShapeCount``, the 52 blendshapes and the 9 rotations. Every row
    must have every cell: a ``HH:MM:SS:FF.mmm`` timecode, a BlendShapeCount equal to the number of
    value columns (61), finite numbers, blendshapes in [0, 1]. fps: the frame rate of the
    timecodes (None: 60 if some frame field reaches 30, else 30, as Unreal's importer infers).
    """
    header, rows = _csv_rows(path)
    _check_header(path, header)
    lowered = [h.lower() for h in header]
    if lowered[:2] != ["timecode", "blendshapecount"]:
        raise FlameFileError(path, f"not a Live Link Face CSV: the first columns are {header[:2]}, expected "
                                   f"['Timecode', 'BlendShapeCount']")
    value_names = LIVE_LINK_BLENDSHAPES + LIVE_LINK_ROTATIONS
    index = {h: i for i, h in enumerate(lowered)}
    if len(index) != len(lowered):
        raise FlameFileError(path, "header names a column twice (ignoring case)")
    missing = [n for n in value_names if n.lower() not in index]
    unknown = [h for h in header[2:] if h.lower() not in {n.lower() for n in value_names}]
    if missing or unknown:
        raise FlameFileError(path, "columns are not Live Link Face's: "
                                   + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                                           f"unknown {', '.join(unknown)}" if unknown else "") if p))
    columns = np.array([index[n.lower()] for n in value_names])
    t = len(rows)
    table = np.zeros((t, len(value_names)), np.float64)
    timecodes = []
    parsed = []   # (h, m, s, frame field) per row
    for r, (line, raw) in enumerate(rows):
        cells = _cells(path, header, line, raw)
        match = _TIMECODE.match(cells[0])
        if not match or int(match.group(2)) >= 60 or int(match.group(3)) >= 60:
            raise FlameFileError(path, f"line {line}, column 'Timecode': {cells[0]!r} is not an HH:MM:SS:FF.mmm timecode")
        timecodes.append(cells[0])
        parsed.append((int(match.group(1)), int(match.group(2)), int(match.group(3)), Fraction(match.group(4))))
        count = cells[1]
        if count != str(LIVE_LINK_COUNT):
            raise FlameFileError(path, f"line {line}, column 'BlendShapeCount': {count!r}, expected "
                                       f"{LIVE_LINK_COUNT} (the number of value columns)")
        for j, c in enumerate(columns):
            name = value_names[j]
            if j < len(LIVE_LINK_BLENDSHAPES):
                table[r, j] = _control_cell(path, line, name, cells[c])
            else:
                table[r, j] = _float_cell(path, line, name, cells[c])
    if fps is None:
        fps = _infer_live_link_fps(p[3] for p in parsed)
    rate = _fps_fraction(_check_fps(fps))
    frames = np.zeros(t, np.int64)
    day, offset, previous = _DAY_SECONDS * rate, 0, None
    for r, (h, m, s, f) in enumerate(parsed):
        if f >= rate:
            raise FlameFileError(path, f"line {rows[r][0]}, column 'Timecode': frame field {float(f):g} is not below "
                                       f"the frame rate {float(rate):g}")
        position = (h * 3600 + m * 60 + s) * rate + f + offset
        if previous is not None and position < previous - day / 2:
            offset += day   # a time-of-day timecode passed midnight
            position += day
        frames[r] = math.floor(position)   # FF.mmm: frame FF, a fraction of the way through it
        previous = position
    n = len(LIVE_LINK_BLENDSHAPES)
    values = table.astype(np.float32)
    return LiveLinkTake(LIVE_LINK_BLENDSHAPES, values[:, :n], values[:, n:n + 3], values[:, n + 3:n + 6],
                        values[:, n + 6:], tuple(timecodes), frames, float(rate))


def live_link_controls(take: LiveLinkTake, names: Sequence[str]) -> np.ndarray:
    """(T, K) a Live Link take's blendshape values in the column order of a rig's ARKit control
    ``names`` (camelCase): what :func:`write_live_link_csv` was given, read back."""
    order = _arkit_columns(names)
    out = np.empty((len(take.values), len(names)), np.float32)
    out[:, order] = take.values
    return out


__all__ = [
    "ControlsTake", "LiveLinkTake", "LIVE_LINK_BLENDSHAPES", "LIVE_LINK_ROTATIONS", "LIVE_LINK_HEADER",
    "RANGE_TOLERANCE", "axis_angle_to_yaw_pitch_roll", "format_timecode", "live_link_controls", "live_link_name",
    "read_controls_csv", "read_controls_npz", "read_live_link_csv", "write_controls_csv", "write_controls_npz",
    "write_live_link_csv",
]
