"""Evaluation metrics: the seed's Table 1 and the truth-based ones the synthetic world allows.

All functions take plain arrays (NumPy or JAX) and return NumPy values; nothing here knows about
FLAME (metrics sit at the bottom of the layer stack).

Table 1 of the seed (lower is better), per sequence and tracker:
- :func:`sparsity`: fraction of all (frame, control) entries above 0.05;
- :func:`tweaker_mean`: mean value of the tweaker controls over all frames.

With known intended controls and geometry (synthetic performers):
- :func:`control_error`: mean absolute error against the intended controls (overall, per control);
- :func:`expression_recognition`: on labelled Simon-Says hold frames, is the solved control vector
  nearest (cosine) to the prompted expression's intended vector?
- :func:`geometry_error`: per-frame RMS vertex distance (metres), e.g. tracking geometry error or
  retarget geometry error against the truth retarget.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

ACTIVE = 0.05  # the seed's threshold for an "active" control


def _frames(controls) -> np.ndarray:
    c = np.asarray(controls, np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"controls must be (T, K) with T >= 1, got {c.shape}")
    return c


def sparsity(controls, threshold: float = ACTIVE) -> float:
    """Fraction of entries of controls (T, K) greater than ``threshold`` (the seed's "sparsity")."""
    return float(np.mean(_frames(controls) > threshold))


def tweaker_mean(controls, tweakers) -> float:
    """Mean value of the tweaker controls over all frames: controls (T, K), tweakers (K,) bool."""
    c = _frames(controls)
    mask = np.asarray(tweakers, bool)
    if mask.shape != (c.shape[1],):
        raise ValueError(f"tweakers must be ({c.shape[1]},) bool, got {mask.shape}")
    return float(c[:, mask].mean()) if mask.any() else 0.0


class ControlError(NamedTuple):
    """mean: mean |c - c_true| over all entries; per_control (K,); per_frame (T,); rmse: root mean square."""

    mean: float
    per_control: np.ndarray
    per_frame: np.ndarray
    rmse: float


def control_error(controls, intended) -> ControlError:
    """Error of solved controls (T, K) against the intended ones (T, K)."""
    c, t = _frames(controls), _frames(intended)
    if c.shape != t.shape:
        raise ValueError(f"controls {c.shape} and intended {t.shape} differ in shape")
    d = np.abs(c - t)
    return ControlError(float(d.mean()), d.mean(0), d.mean(1), float(np.sqrt(np.mean(d ** 2))))


class Recognition(NamedTuple):
    """accuracy: fraction of labelled frames whose nearest expression is the prompted one;
    per_expression (E,) the same per prompted expression (NaN where it has no frames);
    confusion (E, E) counts [prompted, recognised]."""

    accuracy: float
    per_expression: np.ndarray
    confusion: np.ndarray


def expression_recognition(controls, labels, expression_targets) -> Recognition:
    """Simon-Says recognition. controls (T, K); labels (T,) int, the prompted expression on hold
    frames and -1 elsewhere; expression_targets (E, K) each expression's intended controls.
    A frame is recognised as the expression whose target has the largest cosine similarity with
    it (an all-zero target, e.g. Neutral, matches frames whose controls are all below 0.05)."""
    c = _frames(controls)
    labels = np.asarray(labels)
    targets = np.asarray(expression_targets, np.float64)
    if labels.shape != (c.shape[0],) or targets.ndim != 2 or targets.shape[1] != c.shape[1]:
        raise ValueError(f"labels must be ({c.shape[0]},) and targets (E, {c.shape[1]}), "
                         f"got {labels.shape}, {targets.shape}")
    keep = labels >= 0
    if not keep.any():
        raise ValueError("no labelled frames (labels are all -1)")
    c, lab = c[keep], labels[keep]
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    score = norm(c) @ norm(targets).T                                   # (N, E)
    zero_target = np.linalg.norm(targets, axis=1) == 0
    quiet = np.all(c <= ACTIVE, axis=1)
    score[:, zero_target] = np.where(quiet[:, None], 2.0, -2.0)         # Neutral wins only when quiet
    guess = np.argmax(score, axis=1)
    e = targets.shape[0]
    confusion = np.zeros((e, e), np.int64)
    np.add.at(confusion, (lab, guess), 1)
    counts = confusion.sum(1)
    per = np.where(counts > 0, np.diag(confusion) / np.maximum(counts, 1), np.nan)
    return Recognition(float(np.mean(guess == lab)), per, confusion)


def geometry_error(vertices, reference, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """(T,) RMS vertex distance (metres) between meshes (T, V, 3) and reference (T, V, 3),
    optionally weighted per vertex (V,)."""
    v, r = np.asarray(vertices, np.float64), np.asarray(reference, np.float64)
    if v.shape != r.shape or v.ndim != 3:
        raise ValueError(f"vertices {v.shape} and reference {r.shape} must both be (T, V, 3)")
    d2 = np.sum((v - r) ** 2, axis=-1)
    w = np.ones(v.shape[1]) if weights is None else np.asarray(weights, np.float64)
    return np.sqrt(d2 @ w / w.sum())
