"""The semantic rig: K named controls c -> FLAME parameters theta(c) = B c + g -> vertices.

Rows of theta (P,), in order:

- ``n_expr`` FLAME expression coefficients (100 for FLAME 2020);
- 3 jaw Euler angles (x, y, z) in radians, turned into the jaw's rotation by ``jaw_convention``:
  ``"face_calibration"`` reproduces the authors' data, where the rotation actually applied is
  ``(Rx Ry Rz)^T``; ``"xyz"`` is the textbook intrinsic XYZ matrix ``Rx Ry Rz``;
- optionally (static flag ``has_neck``) 3 neck Euler angles, same convention as the jaw.

So P = n_expr + 3 (+ 3). Everything is per frame (controls (K,)); batch over frames with
``jax.vmap(rig_vertices, in_axes=(None, None, 0))``. All functions are differentiable in the
controls, in the rig's ``basis`` and ``offset``, and in the model's arrays (its expression basis
included: differentiate through ``model.with_exprdirs(...)``, see :func:`rig_vertices_frames`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from flamejax.flame import (
    FixedIdentityFlame,
    FlameModel,
    FlameParams,
    bind_identity,
    flame_forward,
    flame_forward_fixed,
)
from flamejax.rotations import euler_xyz_to_matrix, matrix_to_axis_angle

JAW_CONVENTIONS = ("face_calibration", "xyz")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SemanticRig:
    """A linear semantic rig theta(c) = basis @ c + offset.

    basis (P, K): column k is what control k adds to theta at full activation (c_k = 1);
    offset (P,): theta at c = 0 (usually zeros: the neutral face).
    Static: ``n_expr`` (number of expression rows), ``jaw_convention`` (see module doc),
    ``has_neck`` (whether 3 neck Euler rows follow the jaw's), ``controls`` (the K control
    names in column order, or ``()`` when unnamed).

    Build with :func:`make_rig` to have the shapes checked; the dataclass itself validates
    nothing, so that JAX transformations may put any leaves in it.
    """

    basis: jnp.ndarray
    offset: jnp.ndarray
    n_expr: int = dataclasses.field(default=100, metadata=dict(static=True))
    jaw_convention: str = dataclasses.field(default="face_calibration", metadata=dict(static=True))
    has_neck: bool = dataclasses.field(default=False, metadata=dict(static=True))
    controls: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def n_params(self) -> int:
        """P = n_expr + 3 (+ 3 with a neck)."""
        return n_rig_params(self.n_expr, self.has_neck)

    @property
    def n_controls(self) -> int:
        return self.basis.shape[1]


def n_rig_params(n_expr: int, has_neck: bool = False) -> int:
    """Rows of theta: n_expr expression coefficients, 3 jaw angles, 3 neck angles if any."""
    return n_expr + 3 + (3 if has_neck else 0)


def make_rig(basis, offset=None, *, n_expr: Optional[int] = None,
             jaw_convention: str = "face_calibration", has_neck: bool = False,
             controls: tuple[str, ...] = ()) -> SemanticRig:
    """A :class:`SemanticRig` with its shapes checked.

    basis (P, K); offset (P,) or None for zeros. ``n_expr`` defaults to P - 3 (P - 6 with a
    neck). ``controls``: K names (plain strings) in column order, or ``()``.
    """
    basis = jnp.asarray(basis)
    if basis.ndim != 2:
        raise ValueError(f"basis must be (P, K), got shape {basis.shape}")
    p, k = basis.shape
    if n_expr is None:
        n_expr = p - n_rig_params(0, has_neck)
    if n_expr < 0 or p != n_rig_params(n_expr, has_neck):
        raise ValueError(f"basis has {p} rows; expected n_expr + 3{' + 3 (neck)' if has_neck else ''} "
                         f"= {n_rig_params(max(n_expr, 0), has_neck)} with n_expr={n_expr}")
    offset = jnp.zeros((p,), basis.dtype) if offset is None else jnp.asarray(offset, basis.dtype)
    if offset.shape != (p,):
        raise ValueError(f"offset must have shape ({p},), got {offset.shape}")
    if jaw_convention not in JAW_CONVENTIONS:
        raise ValueError(f"jaw_convention must be one of {JAW_CONVENTIONS}, got {jaw_convention!r}")
    controls = tuple(str(c) for c in controls)
    if controls and len(controls) != k:
        raise ValueError(f"{len(controls)} control names for a basis of {k} columns")
    return SemanticRig(basis=basis, offset=offset, n_expr=int(n_expr),
                       jaw_convention=jaw_convention, has_neck=bool(has_neck), controls=controls)


def euler_to_axis_angle(angles: jnp.ndarray, jaw_convention: str = "face_calibration") -> jnp.ndarray:
    """Rig Euler angles (..., 3) in radians -> the axis-angle (..., 3) FLAME applies.

    ``"face_calibration"``: rotation (Rx Ry Rz)^T, i.e. the axis-angle of the textbook matrix
    negated; ``"xyz"``: Rx Ry Rz.
    """
    if jaw_convention not in JAW_CONVENTIONS:
        raise ValueError(f"jaw_convention must be one of {JAW_CONVENTIONS}, got {jaw_convention!r}")
    r = euler_xyz_to_matrix(angles)
    if jaw_convention == "face_calibration":
        # The authors' 6D hand-off applies the transpose (see rotations.face_calibration_jaw_to_matrix).
        r = jnp.swapaxes(r, -1, -2)
    return matrix_to_axis_angle(r)


def theta_to_parameters(theta: jnp.ndarray, n_expr: int, jaw_convention: str = "face_calibration",
                        has_neck: bool = False):
    """Split theta (P,) into (expression (n_expr,), jaw_pose (3,) axis-angle, neck_pose (3,) or None)."""
    expression = theta[:n_expr]
    jaw = euler_to_axis_angle(theta[n_expr:n_expr + 3], jaw_convention)
    neck = euler_to_axis_angle(theta[n_expr + 3:n_expr + 6], jaw_convention) if has_neck else None
    return expression, jaw, neck


def rig_theta(rig: SemanticRig, controls: jnp.ndarray) -> jnp.ndarray:
    """theta = B c + g. controls (K,) -> (P,) (expression coefficients, then Euler radians)."""
    return rig.basis @ jnp.asarray(controls, rig.basis.dtype) + rig.offset


def rig_parameters(rig: SemanticRig, controls: jnp.ndarray):
    """controls (K,) -> (expression (n_expr,), jaw_pose (3,) axis-angle radians, neck_pose (3,) or None)."""
    return theta_to_parameters(rig_theta(rig, controls), rig.n_expr, rig.jaw_convention, rig.has_neck)


def rig_flame_params(rig: SemanticRig, controls: jnp.ndarray, **pose) -> FlameParams:
    """controls (K,) -> :class:`FlameParams`; ``pose`` sets the other fields (global_pose,
    eye_pose, translation, shape, and neck_pose unless the rig drives the neck)."""
    expression, jaw, neck = rig_parameters(rig, controls)
    for name in ("expression", "jaw_pose"):
        if name in pose:
            raise ValueError(f"rig_flame_params: {name} comes from the rig; do not pass it")
    if neck is not None:
        if pose.get("neck_pose") is not None:
            raise ValueError("rig_flame_params: this rig drives the neck; do not pass neck_pose")
        pose["neck_pose"] = neck
    return FlameParams(expression=expression, jaw_pose=jaw, **pose)


def rig_vertices(fixed: FixedIdentityFlame, rig: SemanticRig, controls: jnp.ndarray, **pose) -> jnp.ndarray:
    """Fast path for a bound identity: controls (K,) -> vertices (V, 3) in metres.

    ``rig.n_expr`` may be at most ``fixed.n_expr`` (missing coefficients are zero).
    """
    return flame_forward_fixed(fixed, rig_flame_params(rig, controls, **pose)).vertices


def rig_vertices_full(model: FlameModel, rig: SemanticRig, controls: jnp.ndarray,
                      shape: Optional[jnp.ndarray] = None, **pose) -> jnp.ndarray:
    """Any identity: model, shape (<=S,) or None, controls (K,) -> vertices (V, 3) in metres."""
    return flame_forward(model, rig_flame_params(rig, controls, shape=shape, **pose)).vertices


@jax.jit
def rig_vertices_frames(model: FlameModel, rig: SemanticRig, controls: jnp.ndarray,
                        shape: Optional[jnp.ndarray] = None,
                        exprdirs: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Many frames of one identity: controls (T, K) -> vertices (T, V, 3).

    Binds the identity once (with ``exprdirs`` (E, V, 3) replacing the model's expression basis
    when given) and runs the fast path vmapped over frames. Everything happens inside the
    function, so gradients flow to ``exprdirs`` (or the model's arrays), the rig and the controls.
    """
    if exprdirs is not None:
        model = model.with_exprdirs(exprdirs)
    fixed = bind_identity(model, shape)
    return jax.vmap(rig_vertices, in_axes=(None, None, 0))(fixed, rig, controls)
