"""A user's data folder -> the :class:`~flamejax.synthetic.world.World` every stage works on.

A researcher brings their own licensed FLAME model (``model=flame2020 model.path=...``), the
face-calibration data folder (the semantic basis B, offset g and Simon-Says region masks) and,
per performer, the tracker outputs of their Simon-Says video and of the performances to solve::

    <root>/face_calibration/                 controls_simple.txt, semantic_to_flame_deltas_basis.npy,
                                             identities/<name>/..., masks/<i>.npy  (flamejax.io.face_calibration)
    <root>/performers/<performer>/simon_says[.npz]         the Simon-Says take, any tracker output
                                                           flamejax.io.read_tracked reads (a folder or a file)
    <root>/performers/<performer>/simon_says_labels.yaml   its hold frames (flamejax.io.labels)
    <root>/performers/<performer>/<take>[.npz]             every other take, named by its file/folder stem

:func:`read_user_data` reads and checks all of it against the model and the control set, and
returns a World whose generic rig is the face-calibration basis (the "uncalibrated" rig), whose
performers' identities are the shapes their tracker estimated on the Simon-Says take, and whose
``tracked[<tracker>][performer][take]`` holds each take's tracked expression and poses. What is
only known on the synthetic world is absent: ``generic.target`` is None and the sequences'
intended controls are NaN, except on the Simon-Says holds, where they are the prompted
expression's targets (what calibration fits). Frames a tracker lost stay in place, marked in
``world.valid``; they are dropped from the Simon-Says holds (a lost frame never enters a
calibration sample) and their solved controls are reported as invalid by the entry points.

Every problem is a :class:`~flamejax.io.errors.FlameFileError` naming the file: a missing
folder or file, a control list that is not the control set's, a basis for another number of
FLAME expression coefficients than the model's, masks for another mesh (5143-vertex VHAP
meshes, say) or for another number of Simon-Says expressions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

from flamejax.flame import FlameModel
from flamejax.io.errors import FlameFileError
from flamejax.io.face_calibration import CONTROLS_FILE, BASIS_FILE, FLAME_VERTICES, MASKS_DIR, read_face_calibration
from flamejax.io.labels import mask_invalid, read_labels
from flamejax.io.trackers import TRACKERS, detect_tracker, read_tracked
from flamejax.semantic.controls import ControlSet, load_control_set
from flamejax.semantic.rig import JAW_CONVENTIONS, make_rig
from flamejax.synthetic.semantic_model import GenericSemanticModel
from flamejax.synthetic.sequences import Sequence
from flamejax.synthetic.trackers import TrackedSequence
from flamejax.synthetic.world import TAKES, World

PERFORMERS_DIR = "performers"
SIMON_SAYS = TAKES[0]           # the calibration take's name: "simon_says"


@dataclasses.dataclass(frozen=True)
class UserDataConfig:
    """Where a user's data is and how to read it (conf/data/folder.yaml).

    root: the data folder (layout in the module doc); face_calibration: the face-calibration
    folder, relative to ``root`` or absolute; identity: which ``identities/<name>`` gives the
    generic rig's offset g (None: the only one there); jaw_convention: how B's jaw rows are read
    ("face_calibration": the authors' released data; "xyz": flamejax's own exports, see
    :mod:`flamejax.semantic.rig`); tracker: "auto" or a :data:`flamejax.io.trackers.TRACKERS`
    name; labels: the Simon-Says labels file's name in each performer folder; fps: the videos'
    frame rate (frames per second); control_set: the rig's control set (its names must be
    ``controls_simple.txt``'s)."""

    root: str
    face_calibration: str = "face_calibration"
    identity: Optional[str] = None
    jaw_convention: str = "face_calibration"
    tracker: str = "auto"
    labels: str = "simon_says_labels.yaml"
    fps: float = 30.0
    control_set: str = "metahuman"

    def __post_init__(self):
        if not self.root or self.root == "???":
            raise ValueError("data.root is required: the folder holding face_calibration/ and performers/")
        if self.jaw_convention not in JAW_CONVENTIONS:
            raise ValueError(f"jaw_convention must be one of {JAW_CONVENTIONS}, got {self.jaw_convention!r}")
        if self.tracker != "auto" and self.tracker not in TRACKERS:
            raise ValueError(f"tracker must be 'auto' or one of {TRACKERS}, got {self.tracker!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")

    @property
    def face_calibration_dir(self) -> Path:
        return Path(self.root) / self.face_calibration   # an absolute face_calibration wins

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """A short hash of the config and of the data's files (names, sizes, modification
        times): results computed from changed files never pass for current ones."""
        h = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode())
        for folder in dict.fromkeys([Path(self.root), self.face_calibration_dir]):
            h.update(fingerprint(folder).encode())
        return h.hexdigest()[:12]


