"""The Simon-Says labels file: which frames of a tracked take hold which expression.

A small YAML file a person writes or checks (:func:`flamejax.holds.propose_holds` proposes
one), read into the ``hold`` array calibration takes
(:func:`flamejax.calibrate.simon_says_data`)::

    # Simon-Says hold frames of <performer>: expression name -> [first, last] frame ids
    # (inclusive), frame ids as the tracker numbered them (TrackedSequence.frame_ids)
    control_set: metahuman
    holds:
      Neutral: [0, 14]
      Brows Down: [40, 62]
      Jaw Open: [[300, 310], [314, 322]]     # several ranges: a list of [first, last]

Rules, each broken one a :class:`~flamejax.io.errors.FlameFileError` naming the file and the
problem: ``control_set`` is required and must be the control set the labels are read for (the
MetaHuman and ARKit sets share their expression names, so the names alone cannot tell);
expression names match the control set's exactly (an unknown one is reported with the closest
name); every range's ends are frame ids of the take; no frame is in two ranges; no key twice.
An expression left out is allowed (its calibration sample is just absent) but warned about.
The file is parsed with ``yaml.safe_load`` only, so a tag such as ``!!python/object/apply``
is refused, never run.

:func:`write_labels` writes the same format (atomically: a temporary file, then
``os.replace``) and reads it back as a check, so ``read_labels(write_labels(hold))`` is
``hold`` exactly. :func:`mask_invalid` drops the frames the tracker lost from the holds, so
that they never enter a calibration sample.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
import warnings
from typing import Any, NamedTuple, Optional

import numpy as np
import yaml

from flamejax.io.errors import FlameFileError, PathLike

_KEYS = ("control_set", "holds")
_HEADER = ("Simon-Says hold frames: expression name -> [first, last] frame ids (inclusive), or a list of\n"
           "such ranges; frame ids as the tracker numbered them (TrackedSequence.frame_ids)")


def _resolve(simon_says, control_set: Optional[str]):
    """(SimonSays, control-set name or None) from a ControlSet or a SimonSays (+ name)."""
    name = getattr(simon_says, "name", None) if hasattr(simon_says, "simon_says") else None
    ss = getattr(simon_says, "simon_says", simon_says)
    if control_set is not None and name is not None and control_set != name:
        raise ValueError(f"control_set={control_set!r} but the control set given is {name!r}")
    return ss, control_set if control_set is not None else name


def _ranges_of(indices: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive indices -> [(first, last)]."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _check_frame_ids(frame_ids) -> np.ndarray:
    ids = np.asarray(frame_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"frame_ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if np.any(np.diff(ids) <= 0):
        raise ValueError("frame_ids must be strictly increasing")
    return ids.astype(np.int64)


def _duplicate_keys(text: str) -> list[str]:
    """Keys that appear twice in one mapping (safe_load keeps the last silently). yaml.compose
    builds nodes only, never objects, so it is as safe as safe_load."""
    found = []

    def walk(node):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        found.append(key.value)
                    seen.add(key.value)
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(yaml.compose(text, Loader=yaml.SafeLoader))
    return found


def _frame_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(text: str, source: str, ss, ids: np.ndarray, name: Optional[str]) -> tuple[np.ndarray, list[str]]:
    """The labels text -> (hold (T,) int32, names not labelled). Raises FlameFileError(source)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlameFileError(source, f"not valid YAML (or a tag safe_load refuses): {exc}") from None
    if not isinstance(data, dict):
        raise FlameFileError(source, "expected a mapping with 'control_set' and 'holds' at the top level")
    duplicates = _duplicate_keys(text)
    if duplicates:
        raise FlameFileError(source, f"key(s) given twice: {', '.join(map(repr, duplicates))}")
    for key in data:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FlameFileError(source, f"unknown key {key!r}{hint}; expected {', '.join(_KEYS)}")
    file_set = data.get("control_set")
    if not isinstance(file_set, str) or not file_set:
        raise FlameFileError(source, "'control_set' (the control set's name, e.g. metahuman) is required: the "
                                     "control sets share expression names, so the names alone cannot tell")
    if name is not None and file_set != name:
        raise FlameFileError(source, f"labels are for control set {file_set!r}, but are read for {name!r}")
    holds = data.get("holds")
    if holds is None:
        holds = {}
    if not isinstance(holds, dict):
        raise FlameFileError(source, "'holds' must map expression names to [first, last] frame ids")
    names = ss.expression_names
    index = {n: i for i, n in enumerate(names)}
    hold = np.full(len(ids), -1, np.int32)
    owner: dict[int, str] = {}     # frame index -> "name [a, b]" that claimed it
    for expr, value in holds.items():
        if not isinstance(expr, str) or expr not in index:
            close = difflib.get_close_matches(str(expr), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FlameFileError(source, f"unknown expression {expr!r}{hint} (names must match the control "
                                         f"set's exactly)")
        if isinstance(value, list) and len(value) == 2 and all(_frame_id(v) for v in value):
            ranges = [value]
        elif isinstance(value, list) and value and all(
                isinstance(r, list) and len(r) == 2 and all(_frame_id(v) for v in r) for r in value):
            ranges = value
        else:
            raise FlameFileError(source, f"{expr}: expected [first, last] frame ids or a list of such ranges, "
                                         f"got {value!r}")
        for a, b in ranges:
            label = f"{expr} [{a}, {b}]"
            if a > b:
                raise FlameFileError(source, f"{label}: first frame id is after the last")
            for end in (a, b):
                where = int(np.searchsorted(ids, end))
                if where >= len(ids) or ids[where] != end:
                    span = f"{ids[0]}..{ids[-1]}" if len(ids) else "none"
                    raise FlameFileError(source, f"{label}: frame id {end} is not a frame of the take (frame ids "
                                                 f"{span}, {len(ids)} frames)")
            lo, hi = int(np.searchsorted(ids, a)), int(np.searchsorted(ids, b))
            for t in range(lo, hi + 1):
                if t in owner:
                    raise FlameFileError(source, f"{label} overlaps {owner[t]} (frame id {ids[t]})")
                owner[t] = label
            hold[lo:hi + 1] = index[expr]
    missing = [n for n in names if n not in holds]
    return hold, missing


def read_labels(path: PathLike, simon_says, frame_ids, *, control_set: Optional[str] = None) -> np.ndarray:
    """Read a labels file (module doc) -> hold (T,) int32: expression index on hold frames, -1
    elsewhere, aligned with ``frame_ids`` (T,) (the take's :attr:`TrackedSequence.frame_ids`).

    simon_says: the :class:`~flamejax.semantic.controls.ControlSet` (its name is checked
    against the file's ``control_set``) or its :class:`~flamejax.semantic.controls.SimonSays`
    (then pass ``control_set=<name>`` for the check). Expressions not labelled are allowed and
    warned about. Every problem with the file raises :class:`FlameFileError` naming it.
    """
    ss, name = _resolve(simon_says, control_set)
    ids = _check_frame_ids(frame_ids)
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise FlameFileError(source, "no such file") from None
    except IsADirectoryError:
        raise FlameFileError(source, "is a directory, expected a labels .yaml file") from None
    except UnicodeDecodeError as exc:
        raise FlameFileError(source, f"not a text file: {exc}") from None
    except OSError as exc:
        raise FlameFileError(source, f"cannot be read: {exc.strerror or exc}") from None
    hold, missing = _parse(text, source, ss, ids, name)
    if missing:
        warnings.warn(f"{source}: {len(missing)} expression(s) not labelled, their calibration samples will be "
                      f"absent: {', '.join(missing)}", stacklevel=2)
    return hold


def _key(name: str) -> str:
    """The name as a YAML mapping key: plain when it reads back as itself, else double-quoted."""
    try:
        if yaml.safe_load(f"{name}: 0") == {name: 0}:
            return name
    except yaml.YAMLError:
        pass
    return json.dumps(name)   # a JSON string is a YAML double-quoted scalar


def labels_text(hold, frame_ids, simon_says, comment: Optional[str] = None, *,
                control_set: Optional[str] = None) -> str:
    """The labels file's text for ``hold`` (T,) int (expression index or -1) at ``frame_ids`` (T,)."""
    ss, name = _resolve(simon_says, control_set)
    if name is None:
        raise ValueError("the labels file names its control set: pass the ControlSet, or control_set=<name>")
    ids = _check_frame_ids(frame_ids)
    hold = np.asarray(hold)
    names = ss.expression_names
    if hold.shape != ids.shape or not np.issubdtype(hold.dtype, np.integer):
        raise ValueError(f"hold must be integers of shape {ids.shape}, got {hold.dtype} {hold.shape}")
    if hold.size and (hold.min() < -1 or hold.max() >= len(names)):
        raise ValueError(f"hold values must be -1 or an expression index in [0, {len(names)})")
    lines = [f"# {line}".rstrip() for line in (comment.splitlines() if comment else [])]
    lines += [f"# {line}" for line in _HEADER.splitlines()]
    lines += [f"control_set: {_key(name)}"]
    entries, missing = [], []
    for e, expr in enumerate(names):
        runs = [[int(ids[a]), int(ids[b])] for a, b in _ranges_of(np.flatnonzero(hold == e))]
        if not runs:
            missing.append(expr)
            continue
        value = runs[0] if len(runs) == 1 else runs
        entries.append(f"  {_key(expr)}: {json.dumps(value)}")
    lines += ["holds:" + ("" if entries else " {}")] + entries
    if missing:
        lines.append(f"# not labelled: {', '.join(missing)}")
    return "\n".join(lines) + "\n"


def write_labels(path: PathLike, hold, frame_ids, simon_says, comment: Optional[str] = None, *,
                 control_set: Optional[str] = None) -> None:
    """Write ``hold`` (T,) as a labels file (module doc) at ``path``, atomically.

    frame_ids (T,): the take's frame ids; simon_says: the ControlSet (or SimonSays and
    ``control_set=<name>``); comment: lines put first, as ``#`` comments (e.g. whose take, how
    the holds were found). The text is read back before it is written, so the file always
    round-trips to ``hold``.
    """
    text = labels_text(hold, frame_ids, simon_says, comment, control_set=control_set)
    ss, name = _resolve(simon_says, control_set)
    ids = _check_frame_ids(frame_ids)
    back, _ = _parse(text, os.fspath(path), ss, ids, name)
    if not np.array_equal(back, np.asarray(hold)):   # pragma: no cover - a bug in labels_text
        raise AssertionError("labels text does not read back as the holds it was written from")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".labels-", suffix=".yaml.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def labels_report(hold, simon_says, frame_ids=None) -> str:
    """Plain-text summary of ``hold`` (T,): per expression its frame count and ranges (frame ids,
    or frame indices without ``frame_ids``), then the expressions not labelled."""
    ss = getattr(simon_says, "simon_says", simon_says)
    hold = np.asarray(hold)
    ids = np.arange(len(hold)) if frame_ids is None else np.asarray(frame_ids)
    names = ss.expression_names
    width = max(len(n) for n in names)
    lines, missing = [f"{'expression':<{width}}  frames  ranges"], []
    for e, expr in enumerate(names):
        frames = np.flatnonzero(hold == e)
        if not len(frames):
            missing.append(expr)
            continue
        ranges = ", ".join(f"{ids[a]}-{ids[b]}" for a, b in _ranges_of(frames))
        lines.append(f"{expr:<{width}}  {len(frames):>6}  {ranges}")
    if missing:
        lines.append(f"not labelled ({len(missing)}): {', '.join(missing)}")
    return "\n".join(lines)


class MaskedHolds(NamedTuple):
    """hold (T,) int32 with invalid frames set to -1; dropped (E,) int: frames each expression
    lost; emptied: names of the expressions left with no frame."""

    hold: np.ndarray
    dropped: np.ndarray
    emptied: tuple


def mask_invalid(hold, valid, simon_says) -> MaskedHolds:
    """Unlabel the hold frames the tracker lost (``valid`` (T,) False, e.g.
    :attr:`TrackedSequence.valid`): their parameters are zeros, and must never enter a
    calibration sample. Warns with the count per expression when any frame is dropped."""
    ss = getattr(simon_says, "simon_says", simon_says)
    hold, valid = np.asarray(hold), np.asarray(valid, bool)
    if hold.shape != valid.shape:
        raise ValueError(f"hold {hold.shape} and valid {valid.shape} must have the same shape")
    names = ss.expression_names
    out = np.where(valid, hold, -1).astype(np.int32)
    dropped = np.array([int(np.sum((hold == e) & ~valid)) for e in range(len(names))], np.int64)
    emptied = tuple(names[e] for e in range(len(names)) if dropped[e] and not np.any(out == e))
    if dropped.any():
        per = ", ".join(f"{names[e]} {dropped[e]}" for e in np.flatnonzero(dropped))
        gone = f"; no frame left for: {', '.join(emptied)}" if emptied else ""
        warnings.warn(f"{int(dropped.sum())} lost frame(s) removed from the holds ({per}){gone}", stacklevel=2)
    return MaskedHolds(out, dropped, emptied)
