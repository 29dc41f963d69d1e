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

import re
from pathlib import Path
from typing import Optional

from flamejax.io.errors import PathLike, TrackerOutputError
from flamejax.io.trackers.files import load_npy, load_npz, load_torch_file
from flamejax.io.trackers.frames import _frame_files, _read_frame_file, read_frames, rotation_6d_to_axis_angle
from flamejax.io.trackers.own import read_own, save_tracked
from flamejax.io.trackers.record import PIVOTS, TrackedSequence, to_flame_params
from flamejax.io.trackers.regressors import read_deca, read_smirk
from flamejax.io.trackers.vhap import read_vhap

TRACKERS = ("metrical", "pixel3dmm", "vhap", "smirk", "deca", "flamejax")
_ALIASES = {"metrical-tracker": "metrical", "metrical_tracker": "metrical", "emoca": "deca",
            "ours": "flamejax", "npz": "flamejax"}


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