def fingerprint(folder: os.PathLike) -> str:
    """"<relative path> <size> <mtime_ns>" per file under ``folder`` (hidden files and folders
    skipped), sorted, one per line; "" for a missing folder."""
    folder = Path(folder)
    lines = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                st = path.stat()
                lines.append(f"{path.relative_to(folder)} {st.st_size} {st.st_mtime_ns}")
    return "\n".join(sorted(lines))


class UserPerformer(NamedTuple):
    """name; beta (n_shape,) the identity (the tracker's shape estimate on the Simon-Says take);
    folder: where the performer's takes are."""

    name: str
    beta: np.ndarray
    folder: str


def _take_entries(folder: Path, labels: str) -> dict[str, Path]:
    """Take name -> its tracker output (a folder, or a file named by its stem) in a performer folder."""
    takes: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == labels:
            continue
        name = entry.name if entry.is_dir() else entry.name.split(".")[0]
        if name in takes:
            raise FlameFileError(entry, f"a second output for take {name!r} (also {takes[name].name}); "
                                        "keep one file or folder per take")
        takes[name] = entry
    return takes


def _check_rig_data(fc, cs: ControlSet, model: FlameModel, folder: Path) -> None:
    """The face-calibration data agrees with the control set and the model, or an error naming the file."""
    if fc.control_names != cs.names:
        missing = [n for n in cs.names if n not in fc.control_names]
        extra = [n for n in fc.control_names if n not in cs.names]
        problem = (f"names {len(fc.control_names)} controls, the {cs.name} control set has {len(cs.names)}"
                   if missing or extra else "lists the control set's names in another order")
        detail = "".join(f"; {what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                         for what, names in (("missing", missing), ("not in the set", extra)) if names)
        raise FlameFileError(folder / CONTROLS_FILE, f"{problem}{detail} (controls=<set> chooses the set)")
    n_rig_expr = fc.basis.shape[0] - 3
    if model.n_expr != n_rig_expr:
        raise FlameFileError(folder / BASIS_FILE, f"drives {n_rig_expr} FLAME expression coefficients but the "
                                                  f"model has {model.n_expr} (model.n_expr={model.n_expr}; "
                                                  f"load the model with n_expr={n_rig_expr})")
    n_prompts = len(cs.simon_says.expressions)
    if len(fc.masks) != n_prompts:
        raise FlameFileError(folder / MASKS_DIR, f"holds {len(fc.masks)} masks but the {cs.name} control set "
                                                 f"has {n_prompts} Simon-Says expressions (masks/0..{n_prompts - 1}.npy)")


def _read_face_calibration(cfg: UserDataConfig, cs: ControlSet, model: FlameModel):
    folder = cfg.face_calibration_dir
    try:
        fc = read_face_calibration(folder, cfg.identity, n_vertices=model.n_vertices)
    except FlameFileError as e:
        if "'mask'" in e.problem and "out of range" in e.problem:
            hint = (f" (the model has {model.n_vertices} vertices; the masks are for FLAME 2020's "
                    f"{FLAME_VERTICES}: is model.path the FLAME model these masks belong to?)")
            raise FlameFileError(e.path, e.problem + hint) from e
        raise
    _check_rig_data(fc, cs, model, folder)
    return fc


def _tracked(record, beta: np.ndarray, dtype) -> TrackedSequence:
    """A reader's record -> the world's TrackedSequence, in the performer's one identity: the
    method compares expression geometry, so every take is evaluated with the Simon-Says shape."""
    t = record.n_frames
    f = lambda a: np.asarray(a, dtype)   # noqa: E731
    return TrackedSequence(expression=f(record.expression), jaw_pose=f(record.jaw_pose),
                           global_pose=f(record.global_pose), neck_pose=f(record.neck_pose),
                           translation=f(record.translation), shape=f(beta),
                           residual=np.zeros(t, dtype), fit_residual=np.zeros(t, dtype))


def read_user_data(cfg: UserDataConfig, model: FlameModel) -> World:
    """Read and check a user's data folder (module doc) for ``model`` -> World. Lost frames and
    coefficient counts fitted to the model are reported with warnings (their records' issues)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise FlameFileError(root, "no such data folder (data.root)")
    cs = load_control_set(cfg.control_set)
    fc = _read_face_calibration(cfg, cs, model)
    rig = make_rig(fc.basis, fc.global_expression, n_expr=fc.basis.shape[0] - 3,
                   jaw_convention=cfg.jaw_convention, controls=fc.control_names)
    generic = GenericSemanticModel(model, None, rig, np.full(len(cs.names), np.nan), None, None)

    performers_dir = root / PERFORMERS_DIR
    if not performers_dir.is_dir():
        raise FlameFileError(performers_dir, "no such folder (expected performers/<name>/ with a simon_says take)")
    names = sorted(d.name for d in performers_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise FlameFileError(performers_dir, "holds no performer folders")

    dtype = np.dtype(model.dtype)
    targets = np.asarray(cs.simon_says.targets, np.float32)   # (E, K): expression e's prompted controls
    tracker_name = None if cfg.tracker == "auto" else cfg.tracker
    performers, sequences, tracked, frame_ids, valid = {}, {}, {}, {}, {}
    for name in names:
        folder = performers_dir / name
        takes = _take_entries(folder, cfg.labels)
        if SIMON_SAYS not in takes:
            raise FlameFileError(folder, f"no Simon-Says take (expected {SIMON_SAYS}/ or {SIMON_SAYS}.npz, "
                                         "the tracker's output of the calibration video)")
        labels_path = folder / cfg.labels
        if not labels_path.is_file():
            raise FlameFileError(labels_path, "no such labels file: list the Simon-Says hold frames "
                                              "(python -m experiments.label_simon_says proposes them)")
        if tracker_name is None:
            tracker_name = detect_tracker(takes[SIMON_SAYS])
        records = {take: read_tracked(path, tracker=cfg.tracker, n_expr=model.n_expr, n_shape=model.n_shape)
                   for take, path in takes.items()}
        for take, record in records.items():
            if record.issues:
                warnings.warn(f"{takes[take]}: " + "; ".join(record.issues), stacklevel=2)
        ss = records[SIMON_SAYS]
        beta = np.asarray(ss.shape, dtype)
        hold = mask_invalid(read_labels(labels_path, cs, ss.frame_ids), ss.valid, cs).hold
        performers[name] = UserPerformer(name, beta, str(folder))
        sequences[name], frame_ids[name], valid[name] = {}, {}, {}
        for take, record in records.items():
            controls = np.full((record.n_frames, len(cs.names)), np.nan, np.float32)
            take_hold = hold if take == SIMON_SAYS else np.full(record.n_frames, -1, np.int32)
            held = take_hold >= 0
            controls[held] = targets[take_hold[held]]
            sequences[name][take] = Sequence(take, controls, take_hold, np.asarray(record.global_pose, np.float32),
                                             np.asarray(record.neck_pose, np.float32), float(cfg.fps))
            tracked.setdefault(tracker_name, {}).setdefault(name, {})[take] = _tracked(record, beta, dtype)
            frame_ids[name][take] = np.asarray(record.frame_ids, np.int64)
            valid[name][take] = np.asarray(record.valid, bool)
    return World(cfg, cs, generic, performers, sequences, tracked, tuple(fc.masks), frame_ids, valid)
