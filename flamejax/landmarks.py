"""Landmarks as barycentric points on mesh faces: static 51, yaw-dependent contour 17, MediaPipe 105.

Output order is iBUG-68 (17 contour points first, then the 51 static ones), the order used by
DECA, EMOCA, SMIRK and metrical-tracker. smplx puts the static points first; use
:func:`ibug68_to_smplx_order` to compare with it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

N_STATIC = 51
N_CONTOUR = 17
N_YAW_BINS = 79  # yaw bins: 0..39 degrees at index 0..39, -1..-39 degrees at index 40..78
N_MEDIAPIPE = 105


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkEmbedding:
    """Where landmarks sit on the mesh. Face ids index ``FlameModel.faces``.

    static_faces (51,) int32, static_bary (51, 3); dynamic_faces (79, 17) int32,
    dynamic_bary (79, 17, 3): one contour per head-yaw bin; mediapipe_faces (105,) int32 and
    mediapipe_bary (105, 3), or None when no MediaPipe embedding is loaded.

    ``contour_from_neck`` (static) chooses the rotation whose yaw picks the contour: global @ neck
    (True: DECA, EMOCA, SMIRK, metrical-tracker) or the global rotation alone (False: smplx).
    The two agree whenever the neck pose is zero.
    """

    static_faces: jnp.ndarray
    static_bary: jnp.ndarray
    dynamic_faces: jnp.ndarray
    dynamic_bary: jnp.ndarray
    mediapipe_faces: Optional[jnp.ndarray] = None
    mediapipe_bary: Optional[jnp.ndarray] = None
    contour_from_neck: bool = dataclasses.field(default=True, metadata=dict(static=True))


def points_on_faces(vertices: jnp.ndarray, faces: jnp.ndarray, face_ids: jnp.ndarray,
                    bary: jnp.ndarray) -> jnp.ndarray:
    """Barycentric points. vertices (V, 3), faces (F, 3), face_ids (L,), bary (L, 3) -> (L, 3)."""
    corners = vertices[faces[face_ids]]  # (L, 3 corners, 3 xyz)
    return jnp.einsum("lc,lcx->lx", bary, corners)


def yaw_bin(head_rotation: jnp.ndarray) -> jnp.ndarray:
    """Contour bin for a head rotation (3, 3) (see ``contour_from_neck``): int32 index in [0, 79).

    The yaw is the y-Euler angle of the head, in whole degrees, clamped to [-39, 39]; positive
    yaw maps to bins 0..39, negative to 40..78 (the layout of the FLAME dynamic tables).
    """
    r = head_rotation
    yaw = jnp.arctan2(-r[2, 0], jnp.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2))
    deg = jnp.round(jnp.minimum(-jnp.degrees(yaw), 39.0)).astype(jnp.int32)
    negative = jnp.where(deg < -39, 78, 39 - deg)
    return jnp.where(deg < 0, negative, deg)


def ibug68(vertices: jnp.ndarray, faces: jnp.ndarray, embedding: LandmarkEmbedding,
           global_rotation: jnp.ndarray, neck_rotation: jnp.ndarray) -> jnp.ndarray:
    """68 landmarks in iBUG order (contour first). vertices (V, 3), rotations (3, 3) -> (68, 3)."""
    head = global_rotation @ neck_rotation if embedding.contour_from_neck else global_rotation
    b = yaw_bin(head)
    contour = points_on_faces(vertices, faces, embedding.dynamic_faces[b], embedding.dynamic_bary[b])
    static = points_on_faces(vertices, faces, embedding.static_faces, embedding.static_bary)
    return jnp.concatenate([contour, static], axis=0)


def mediapipe(vertices: jnp.ndarray, faces: jnp.ndarray, embedding: LandmarkEmbedding) -> Optional[jnp.ndarray]:
    """(105, 3) MediaPipe landmarks, or None when the embedding has no MediaPipe part."""
    if embedding.mediapipe_faces is None:
        return None
    return points_on_faces(vertices, faces, embedding.mediapipe_faces, embedding.mediapipe_bary)


def ibug68_to_smplx_order(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 3) iBUG order -> smplx order (51 static first, then 17 contour)."""
    return np.concatenate([landmarks[..., N_CONTOUR:, :], landmarks[..., :N_CONTOUR, :]], axis=-2)
