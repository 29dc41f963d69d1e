"""Rigging of the synthetic head: joint regressor, skinning weights, pose correctives.

Joints (FLAME order): 0 root at the neck base, 1 neck (the head's pivot, high in the neck),
2 jaw (between the jaw joints in front of the ears), 3 left eye, 4 right eye (eyeball centres).
Each joint is a *sparse average of template vertices* (rows of the regressor are non-negative
and sum to 1), so the joints follow the shape blend like FLAME's do.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from flamejax.synthetic.fields import FLIP_X, random_smooth_fields, smoothstep
from flamejax.synthetic.head import (CUT_MOUTH, KNOT, PART_HEAD, PART_LEFT_EYE, PART_RIGHT_EYE,
                                     SIDE_LOWER, SIDE_UPPER, HeadMesh)

ROOT, NECK, JAW, LEFT_EYE, RIGHT_EYE = range(5)


def _symmetric_pair_weights(mesh: HeadMesh, target_yz: np.ndarray, k: int = 6) -> dict[int, float]:
    """Weights over mirror pairs of side vertices whose weighted mean is (0, y, z) = target.

    The k head vertices on the +x side nearest to the target (in y, z) get non-negative weights
    reproducing its (y, z) (least squares, summing to 1); each weight is split evenly with the
    vertex's mirror image, so x is 0 exactly."""
    v = mesh.vertices
    ok = (mesh.part == PART_HEAD) & (v[:, 0] > 0.045) & (mesh.cut == 0)
    ids = np.flatnonzero(ok)
    d = np.linalg.norm(v[ids, 1:] - target_yz, axis=1)
    near = ids[np.argsort(d)[:k]]
    a = np.vstack([v[near, 1:].T * 100.0, 100.0 * np.ones(k)])  # rows: y, z, sum (weighted)
    w, _ = nnls(a, np.concatenate([target_yz * 100.0, [100.0]]))
    w /= w.sum()
    out: dict[int, float] = {}
    for i, wi in zip(near.tolist(), w.tolist()):
        for j in (i, int(mesh.mirror[i])):
            out[j] = out.get(j, 0.0) + 0.5 * wi
    return out


def joint_regressor(mesh: HeadMesh) -> np.ndarray:
    """(5, V) dense regressor, rows summing to 1 (each a sparse average of vertices)."""
    n = len(mesh.vertices)
    reg = np.zeros((5, n))
    # Root: the open bottom ring of the neck.
    reg[ROOT, mesh.grid[-1]] = 1.0
    # Neck: the sides and back of the ring at mouth height (the face itself is left out, so
    # expressions barely move the head's pivot).
    ring = mesh.grid[mesh.row_of("mouth")]
    reg[NECK, ring[np.abs(mesh.col_phi) >= 1.2]] = 1.0
    # Jaw: symmetric pairs in front of the ears, at the temporomandibular joints.
    c = mesh.eye_centres[0]
    for j, w in _symmetric_pair_weights(mesh, np.array([c[1] - 0.024, 0.004])).items():
        reg[JAW, j] += w
    reg[LEFT_EYE, mesh.eyeball_ids[0]] = 1.0
    reg[RIGHT_EYE, mesh.eyeball_ids[1]] = 1.0
    return reg / reg.sum(axis=1, keepdims=True)


