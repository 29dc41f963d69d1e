"""The FLAME model as a pytree of static arrays, and its linear-blend-skinning forward pass.

Everything here is per frame: batch with ``jax.vmap(flame_forward, in_axes=(None, 0))``.
Units are metres; +y up, +z toward the face. Joints: 0 root (global), 1 neck, 2 jaw,
3 left eye, 4 right eye; pose vectors are axis-angle.

Two entry points:
- :func:`flame_forward` (model, params) -> vertices, joints, landmarks, for any identity;
- :func:`bind_identity` + :func:`flame_forward_fixed`, the fast path for one identity: the shape
  blend is folded into the template once, so a frame costs only the expression and pose work.
  Calibration and tracking evaluate one identity millions of times and use this path.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flamejax import landmarks as lmk
from flamejax.rotations import axis_angle_to_matrix

N_JOINTS = 5
FLAME_PARENTS = (-1, 0, 1, 1, 1)
N_POSE_FEATURES = 9 * (N_JOINTS - 1)  # (R_j - I) for every joint but the root


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlameModel:
    """Static FLAME data. V vertices, F faces, S shape and E expression components.

    v_template (V, 3); shapedirs (S + E, V, 3): shape components then expression components,
    as in FLAME's files (S = ``n_shape`` is static; :attr:`exprdirs` is the expression part);
    posedirs (36, V, 3), the pose-corrective offsets per pose feature. Bases are stored
    component-major (the files hold (V, 3, K); the loaders transpose) and shape + expression
    are one array, so a batch of frames is a single row-major matrix product;
    j_regressor (5, V) dense; weights (V, 5) skinning weights; faces (F, 3) int32;
    landmarks: where the 68 (+105 MediaPipe) landmarks sit, or None; masks: region name ->
    int32 vertex ids (FLAME_masks.pkl), possibly empty. ``parents`` is static.
    """

    v_template: jnp.ndarray
    shapedirs: jnp.ndarray
    posedirs: jnp.ndarray
    j_regressor: jnp.ndarray
    weights: jnp.ndarray
    faces: jnp.ndarray
    landmarks: Optional[lmk.LandmarkEmbedding] = None
    masks: Mapping[str, jnp.ndarray] = dataclasses.field(default_factory=dict)
    n_shape: int = dataclasses.field(default=300, metadata=dict(static=True))
    parents: tuple[int, ...] = dataclasses.field(default=FLAME_PARENTS, metadata=dict(static=True))

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def n_expr(self) -> int:
        return self.shapedirs.shape[0] - self.n_shape

    @property
    def identity_dirs(self) -> jnp.ndarray:
        """(S, V, 3) shape (identity) components."""
        return self.shapedirs[: self.n_shape]

    @property
    def exprdirs(self) -> jnp.ndarray:
        """(E, V, 3) expression components: what Simon-Says calibration changes."""
        return self.shapedirs[self.n_shape:]

    def with_exprdirs(self, exprdirs: jnp.ndarray) -> "FlameModel":
        """The same model with another expression basis (E', V, 3); differentiable in it."""
        return dataclasses.replace(
            self, shapedirs=jnp.concatenate([self.identity_dirs, exprdirs.astype(self.dtype)], 0))

    @property
    def dtype(self):
        return self.v_template.dtype

    def astype(self, dtype) -> "FlameModel":
        """The same model with every floating-point array cast to ``dtype`` (ids stay int32)."""
        def cast(x):
            return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
        return jax.tree_util.tree_map(cast, self)

    def truncate(self, n_shape: Optional[int] = None, n_expr: Optional[int] = None) -> "FlameModel":
        """Keep the first ``n_shape`` shape and ``n_expr`` expression components."""
        for name, n, have in (("n_shape", n_shape, self.n_shape), ("n_expr", n_expr, self.n_expr)):
            if n is not None and not 0 <= n <= have:
                raise ValueError(f"{name}={n} is outside [0, {have}] for this model")
        n_shape = self.n_shape if n_shape is None else n_shape
        n_expr = self.n_expr if n_expr is None else n_expr
        shapedirs = jnp.concatenate(
            [self.shapedirs[:n_shape], self.exprdirs[:n_expr]], axis=0)
        return dataclasses.replace(self, shapedirs=shapedirs, n_shape=n_shape)


class FlameParams(NamedTuple):
    """Per-frame FLAME parameters; any field left as None means zeros.

    shape (<=S,) and expression (<=E,) may be shorter than the model's bases (missing
    coefficients are zero, as with DECA's 100 shape / 50 expression codes). Poses are
    axis-angle (3,) except eye_pose (6,) = left eye then right eye. translation (3,) in metres.
    """

    shape: Optional[jnp.ndarray] = None
    expression: Optional[jnp.ndarray] = None
    global_pose: Optional[jnp.ndarray] = None
    neck_pose: Optional[jnp.ndarray] = None
    jaw_pose: Optional[jnp.ndarray] = None
    eye_pose: Optional[jnp.ndarray] = None
    translation: Optional[jnp.ndarray] = None


class FlameOutput(NamedTuple):
    """vertices (V, 3), joints (5, 3) posed, landmarks (68, 3) in iBUG order (or (0, 3) when the
    model has no landmark embedding), mediapipe (105, 3) or None."""

    vertices: jnp.ndarray
    joints: jnp.ndarray
    landmarks: jnp.ndarray
    mediapipe: Optional[jnp.ndarray] = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FixedIdentityFlame:
    """A FLAME model with one identity's shape blend folded in (see :func:`bind_identity`).

    The per-vertex arrays are stored *planar* (coordinate-major, vertex index fastest): the
    skinning then runs vectorised over vertices, measured ~25% faster per frame on CPU than the
    (V, 3) layout. rest (3, V) = template + identity_dirs @ shape; j_rest (5, 3) its joints;
    blenddirs (E + P, 3, V) = the expression components, then the pose correctives that are not
    identically zero, so a frame's whole blend is one product; j_exprdirs (5, 3, E) =
    J_regressor applied to the expression components, so the joints cost nothing per frame;
    weights (5, V). Static: ``n_expr`` and ``pose_features``, the indices (into the 36 pose
    features) of the correctives kept in ``blenddirs``.
    """

    rest: jnp.ndarray
    j_rest: jnp.ndarray
    blenddirs: jnp.ndarray
    j_exprdirs: jnp.ndarray
    weights: jnp.ndarray
    faces: jnp.ndarray
    landmarks: Optional[lmk.LandmarkEmbedding] = None
    n_expr: int = dataclasses.field(default=100, metadata=dict(static=True))
    pose_features: tuple[int, ...] = dataclasses.field(default=tuple(range(N_POSE_FEATURES)),
                                                       metadata=dict(static=True))
    parents: tuple[int, ...] = dataclasses.field(default=FLAME_PARENTS, metadata=dict(static=True))

    @property
    def dtype(self):
        return self.rest.dtype


def _coefficients(x: Optional[jnp.ndarray], n: int, dtype, name: str) -> jnp.ndarray:
    """Zero-fill a missing coefficient vector, zero-pad a short one (static shapes only)."""
    if x is None:
        return jnp.zeros((n,), dtype)
    x = jnp.asarray(x, dtype)
    if x.ndim != 1 or x.shape[0] > n:
        raise ValueError(f"FlameParams.{name} must be a vector of at most {n} entries, got shape {x.shape}")
    return jnp.pad(x, (0, n - x.shape[0])) if x.shape[0] < n else x


def _vector(x: Optional[jnp.ndarray], n: int, dtype, name: str) -> jnp.ndarray:
    if x is None:
        return jnp.zeros((n,), dtype)
    x = jnp.asarray(x, dtype)
    if x.shape != (n,):
        raise ValueError(f"FlameParams.{name} must have shape ({n},) for one frame, got {x.shape}; "
                         "batch with jax.vmap")
    return x


def _pose_matrices(params: FlameParams, dtype) -> jnp.ndarray:
    """(5, 3, 3) joint rotations in FLAME order: global, neck, jaw, left eye, right eye."""
    pose = jnp.concatenate([
        _vector(params.global_pose, 3, dtype, "global_pose"),
        _vector(params.neck_pose, 3, dtype, "neck_pose"),
        _vector(params.jaw_pose, 3, dtype, "jaw_pose"),
        _vector(params.eye_pose, 6, dtype, "eye_pose"),
    ]).reshape(N_JOINTS, 3)
    return axis_angle_to_matrix(pose)


def _depth_levels(parents: tuple[int, ...]) -> list[list[int]]:
    """Joints grouped by tree depth (static). FLAME: [[0], [1], [2, 3, 4]]."""
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    return [[j for j, d in enumerate(depth) if d == k] for k in range(max(depth) + 1)]


def _world_transforms(rotations: jnp.ndarray, joints: jnp.ndarray, parents: tuple[int, ...]):
    """Chain the local transforms down the kinematic tree.

    rotations (J, 3, 3) local, joints (J, 3) rest positions -> world rotations (J, 3, 3) and
    posed joint positions (J, 3). The tree is static and shallow (3 levels for FLAME), so the
    chain is unrolled per *level*, each level one batched product, rather than scanned.
    """
    parents_arr = np.asarray(parents)
    offsets = joints - jnp.where((parents_arr >= 0)[:, None], joints[np.maximum(parents_arr, 0)], 0.0)
    world_r = [None] * len(parents)
    world_t = [None] * len(parents)
    for level in _depth_levels(parents):
        idx = np.asarray(level)
        if parents[level[0]] < 0:
            r, t = rotations[idx], offsets[idx]
        else:
            pidx = parents_arr[idx]
            pr = jnp.stack([world_r[p] for p in pidx])
            pt = jnp.stack([world_t[p] for p in pidx])
            r = pr @ rotations[idx]
            t = pt + jnp.einsum("jab,jb->ja", pr, offsets[idx])
        for k, j in enumerate(level):
            world_r[j], world_t[j] = r[k], t[k]
    return jnp.stack(world_r), jnp.stack(world_t)


def _skin(weights: jnp.ndarray, rotations: jnp.ndarray, translations: jnp.ndarray,
          x: jnp.ndarray, y: jnp.ndarray, z: jnp.ndarray, offset: jnp.ndarray) -> jnp.ndarray:
    """Blend the joints' rigid transforms per vertex. weights (J, V), rotations (J, 3, 3),
    translations (J, 3), point coordinates x, y, z (V,) each, offset (3,) added to every vertex
    (the frame's translation) -> (V, 3).

    Written as one elementwise sum over joints and rows (unrolled: J*3 terms) rather than
    forming the (V, 3, 3) blended matrices: XLA fuses it into a single pass over the vertices,
    measured ~10x faster on CPU than the einsum form (skinning would otherwise dominate).
    """
    rows = []
    for a in range(3):
        acc = 0.0
        for j in range(weights.shape[0]):
            r = rotations[j, a]
            acc = acc + weights[j] * (r[0] * x + r[1] * y + r[2] * z + translations[j, a])
        rows.append(acc + offset[a])
    return jnp.stack(rows, axis=-1)


def _pose_features(rotations: jnp.ndarray) -> jnp.ndarray:
    """(5, 3, 3) joint rotations -> (36,) pose feature: (R_j - I) for joints 1..4, row-major."""
    return (rotations[1:] - jnp.eye(3, dtype=rotations.dtype)).reshape(-1)


def _articulate(xyz, joints_rest, rotations, weights, faces, embedding, parents,
                translation) -> FlameOutput:
    """Skinning, translation and landmarks for one frame whose correctives are applied.

    xyz: the posed rest mesh's coordinates, three (V,) arrays; weights (5, V).
    """
    world_r, world_t = _world_transforms(rotations, joints_rest, parents)
    # Skinning transform of joint j maps a rest-pose point p to world_r p + (world_t - world_r J_j).
    skin_t = world_t - jnp.einsum("jab,jb->ja", world_r, joints_rest)
    # The translation is added inside the skinning loop: added afterwards, XLA fuses the add into
    # the landmark gathers and writes the (V, 3) mesh twice (one extra full pass per frame).
    vertices = _skin(weights, world_r, skin_t, *xyz, translation)
    joints = world_t + translation
    if embedding is None:
        return FlameOutput(vertices, joints, jnp.zeros((0, 3), vertices.dtype), None)
    return FlameOutput(vertices, joints,
                       lmk.ibug68(vertices, faces, embedding, rotations[0], rotations[1]),
                       lmk.mediapipe(vertices, faces, embedding))


def _regress_joints(j_regressor: jnp.ndarray, vertices: jnp.ndarray) -> jnp.ndarray:
    """(J, V) regressor, (V, 3) vertices -> (J, 3) joints.

    Applied as kron(J_regressor, I_3) to the flattened mesh: under vmap that is one contiguous
    (frames, 3V) x (3V, 3J) product, where the (J, V) x (V, 3) form makes XLA stride through the
    (frames, V, 3) batch (measured 4-5x slower at batch 256 on CPU).
    """
    n_joints = j_regressor.shape[0]
    eye = jnp.eye(3, dtype=vertices.dtype)
    j_flat = (j_regressor[:, None, :, None] * eye[None, :, None, :]).reshape(3 * n_joints, -1)
    return jnp.einsum("k,jk->j", vertices.reshape(-1), j_flat).reshape(n_joints, 3)


def flame_forward(model: FlameModel, params: FlameParams) -> FlameOutput:
    """FLAME for one frame: shape and expression blend, pose correctives, LBS, translation.

    Jit- and vmap-compatible; follows the model's dtype (float32, or float64 with x64 enabled).
    """
    dtype = model.dtype
    coefs = jnp.concatenate([
        _coefficients(params.shape, model.n_shape, dtype, "shape"),
        _coefficients(params.expression, model.n_expr, dtype, "expression"),
    ])
    # Batched operand first in the products, so that under vmap the frame axis comes out
    # leading and XLA needs no transpose of the (frames, V, 3) result.
    v_shaped = model.v_template + jnp.einsum("k,kvx->vx", coefs, model.shapedirs)
    joints_rest = _regress_joints(model.j_regressor, v_shaped)
    rotations = _pose_matrices(params, dtype)
    v_posed = v_shaped + jnp.einsum("p,pvx->vx", _pose_features(rotations), model.posedirs)
    return _articulate((v_posed[:, 0], v_posed[:, 1], v_posed[:, 2]), joints_rest, rotations,
                       model.weights.T, model.faces, model.landmarks, model.parents,
                       _vector(params.translation, 3, dtype, "translation"))


def _nonzero_pose_features(posedirs: jnp.ndarray) -> tuple[int, ...]:
    """Indices of the pose features whose correctives are not all zero (FLAME's eye joints
    have none). Needs concrete values; under tracing every feature is kept."""
    if isinstance(posedirs, jax.core.Tracer):
        return tuple(range(posedirs.shape[0]))
    used = np.any(np.asarray(posedirs).reshape(posedirs.shape[0], -1) != 0, axis=1)
    return tuple(int(i) for i in np.flatnonzero(used))


def bind_identity(model: FlameModel, shape: Optional[jnp.ndarray] = None) -> FixedIdentityFlame:
    """Fold one identity's shape (<=S,) into the template: the fast path's model.

    Pose correctives that are identically zero are dropped from the per-frame product (exact).
    Rebind after changing the model's expression basis (e.g. after calibration).
    """
    beta = _coefficients(shape, model.n_shape, model.dtype, "shape")
    v_shaped = model.v_template + jnp.einsum("s,svx->vx", beta, model.identity_dirs)
    pose_features = _nonzero_pose_features(model.posedirs)
    blenddirs = jnp.concatenate([model.exprdirs, model.posedirs[np.asarray(pose_features, int)]], axis=0)
    return FixedIdentityFlame(
        rest=v_shaped.T,
        j_rest=model.j_regressor @ v_shaped,
        blenddirs=jnp.swapaxes(blenddirs, 1, 2),
        j_exprdirs=jnp.einsum("jv,evx->jxe", model.j_regressor, model.exprdirs),
        weights=model.weights.T,
        faces=model.faces,
        landmarks=model.landmarks,
        n_expr=model.n_expr,
        pose_features=pose_features,
        parents=model.parents,
    )


def flame_forward_fixed(fixed: FixedIdentityFlame, params: FlameParams) -> FlameOutput:
    """:func:`flame_forward` for a bound identity; ``params.shape`` must be None."""
    if params.shape is not None:
        raise ValueError("flame_forward_fixed: the identity is bound already; pass shape=None")
    dtype = fixed.dtype
    psi = _coefficients(params.expression, fixed.n_expr, dtype, "expression")
    rotations = _pose_matrices(params, dtype)
    features = _pose_features(rotations)[np.asarray(fixed.pose_features, int)]
    v_posed = fixed.rest + jnp.einsum("k,kxv->xv", jnp.concatenate([psi, features]), fixed.blenddirs)
    joints_rest = fixed.j_rest + jnp.einsum("jxe,e->jx", fixed.j_exprdirs, psi)
    return _articulate((v_posed[0], v_posed[1], v_posed[2]), joints_rest, rotations, fixed.weights,
                       fixed.faces, fixed.landmarks, fixed.parents,
                       _vector(params.translation, 3, dtype, "translation"))
