"""Smooth vector fields over the template: windows, random smooth fields, symmetrisation.

A *field* is an array (V, 3) of per-vertex displacements in metres (a stack of them is
(N, V, 3)). Fields are evaluated at :func:`anchors`, where each eyeball vertex stands at its
eyeball's centre, so any smooth field moves the eyeballs rigidly, as FLAME's bases do.
"""

from __future__ import annotations

import numpy as np

from flamejax.synthetic.head import PART_HEAD, HeadMesh

FLIP_X = np.array([-1.0, 1.0, 1.0])


def smoothstep(x, a, b):
    """0 below a, 1 above b (or the reverse when a > b), C1 in between. Exactly 0/1 outside,
    which keeps windows built from it compactly supported."""
    t = np.clip((np.asarray(x, float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def window(points: np.ndarray, centre, sigma) -> np.ndarray:
    """(V,) anisotropic Gaussian window exp(-|(p - centre) / sigma|^2 / 2); sigma (3,) or scalar."""
    d = (points - np.asarray(centre, float)) / np.asarray(sigma, float)
    return np.exp(-0.5 * np.sum(d * d, axis=-1))


def anchors(mesh: HeadMesh) -> np.ndarray:
    """(V, 3) the template vertices, with every eyeball vertex moved to its eyeball's centre."""
    pts = mesh.vertices.copy()
    for k in range(2):
        pts[mesh.eyeball_ids[k]] = mesh.eye_centres[k]
    return pts


def head_only(fields: np.ndarray, mesh: HeadMesh) -> np.ndarray:
    """Zero a field stack (..., V, 3) on the eyeballs."""
    return fields * (mesh.part == PART_HEAD)[:, None]


def symmetrize(fields: np.ndarray, mirror: np.ndarray, parity: float = 1.0) -> np.ndarray:
    """Even (parity=1) or odd (-1) part of a field stack (..., V, 3) under x -> -x."""
    return 0.5 * (fields + parity * fields[..., mirror, :] * FLIP_X)


def random_smooth_fields(points: np.ndarray, n: int, rng: np.random.Generator,
                         length_scale: float, n_waves: int = 16) -> np.ndarray:
    """(n, V, 3) random smooth vector fields with unit RMS over the points: each a sum of
    ``n_waves`` random plane waves cos(w . p + b) with |w| ~ 1 / length_scale (random Fourier
    features of a Gaussian-kernel process)."""
    omega = rng.normal(0.0, 1.0 / length_scale, size=(n, n_waves, 3))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, n_waves))
    amp = rng.normal(size=(n, n_waves, 3))
    out = np.empty((n, len(points), 3))
    for k in range(n):  # n small dense products; a loop over fields, not vertices
        waves = np.cos(points @ omega[k].T + phase[k])      # (V, n_waves)
        out[k] = waves @ amp[k]
    rms = np.sqrt(np.mean(np.sum(out * out, axis=-1), axis=-1))
    return out / rms[:, None, None]