def jaw_weight(mesh: HeadMesh) -> np.ndarray:
    """(V,) how much each head vertex follows the jaw, in [0, 1]; 0 on the eyeballs.

    1 on the lower lip, chin and the jaw's underside; a hard step across the lip line (the upper
    lip's copies 0, the lower lip's copies 1), softening over the cheeks up toward the ears, and
    fading out behind the jaw's angle and down into the throat."""
    ku = mesh.ku
    u, phi = mesh.uv0[:, 0], np.abs(mesh.uv0[:, 1])
    u_mouth, phi_mc = mesh.cut_span[CUT_MOUTH, 0], mesh.cut_span[CUT_MOUTH, 2]
    # Upper boundary: the lip line, rising over the cheek toward the ear.
    rise = smoothstep(phi, phi_mc, 1.3)
    u_top = u_mouth - (u_mouth - ku[KNOT["nose_tip"]]) * rise
    # Half-width of the blend across the boundary: a hard step along the lips, soft from the
    # mouth corners outward (otherwise the lip line would continue as a crease in the cheek).
    soft = 0.003 + 0.013 * smoothstep(phi, 0.5 * phi_mc, 1.8 * phi_mc)
    s = u - u_top
    on_lips = mesh.cut == CUT_MOUTH          # (the eyes' cuts are no business of the jaw)
    s = np.where(on_lips & (mesh.side == SIDE_LOWER), soft, np.where(on_lips & (mesh.side == SIDE_UPPER), -soft, s))
    vertical = smoothstep(s, -soft, soft)
    lateral = 1.0 - smoothstep(phi, 1.15, 1.55)
    bottom = 1.0 - smoothstep(u, ku[KNOT["submental"]], ku[KNOT["throat"]] + 0.01)
    w = vertical * lateral * bottom
    return np.where(mesh.part == PART_HEAD, np.nan_to_num(w), 0.0)


def skinning_weights(mesh: HeadMesh) -> np.ndarray:
    """(V, 5) skinning weights, rows summing to 1: lower neck -> root, head -> neck,
    lower face -> jaw (smooth falloff), eyeballs rigid to their eye joints."""
    ku = mesh.ku
    u = np.nan_to_num(mesh.uv0[:, 0])
    head = mesh.part == PART_HEAD
    root = np.where(head, smoothstep(u, ku[KNOT["neck"]] - 0.012, ku[KNOT["neck_bottom"]] - 0.004), 0.0)
    jaw = jaw_weight(mesh) * (1.0 - root)
    w = np.zeros((len(u), 5))
    w[:, ROOT] = root
    w[:, JAW] = jaw
    w[:, NECK] = np.where(head, 1.0 - root - jaw, 0.0)
    w[mesh.part == PART_LEFT_EYE, LEFT_EYE] = 1.0
    w[mesh.part == PART_RIGHT_EYE, RIGHT_EYE] = 1.0
    return w


def pose_correctives(mesh: HeadMesh, weights: np.ndarray, rng: np.random.Generator,
                     amplitude: float = 0.0025) -> np.ndarray:
    """(36, V, 3) pose-corrective offsets per pose feature (R_j - I, joints 1..4 row-major).

    Small smooth random fields confined to where the skinning blends between joints, where
    linear blend skinning needs correcting: the neck features act on the neck band, the jaw
    features on the jaw/cheek/throat region; the eye features are zero (eyeballs are rigid).
    Every field is exactly zero far from its region. ``amplitude`` is the largest offset
    (metres) per unit of a feature.
    """
    ku = mesh.ku
    u = np.nan_to_num(mesh.uv0[:, 0])
    head = mesh.part == PART_HEAD
    neck_band = smoothstep(u, ku[KNOT["menton"]], ku[KNOT["throat"]]) * (
        1.0 - smoothstep(u, ku[KNOT["neck"]], ku[KNOT["neck_bottom"]]))
    jw = weights[:, JAW]
    jaw_band = np.clip(4.0 * jw * (1.0 - jw), 0.0, 1.0)             # where jaw/neck blend
    jaw_band = np.maximum(jaw_band, smoothstep(u, ku[KNOT["chin"]], ku[KNOT["submental"]]) * (
        1.0 - smoothstep(u, ku[KNOT["submental"]], ku[KNOT["neck"]])) * (jw > 0))
    fields = random_smooth_fields(mesh.vertices, 18, rng, length_scale=0.04)
    # Mostly symmetric correctives (a nodding neck bulges both sides alike).
    fields = 0.5 * (fields + fields[:, mesh.mirror] * FLIP_X) + 0.2 * fields
    out = np.zeros((36, len(u), 3))
    out[0:9] = fields[:9] * (neck_band * head)[None, :, None]
    out[9:18] = fields[9:] * (jaw_band * head)[None, :, None]
    peak = np.max(np.linalg.norm(out[:18], axis=-1), axis=-1, keepdims=True)
    out[:18] *= amplitude / np.maximum(peak, 1e-12)[..., None]
    return out
