"""Vertex region masks with the names of FLAME_masks.pkl, for the synthetic head.

Regions come from the surface parameters (rows = anatomical levels, phi = around the head) and
from the features themselves (the nose and ears are where their displacement fields act).
Like FLAME's masks they overlap (eye regions lie in the face) and do not cover every vertex.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flamejax.synthetic.fields import smoothstep
from flamejax.synthetic.head import KNOT, HeadMesh, neutral_openings

MASK_NAMES = ("eye_region", "neck", "left_eyeball", "right_eyeball", "right_ear",
              "right_eye_region", "forehead", "lips", "nose", "scalp", "boundary", "face",
              "left_ear", "left_eye_region")


def _feature_support(mesh: HeadMesh, threshold: float = 0.0008, **zeroed) -> np.ndarray:
    """(n_head,) where the template differs from the same head without some features."""
    spec = dataclasses.replace(mesh.spec, **zeroed)
    o = neutral_openings(mesh.spec)
    d = mesh.head_points(o, spec) - mesh.head_points(o)
    return np.linalg.norm(d, axis=1) > threshold


def region_masks(mesh: HeadMesh) -> dict[str, np.ndarray]:
    """Region name -> sorted int32 vertex ids."""
    ku, v = mesh.ku, mesh.vertices
    n_head = mesh.n_head
    u, phi = mesh.uv0[:n_head, 0], np.abs(mesh.uv0[:n_head, 1])
    x, y = v[:n_head, 0], v[:n_head, 1]
    front = np.cos(phi) > 0.3
    c = mesh.eye_centres[0]
    spec = mesh.spec
    masks = {}
    # The neck starts at the throat in front and at the nape behind.
    neckline = ku[KNOT["throat"]] - (ku[KNOT["throat"]] - ku[KNOT["mouth"]]) * smoothstep(phi, 1.6, 2.6)
    neck = u >= neckline - 0.002
    ears = _feature_support(mesh, ear_out=0.0)
    nose = _feature_support(mesh, nose_height=0.0) & front & (np.abs(x) < 0.03) & (y < c[1] + 0.006)
    face = (phi <= 1.3) & (u >= ku[KNOT["hairline"]] + 0.004) & (u <= ku[KNOT["menton"]] + 0.006) & ~ears
    for side, s in (("left", 1.0), ("right", -1.0)):
        q = ((s * x - c[0]) / 0.027) ** 2 + ((y - c[1] - 0.004) / 0.021) ** 2
        masks[f"{side}_eye_region"] = front & (q <= 1.0) & (s * x > 0)
        masks[f"{side}_ear"] = ears & (s * x > 0)
    masks["eye_region"] = masks["left_eye_region"] | masks["right_eye_region"]
    masks["lips"] = front & ((x / (spec.mouth_half_width + 0.006)) ** 2
                             + ((y - spec.knots[KNOT["mouth"], 0]) / 0.014) ** 2 <= 1.0)
    masks["nose"] = nose
    masks["face"] = face
    masks["forehead"] = (phi <= 1.1) & (u >= ku[KNOT["hairline"]]) & (u <= ku[KNOT["brow"]] - 0.008)
    masks["neck"] = neck
    # Scalp: above the hairline, the back of the head down to the nape, the temples above the ears.
    masks["scalp"] = ~face & ~neck & ~ears & ((u <= ku[KNOT["hairline"]] + 0.004) | (phi >= 2.0)
                                              | ((phi >= 1.3) & (y >= c[1] + 0.025)))
    boundary = np.zeros(n_head, bool)
    boundary[mesh.grid[-1]] = True
    masks["boundary"] = boundary
    out = {name: np.flatnonzero(m).astype(np.int32) for name, m in masks.items()}
    out["left_eyeball"] = mesh.eyeball_ids[0].astype(np.int32)
    out["right_eyeball"] = mesh.eyeball_ids[1].astype(np.int32)
    assert set(out) == set(MASK_NAMES)
    return {name: out[name] for name in MASK_NAMES}
