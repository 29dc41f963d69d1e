"""Rotation conversions used by FLAME and the trackers built on it.

Every function works on one rotation and broadcasts over leading axes, so it can be used
per sample (and ``jax.vmap``-ed) or on whole arrays. Angles are radians.

Conventions of the field:
- axis-angle (3,): FLAME / smplx pose layout.
- 6D (6,): metrical-tracker and Pixel3DMM (pytorch3d convention: the first two *rows* of the
  matrix, Gram-Schmidt on the way back).
- Euler XYZ (3,): face-calibration's jaw, R = Rx(x) @ Ry(y) @ Rz(z) (intrinsic x, then y, then z).
"""

from __future__ import annotations

import jax.numpy as jnp

# Below this squared angle the closed forms lose precision; their Taylor series take over.
_SMALL_ANGLE_SQ = 1e-8


def _skew(v: jnp.ndarray) -> jnp.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrix."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], -1),
            jnp.stack([z, zero, -x], -1),
            jnp.stack([-y, x, zero], -1),
        ],
        -2,
    )


def axis_angle_to_matrix(axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Rodrigues' formula. (..., 3) axis * angle -> (..., 3, 3).

    Exact at zero with finite gradients: sin(t)/t and (1-cos t)/t^2 switch to their series
    below a tiny angle (the double-``where`` keeps NaNs out of the unused branch's gradient).
    """
    theta_sq = jnp.sum(axis_angle * axis_angle, axis=-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe_sq)
    a = jnp.where(small, 1.0 - theta_sq / 6.0, jnp.sin(theta) / theta)
    # (1 - cos t) / t^2 written as 0.5 (sin(t/2) / (t/2))^2: the subtraction form loses most
    # of its digits (and its gradient's) in float32 for t in ~1e-4..1e-2.
    half = 0.5 * theta
    b = jnp.where(small, 0.5 - theta_sq / 24.0, 0.5 * (jnp.sin(half) / half) ** 2)
    k = _skew(axis_angle)
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_quaternion(matrix: jnp.ndarray) -> jnp.ndarray:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

    Picks the best-conditioned of the four Shepperd candidates, so it is accurate for every
    rotation, including angles near pi.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * q_i^2 for each component, from the diagonal.
    q_abs_sq = jnp.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    q_abs = jnp.sqrt(jnp.maximum(q_abs_sq, 1e-12))
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    # Row i: the quaternion computed by dividing by 4*q_i (only the row with the largest q_i is used).
    candidates = jnp.stack(
        [
            jnp.stack([q_abs[..., 0] ** 2, d21, d02, d10], -1),
            jnp.stack([d21, q_abs[..., 1] ** 2, s10, s02], -1),
            jnp.stack([d02, s10, q_abs[..., 2] ** 2, s21], -1),
            jnp.stack([d10, s02, s21, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    ) / (2.0 * jnp.maximum(q_abs, 0.1)[..., :, None])  # the chosen row always has q_abs >= 1
    best = jnp.argmax(q_abs, axis=-1)
    q = jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(quaternion: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) quaternion (w, x, y, z) -> (..., 3) axis-angle with angle in [0, pi]."""
    q = jnp.where(quaternion[..., :1] < 0, -quaternion, quaternion)
    w = q[..., 0]
    xyz = q[..., 1:]
    s_sq = jnp.sum(xyz * xyz, axis=-1)
    small = s_sq < _SMALL_ANGLE_SQ
    s = jnp.sqrt(jnp.where(small, 1.0, s_sq))
    half = jnp.arctan2(s, w)
    # angle / sin(angle/2); near zero it tends to 2 / w.
    # The unused branch must stay finite too (w = 0 at angle pi), or reverse mode yields NaN.
    scale = jnp.where(small, 2.0 / jnp.where(small, w, 1.0), 2.0 * half / s)
    return xyz * scale[..., None]


def matrix_to_axis_angle(matrix: jnp.ndarray) -> jnp.ndarray:
    """(..., 3, 3) -> (..., 3) axis-angle, angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_6d_to_matrix(d6: jnp.ndarray) -> jnp.ndarray:
    """(..., 6) -> (..., 3, 3). The 6 numbers are the first two rows (pytorch3d convention)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / jnp.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / jnp.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-2)


def matrix_to_rotation_6d(matrix: jnp.ndarray) -> jnp.ndarray:
    """(..., 3, 3) -> (..., 6): the first two rows, flattened."""
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))


def _rot_x(a):
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([o, z, z], -1), jnp.stack([z, c, -s], -1), jnp.stack([z, s, c], -1)], -2)


def _rot_y(a):
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1), jnp.stack([-s, z, c], -1)], -2)


def _rot_z(a):
    c, s, o, z = jnp.cos(a), jnp.sin(a), jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def euler_xyz_to_matrix(angles: jnp.ndarray) -> jnp.ndarray:
    """(..., 3) Euler angles (x, y, z) -> (..., 3, 3) R = Rx(x) @ Ry(y) @ Rz(z).

    This is intrinsic XYZ (scipy's ``Rotation.from_euler("XYZ", ...)``), the convention of
    face-calibration's jaw. That code hands the matrix on through 6D in a way that applies R
    transposed; use :func:`face_calibration_jaw_to_matrix` to reproduce it.
    """
    return _rot_x(angles[..., 0]) @ _rot_y(angles[..., 1]) @ _rot_z(angles[..., 2])


def matrix_to_euler_xyz(matrix: jnp.ndarray) -> jnp.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix` for y in (-pi/2, pi/2). (..., 3, 3) -> (..., 3)."""
    m = matrix
    y = jnp.arcsin(jnp.clip(m[..., 0, 2], -1.0, 1.0))
    x = jnp.arctan2(-m[..., 1, 2], m[..., 2, 2])
    z = jnp.arctan2(-m[..., 0, 1], m[..., 0, 0])
    return jnp.stack([x, y, z], -1)


def face_calibration_jaw_to_matrix(angles: jnp.ndarray, *, transposed: bool = True) -> jnp.ndarray:
    """Jaw rotation applied by face-calibration for its Euler XYZ jaw parameters. (..., 3) -> (..., 3, 3).

    With ``transposed=True`` (default) this reproduces the authors' code numerically: their
    6D hand-off makes the rotation actually applied ``(Rx Ry Rz)^T``. ``transposed=False`` gives
    the textbook intrinsic-XYZ matrix.
    """
    r = euler_xyz_to_matrix(angles)
    return jnp.swapaxes(r, -1, -2) if transposed else r
