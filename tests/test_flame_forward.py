"""flame_forward against an independent plain-NumPy FLAME reference, plus the fast path, batching,
jit caching, gradients, and the model's helpers.

The reference below is written from the FLAME math (DESIGN.md section 2) in FLAME's *file* layout
(shapedirs (V, 3, S+E), posedirs (V, 3, 36) used as reshape(-1, 36).T), with scipy's Rodrigues and
one explicit 4x4 homogeneous transform per joint; it shares no code with flamejax.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import flamejax as fj
from conftest import N_EXPR, N_SHAPE, N_VERTS, make_raw_flame, raw_to_model

PARENTS = [-1, 0, 1, 1, 1]


# ------------------------------------------------------------------ the NumPy reference


def ref_yaw_bin(head_rotation: np.ndarray) -> int:
    r = head_rotation
    yaw = np.arctan2(-r[2, 0], np.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2))
    deg = int(np.round(min(-np.degrees(yaw), 39.0)))
    if deg < 0:
        return 78 if deg < -39 else 39 - deg
    return deg


def _bary_points(verts, faces, face_ids, bary):
    return np.stack([bary[i] @ verts[faces[f]] for i, f in enumerate(face_ids)])


def ref_forward(raw, shape=None, expression=None, global_pose=None, neck_pose=None, jaw_pose=None,
                eye_pose=None, translation=None, contour_from_neck=True):
    """Plain NumPy float64 FLAME forward. Returns vertices, joints, iBUG-68 landmarks, mediapipe."""
    v_template, shapedirs = raw["v_template"], raw["shapedirs"]
    n_verts = v_template.shape[0]
    n_shape = raw["n_shape"]
    n_expr = shapedirs.shape[2] - n_shape

    beta = np.zeros(n_shape)
    psi = np.zeros(n_expr)
    if shape is not None:
        beta[: len(shape)] = shape
    if expression is not None:
        psi[: len(expression)] = expression
    z3 = np.zeros(3)
    eye = np.zeros(6) if eye_pose is None else np.asarray(eye_pose, np.float64)
    poses = [global_pose, neck_pose, jaw_pose, eye[:3], eye[3:]]
    poses = [z3 if p is None else np.asarray(p, np.float64) for p in poses]
    transl = z3 if translation is None else np.asarray(translation, np.float64)

    # 1. shape + expression blend
    v_shaped = v_template + shapedirs @ np.concatenate([beta, psi])
    # 2. joints from the shaped mesh
    joints = raw["J_regressor"] @ v_shaped
    # 3. pose correctives from (R_j - I) for joints 1..4
    rots = [Rotation.from_rotvec(p).as_matrix() for p in poses]
    feat = np.concatenate([(rots[j] - np.eye(3)).ravel() for j in range(1, 5)])
    posedirs_mat = raw["posedirs"].reshape(-1, 36).T  # (36, V*3)
    v_posed = v_shaped + (feat @ posedirs_mat).reshape(n_verts, 3)
    # 4. rigid chain with explicit 4x4 transforms
    world = []
    for j, parent in enumerate(PARENTS):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    skin = []
    for j in range(5):
        unrest = np.eye(4)
        unrest[:3, 3] = -joints[j]
        skin.append(world[j] @ unrest)
    skin = np.stack(skin)  # (5, 4, 4)
    # 5. linear blend skinning
    per_vertex = np.einsum("vj,jab->vab", raw["weights"], skin)
    homo = np.concatenate([v_posed, np.ones((n_verts, 1))], axis=1)
    verts = np.einsum("vab,vb->va", per_vertex, homo)[:, :3] + transl
    posed_joints = np.stack([w[:3, 3] for w in world]) + transl
    # 6. landmarks: contour chosen by the yaw of global @ neck, iBUG order (contour first)
    faces = raw["f"]
    b = ref_yaw_bin(rots[0] @ rots[1] if contour_from_neck else rots[0])
    contour = _bary_points(verts, faces, raw["dynamic_faces"][b], raw["dynamic_bary"][b])
    static = _bary_points(verts, faces, raw["static_faces"], raw["static_bary"])
    mediapipe = _bary_points(verts, faces, raw["mediapipe_faces"], raw["mediapipe_bary"])
    return dict(vertices=verts, joints=posed_joints, landmarks=np.concatenate([contour, static]),
                mediapipe=mediapipe, yaw_bin=b)


# ------------------------------------------------------------------ helpers


def random_params(rng, large=False, n_shape=N_SHAPE, n_expr=N_EXPR) -> dict:
    """Random parameters as a dict of float64 NumPy vectors."""
    def aa(scale):
        return rng.normal(0.0, scale, 3)
    if large:
        glob = rng.normal(size=3)
        glob *= rng.uniform(1.5, 3.1) / np.linalg.norm(glob)
    else:
        glob = aa(0.3)
    return dict(shape=rng.normal(0, 1.0, n_shape), expression=rng.normal(0, 1.0, n_expr),
                global_pose=glob, neck_pose=aa(0.8 if large else 0.2), jaw_pose=aa(0.8 if large else 0.2),
                eye_pose=rng.normal(0, 0.8 if large else 0.2, 6), translation=rng.normal(0, 0.3, 3))


FULL_SIZES = dict(shape=N_SHAPE, expression=N_EXPR, global_pose=3, neck_pose=3, jaw_pose=3, eye_pose=6,
                  translation=3)


def to_params(d: dict, dtype, fill=True) -> fj.FlameParams:
    """FlameParams from a dict; missing fields become explicit zeros (``fill``), so that every call
    has the same pytree structure and the jitted forward compiles once per dtype."""
    out = {k: jnp.asarray(v, dtype) for k, v in d.items()}
    if fill:
        for k, n in FULL_SIZES.items():
            out.setdefault(k, jnp.zeros(n, dtype))
    return fj.FlameParams(**out)


def no_shape(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "shape"}


def stack_params(ds: list[dict], dtype) -> fj.FlameParams:
    return fj.FlameParams(**{k: jnp.asarray(np.stack([d[k] for d in ds]), dtype) for k in ds[0]})


def yaw_pose(deg: float, rng) -> np.ndarray:
    """A head rotation with the given yaw (about +y) and small pitch/roll."""
    r = Rotation.from_euler("YXZ", [np.radians(deg), rng.normal(0, 0.1), rng.normal(0, 0.1)])
    return r.as_rotvec()


def assert_matches_ref(out: fj.FlameOutput, ref: dict, atol: float):
    np.testing.assert_allclose(np.asarray(out.vertices, np.float64), ref["vertices"], atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(out.joints, np.float64), ref["joints"], atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(out.landmarks, np.float64), ref["landmarks"], atol=atol, rtol=0)
    np.testing.assert_allclose(np.asarray(out.mediapipe, np.float64), ref["mediapipe"], atol=atol, rtol=0)


forward = jax.jit(fj.flame_forward)
forward_fixed = jax.jit(fj.flame_forward_fixed)


def fixed_params(d: dict, dtype) -> fj.FlameParams:
    return to_params(no_shape(d), dtype)._replace(shape=None)
vforward = jax.jit(jax.vmap(fj.flame_forward, in_axes=(None, 0)))


@pytest.fixture
def model64(raw_flame, x64):
    return raw_to_model(raw_flame, jnp.float64)


# ------------------------------------------------------------------ forward vs reference


def test_reference_sanity(raw_flame):
    """The reference itself: rest pose reproduces the template; joints of a pure translation shift."""
    ref = ref_forward(raw_flame)
    np.testing.assert_allclose(ref["vertices"], raw_flame["v_template"], atol=1e-15)
    np.testing.assert_allclose(ref["joints"], raw_flame["J_regressor"] @ raw_flame["v_template"], atol=1e-15)
    t = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(ref_forward(raw_flame, translation=t)["vertices"], raw_flame["v_template"] + t)
    assert ref_yaw_bin(np.eye(3)) == 0


def test_output_shapes_and_dtype_float32(flame_model):
    out = forward(flame_model, fj.FlameParams())
    chex.assert_shape(out.vertices, (N_VERTS, 3))
    chex.assert_shape(out.joints, (5, 3))
    chex.assert_shape(out.landmarks, (68, 3))
    chex.assert_shape(out.mediapipe, (105, 3))
    chex.assert_type([out.vertices, out.joints, out.landmarks, out.mediapipe], jnp.float32)


def test_forward_float32_matches_reference_random(flame_model, raw_flame):
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in range(16):
        d = random_params(rng, large=i % 2 == 1)
        ref = ref_forward(raw_flame, **d)
        out_i = forward(flame_model, to_params(d, jnp.float32))
        assert_matches_ref(out_i, ref, atol=2e-5)
        worst = max(worst, float(np.abs(np.asarray(out_i.vertices) - ref["vertices"]).max()))
    print(f"float32 max vertex error vs NumPy reference: {worst:.3g} m")


def test_forward_float32_unbatched_matches_reference(flame_model, raw_flame):
    d = random_params(np.random.default_rng(1), large=True)
    assert_matches_ref(forward(flame_model, to_params(d, jnp.float32)), ref_forward(raw_flame, **d), atol=2e-5)


def test_forward_float64_matches_reference(model64, raw_flame):
    rng = np.random.default_rng(2)
    worst = 0.0
    for i in range(16):
        d = random_params(rng, large=i % 2 == 1)
        ref = ref_forward(raw_flame, **d)
        out_i = forward(model64, to_params(d, jnp.float64))
        chex.assert_type(out_i.vertices, jnp.float64)
        assert_matches_ref(out_i, ref, atol=1e-12)
        worst = max(worst, float(np.abs(np.asarray(out_i.vertices) - ref["vertices"]).max()))
    print(f"float64 max vertex error vs NumPy reference: {worst:.3g} m")


def test_rotations_near_pi_and_exact_zero(model64, raw_flame):
    axis = np.array([0.3, -0.8, 0.52])
    axis /= np.linalg.norm(axis)
    cases = [dict(),  # everything zero
             dict(global_pose=np.zeros(3), neck_pose=np.zeros(3), jaw_pose=np.zeros(3), eye_pose=np.zeros(6)),
             dict(global_pose=axis * (np.pi - 1e-7), jaw_pose=np.array([0.0, 0.0, np.pi])),
             dict(neck_pose=-axis * np.pi, eye_pose=np.r_[axis * 3.0, -axis * 1e-9]),
             dict(global_pose=axis * 5.0, expression=np.ones(N_EXPR))]
    for c in cases:
        out = forward(model64, to_params(c, jnp.float64))
        assert_matches_ref(out, ref_forward(raw_flame, **c), atol=1e-12)


def _head_yaw_deg(d) -> float:
    r = Rotation.from_rotvec(d["global_pose"]).as_matrix() @ Rotation.from_rotvec(d["neck_pose"]).as_matrix()
    return float(np.degrees(np.arctan2(-r[2, 0], np.hypot(r[0, 0], r[1, 0]))))


def _near_bin_edge(d, tol=1e-3) -> bool:
    deg = _head_yaw_deg(d)
    return abs(abs(deg - np.floor(deg)) - 0.5) < tol


def test_landmark_contour_follows_head_yaw_across_bins(flame_model, model64, raw_flame):
    """Sweep head yaw over [-55, 55] degrees, split between global and neck rotation."""
    rng = np.random.default_rng(3)
    ds = []
    for deg in np.arange(-55.0, 55.0, 0.8):
        while True:
            split = rng.uniform(0.0, 1.0)
            d = random_params(rng)
            d["global_pose"] = yaw_pose(split * deg, rng)
            d["neck_pose"] = yaw_pose((1 - split) * deg, rng)
            if not _near_bin_edge(d):  # float32 and float64 must agree on the bin
                break
        ds.append(d)
    refs = [ref_forward(raw_flame, **d) for d in ds]
    bins = {r["yaw_bin"] for r in refs}
    assert len(bins) > 60 and {39, 78} <= bins and len(bins & set(range(40))) > 30
    for model, dtype, atol in ((flame_model, jnp.float32, 2e-5), (model64, jnp.float64, 1e-12)):
        for d, ref in zip(ds, refs):
            out = forward(model, to_params(d, dtype))
            np.testing.assert_allclose(np.asarray(out.landmarks, np.float64), ref["landmarks"], atol=atol,
                                       err_msg=f"yaw bin {ref['yaw_bin']}")




def test_contour_from_global_rotation_only_like_smplx(model64, raw_flame):
    """contour_from_neck=False (smplx's convention) picks the contour by the global yaw alone."""
    import dataclasses

    emb = dataclasses.replace(model64.landmarks, contour_from_neck=False)
    model = dataclasses.replace(model64, landmarks=emb)
    p = dict(global_pose=np.array([0.0, 0.3, 0.0]), neck_pose=np.array([0.0, -0.5, 0.0]))
    ours = fj.flame_forward(model, to_params(p, jnp.float64))
    ref = ref_forward(raw_flame, contour_from_neck=False, **p)
    ref_neck = ref_forward(raw_flame, **p)
    assert ref["yaw_bin"] != ref_neck["yaw_bin"]
    np.testing.assert_allclose(np.asarray(ours.landmarks), ref["landmarks"], atol=1e-12)


@pytest.mark.parametrize("deg,expected", [(0.2, 0), (-10.3, 10), (-38.8, 39), (-45.0, 39), (-90.0, 39),
                                          (10.3, 49), (1.0, 40), (38.8, 78), (39.7, 78), (55.0, 78),
                                          (89.0, 78)])
def test_yaw_bin_table(deg, expected):
    """Positive head yaw (about +y) maps to bins 40..78, negative to 0..39; clamped at 39 degrees."""
    r = Rotation.from_rotvec([0.0, np.radians(deg), 0.0]).as_matrix()
    assert ref_yaw_bin(r) == expected
    assert int(fj.landmarks.yaw_bin(jnp.asarray(r, jnp.float32))) == expected


def test_omitted_fields_default_to_zero(flame_model):
    z = jnp.zeros
    full = fj.FlameParams(shape=z(N_SHAPE), expression=z(N_EXPR), global_pose=z(3), neck_pose=z(3),
                          jaw_pose=z(3), eye_pose=z(6), translation=z(3))
    chex.assert_trees_all_close(forward(flame_model, fj.FlameParams()), forward(flame_model, full), atol=0)
    rng = np.random.default_rng(4)
    jaw = jnp.asarray(rng.normal(0, 0.3, 3), jnp.float32)
    expr = jnp.asarray(rng.normal(size=N_EXPR), jnp.float32)
    only = fj.FlameParams(expression=expr, jaw_pose=jaw)
    chex.assert_trees_all_close(forward(flame_model, only),
                                forward(flame_model, full._replace(expression=expr, jaw_pose=jaw)), atol=0)


def test_short_coefficient_vectors_are_zero_padded(flame_model, raw_flame):
    rng = np.random.default_rng(5)
    shape, expr = rng.normal(size=5), rng.normal(size=3)
    out = forward(flame_model, to_params(dict(shape=shape, expression=expr), jnp.float32))
    padded = forward(flame_model, to_params(dict(shape=np.r_[shape, np.zeros(N_SHAPE - 5)],
                                                 expression=np.r_[expr, np.zeros(N_EXPR - 3)]), jnp.float32))
    chex.assert_trees_all_close(out, padded, atol=0)
    assert_matches_ref(out, ref_forward(raw_flame, shape=shape, expression=expr), atol=1e-5)
    # zero-length vectors are fine too
    empty = forward(flame_model, to_params(dict(shape=np.zeros(0), expression=np.zeros(0)), jnp.float32))
    chex.assert_trees_all_close(empty, forward(flame_model, to_params({}, jnp.float32)), atol=0)


@pytest.mark.parametrize("field,value", [
    ("shape", np.zeros(N_SHAPE + 1)),
    ("expression", np.zeros(N_EXPR + 1)),
    ("shape", np.zeros((1, N_SHAPE))),
    ("expression", np.zeros((2, 3))),
    ("expression", np.float32(0.0)),
    ("global_pose", np.zeros(2)),
    ("global_pose", np.zeros((1, 3))),
    ("neck_pose", np.zeros(4)),
    ("jaw_pose", np.zeros(6)),
    ("eye_pose", np.zeros(3)),
    ("eye_pose", np.zeros((2, 3))),
    ("translation", np.zeros((3, 1))),
])
def test_wrong_shapes_raise_value_error(flame_model, field, value):
    params = fj.FlameParams(**{field: jnp.asarray(value, jnp.float32)})
    with pytest.raises(ValueError):
        forward(flame_model, params)  # raised while tracing
    if field != "shape":
        with pytest.raises(ValueError):
            forward_fixed(fj.bind_identity(flame_model), params)


def test_wrong_shapes_raise_value_error_eagerly(flame_model):
    with pytest.raises(ValueError):
        fj.flame_forward(flame_model, fj.FlameParams(expression=jnp.zeros(N_EXPR + 1)))
    with pytest.raises(ValueError):
        fj.flame_forward(flame_model, fj.FlameParams(shape=jnp.zeros((1, N_SHAPE))))


def test_fixed_rejects_shape_and_bind_rejects_long_shape(flame_model):
    fixed = fj.bind_identity(flame_model)
    with pytest.raises(ValueError):
        fj.flame_forward_fixed(fixed, fj.FlameParams(shape=jnp.zeros(N_SHAPE)))
    with pytest.raises(ValueError):
        fj.bind_identity(flame_model, jnp.zeros(N_SHAPE + 1))


def test_model_without_landmarks(raw_flame):
    bare = raw_to_model(raw_flame, with_landmarks=False)
    out = forward(bare, to_params(random_params(np.random.default_rng(6)), jnp.float32))
    chex.assert_shape(out.landmarks, (0, 3))
    assert out.mediapipe is None
    no_mp = raw_to_model(raw_flame, with_mediapipe=False)
    out = forward(no_mp, to_params({}, jnp.float32))
    chex.assert_shape(out.landmarks, (68, 3))
    assert out.mediapipe is None


# ------------------------------------------------------------------ fast path, vmap, jit


def test_bind_identity_fast_path_equals_forward(flame_model, model64):
    rng = np.random.default_rng(7)
    for model, atol in ((flame_model, 2e-6), (model64, 1e-13)):
        dtype = model.dtype
        for i in range(4):
            d = random_params(rng, large=i % 2 == 1)
            beta = d["shape"]
            fixed = fj.bind_identity(model, jnp.asarray(beta, dtype))
            chex.assert_trees_all_close(forward_fixed(fixed, fixed_params(d, dtype)),
                                        forward(model, to_params(dict(d, shape=beta), dtype)), atol=atol)
        # a short shape vector binds like its zero-padded version; no shape = zeros
        short = fj.bind_identity(model, jnp.asarray(beta[:4], dtype))
        chex.assert_trees_all_close(forward_fixed(short, fixed_params(d, dtype)),
                                    forward(model, to_params(dict(d, shape=np.r_[beta[:4], np.zeros(N_SHAPE - 4)]),
                                                             dtype)), atol=atol)
        chex.assert_trees_all_close(forward_fixed(fj.bind_identity(model), fixed_params(d, dtype)),
                                    forward(model, to_params(dict(d, shape=np.zeros(N_SHAPE)), dtype)), atol=atol)


def test_fast_path_drops_only_all_zero_pose_correctives(model64, raw_flame):
    """FLAME's eye joints have no correctives; the fast path skips such features exactly."""
    import dataclasses

    posedirs = np.array(model64.posedirs)
    posedirs[18:] = 0.0  # eye features, as in FLAME
    posedirs[3] = 0.0  # and one neck feature
    model = dataclasses.replace(model64, posedirs=jnp.asarray(posedirs))
    fixed = fj.bind_identity(model)
    assert fixed.pose_features == tuple(i for i in range(18) if i != 3)
    assert fj.bind_identity(model64).pose_features == tuple(range(36))
    d = random_params(np.random.default_rng(12), large=True)
    d["shape"] = np.zeros(N_SHAPE)
    chex.assert_trees_all_close(forward_fixed(fixed, fixed_params(d, jnp.float64)),
                                forward(model, to_params(d, jnp.float64)), atol=1e-13)


def test_vmap_equals_python_loop(flame_model):
    rng = np.random.default_rng(8)
    ds = [random_params(rng, large=i % 3 == 0) for i in range(6)]
    batched = vforward(flame_model, stack_params(ds, jnp.float32))
    looped = [forward(flame_model, to_params(d, jnp.float32)) for d in ds]
    chex.assert_trees_all_close(batched, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *looped),
                                atol=1e-6)
    fixed = fj.bind_identity(flame_model, jnp.asarray(ds[0]["shape"], jnp.float32))
    vfixed = jax.jit(jax.vmap(fj.flame_forward_fixed, in_axes=(None, 0)))(
        fixed, stack_params([no_shape(d) for d in ds], jnp.float32))
    looped = [forward_fixed(fixed, fixed_params(d, jnp.float32)) for d in ds]
    chex.assert_trees_all_close(vfixed, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *looped), atol=1e-6)


def test_jit_does_not_retrace_for_new_values(flame_model):
    traces = []

    def f(model, params):
        traces.append(1)  # runs only while tracing
        return fj.flame_forward(model, params)

    jf = jax.jit(f)
    rng = np.random.default_rng(9)
    outs = [jf(flame_model, to_params(random_params(rng), jnp.float32)) for _ in range(3)]
    assert len(traces) == 1
    assert not np.allclose(np.asarray(outs[0].vertices), np.asarray(outs[1].vertices))
    # A model with other values (same shapes and static fields) reuses the trace as well.
    other = dataclasses.replace(flame_model, v_template=flame_model.v_template + 0.01)
    jf(other, to_params(random_params(rng), jnp.float32))
    assert len(traces) == 1
    assert jf._cache_size() == 1

    fixed_traces = []

    def g(fixed, params):
        fixed_traces.append(1)
        return fj.flame_forward_fixed(fixed, params)

    jg = jax.jit(g)
    for i in range(3):
        d = random_params(rng)
        fixed = fj.bind_identity(flame_model, jnp.asarray(d["shape"], jnp.float32))
        jg(fixed, fixed_params(d, jnp.float32))
    assert len(fixed_traces) == 1


# ------------------------------------------------------------------ gradients (float64)


def _scalar_loss(out: fj.FlameOutput, weights) -> jnp.ndarray:
    wv, wj, wl, wm = weights
    return (jnp.sum(wv * out.vertices) + jnp.sum(wj * out.joints) + jnp.sum(wl * out.landmarks)
            + jnp.sum(wm * out.mediapipe))


def _np_loss(out: fj.FlameOutput, weights) -> float:
    return float(sum(np.sum(np.asarray(w, np.float64) * np.asarray(o, np.float64))
                     for w, o in zip(weights, (out.vertices, out.joints, out.landmarks, out.mediapipe))))


def _loss_weights(rng, dtype):
    return tuple(jnp.asarray(rng.normal(size=s), dtype) for s in ((N_VERTS, 3), (5, 3), (68, 3), (105, 3)))


def _loss_full(shapedirs, params, model, w):
    return _scalar_loss(fj.flame_forward(dataclasses.replace(model, shapedirs=shapedirs), params), w)


def _loss_fixed(exprdirs, params, beta, model, w):
    fixed = fj.bind_identity(model.with_exprdirs(exprdirs), beta)
    return _scalar_loss(fj.flame_forward_fixed(fixed, params), w)


# Module-level, so that all the gradient tests share one compilation per dtype.
_grad_full = jax.jit(jax.grad(_loss_full, argnums=(0, 1)))
_grad_fixed = jax.jit(jax.grad(_loss_fixed, argnums=(0, 1)))

EPS = 1e-6


@pytest.mark.parametrize("case", ["random", "zero_pose", "large"])
def test_param_gradients_match_finite_differences(model64, case):
    rng = np.random.default_rng({"random": 10, "zero_pose": 11, "large": 12}[case])
    d = random_params(rng, large=case == "large")
    if case == "zero_pose":  # exactly zero: the series branch of Rodrigues' formula
        for k in ("global_pose", "neck_pose", "jaw_pose", "eye_pose"):
            d[k] = np.zeros_like(d[k])
    # Keep away from a yaw-bin edge so that finite differences see a smooth function.
    assert not _near_bin_edge(d)
    w = _loss_weights(rng, jnp.float64)
    _, grads = _grad_full(model64.shapedirs, to_params(d, jnp.float64), model64, w)
    for field in FULL_SIZES:
        g = np.asarray(getattr(grads, field))
        assert np.all(np.isfinite(g)), field
        fd = np.zeros_like(g)
        for i in range(g.size):
            vals = []
            for sign in (1.0, -1.0):
                x = d[field].copy()
                x[i] += sign * EPS
                vals.append(_np_loss(forward(model64, to_params(dict(d, **{field: x}), jnp.float64)), w))
            fd[i] = (vals[0] - vals[1]) / (2 * EPS)
        np.testing.assert_allclose(g, fd, atol=1e-7, rtol=1e-6, err_msg=f"d loss / d {field} ({case})")


def test_gradient_wrt_model_shapedirs(model64):
    rng = np.random.default_rng(15)
    d = random_params(rng, large=True)
    p = to_params(d, jnp.float64)
    w = _loss_weights(rng, jnp.float64)
    grad, _ = _grad_full(model64.shapedirs, p, model64, w)
    grad = np.asarray(grad)
    chex.assert_shape(grad, model64.shapedirs.shape)
    assert np.all(np.isfinite(grad))
    assert np.any(grad[:N_SHAPE] != 0) and np.any(grad[N_SHAPE:] != 0)
    for _ in range(4):  # directional derivatives
        v = rng.normal(size=grad.shape)
        vals = [_np_loss(forward(dataclasses.replace(model64, shapedirs=model64.shapedirs + s * EPS * v), p), w)
                for s in (1.0, -1.0)]
        np.testing.assert_allclose(np.sum(grad * v), (vals[0] - vals[1]) / (2 * EPS), rtol=1e-6, atol=1e-8)


def test_fixed_path_gradients_equal_full_path(model64):
    """Through bind_identity(model.with_exprdirs(E)) -- the calibration path -- the gradients w.r.t.
    the expression basis and the frame parameters equal the full forward's, and match FD."""
    rng = np.random.default_rng(16)
    d = random_params(rng)
    w = _loss_weights(rng, jnp.float64)
    beta = jnp.asarray(d["shape"])
    g_dirs, g_params = _grad_full(model64.shapedirs, to_params(d, jnp.float64), model64, w)
    g_expr, g_fparams = _grad_fixed(model64.exprdirs, fixed_params(d, jnp.float64), beta, model64, w)
    np.testing.assert_allclose(np.asarray(g_expr), np.asarray(g_dirs)[N_SHAPE:], atol=1e-12)
    for field in FULL_SIZES:
        if field != "shape":
            np.testing.assert_allclose(np.asarray(getattr(g_fparams, field)), np.asarray(getattr(g_params, field)),
                                       atol=1e-12, err_msg=field)
    g_expr = np.asarray(g_expr)
    for _ in range(3):
        v = rng.normal(size=g_expr.shape)
        vals = [_np_loss(forward_fixed(fj.bind_identity(model64.with_exprdirs(model64.exprdirs + s * EPS * v), beta),
                                       fixed_params(d, jnp.float64)), w) for s in (1.0, -1.0)]
        np.testing.assert_allclose(np.sum(g_expr * v), (vals[0] - vals[1]) / (2 * EPS), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ model helpers


def test_model_properties(flame_model, raw_flame):
    assert flame_model.n_vertices == N_VERTS
    assert flame_model.n_shape == N_SHAPE
    assert flame_model.n_expr == N_EXPR
    np.testing.assert_allclose(np.asarray(flame_model.identity_dirs),
                               np.transpose(raw_flame["shapedirs"][:, :, :N_SHAPE], (2, 0, 1)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(flame_model.exprdirs),
                               np.transpose(raw_flame["shapedirs"][:, :, N_SHAPE:], (2, 0, 1)), atol=1e-7)


def test_truncate(flame_model, raw_flame):
    small = flame_model.truncate(n_shape=5, n_expr=3)
    assert (small.n_shape, small.n_expr) == (5, 3)
    chex.assert_shape(small.shapedirs, (8, N_VERTS, 3))
    rng = np.random.default_rng(17)
    d = random_params(rng, n_shape=5, n_expr=3)
    out = forward(small, to_params(d, jnp.float32))
    # the truncated model equals the full model with the dropped coefficients at zero
    assert_matches_ref(out, ref_forward(raw_flame, **d), atol=2e-5)
    padded = dict(d, shape=np.r_[d["shape"], np.zeros(N_SHAPE - 5)], expression=np.r_[d["expression"], np.zeros(N_EXPR - 3)])
    chex.assert_trees_all_close(out, forward(flame_model, to_params(padded, jnp.float32)), atol=1e-6)
    with pytest.raises(ValueError):
        fj.flame_forward(small, to_params(dict(d, expression=np.zeros(4)), jnp.float32))
    # one side at a time, and no-ops
    assert flame_model.truncate(n_expr=0).n_expr == 0 and flame_model.truncate(n_expr=0).n_shape == N_SHAPE
    assert flame_model.truncate(n_shape=0).n_shape == 0 and flame_model.truncate(n_shape=0).n_expr == N_EXPR
    chex.assert_trees_all_close(flame_model.truncate(), flame_model)
    chex.assert_trees_all_close(flame_model.truncate(N_SHAPE, N_EXPR), flame_model)
    for bad in (dict(n_shape=N_SHAPE + 1), dict(n_expr=N_EXPR + 1), dict(n_shape=-1), dict(n_expr=-1)):
        with pytest.raises(ValueError):
            flame_model.truncate(**bad)


def test_truncate_expression_only_model_runs(flame_model):
    out = forward(flame_model.truncate(n_shape=0), fj.FlameParams(expression=jnp.ones(N_EXPR)))
    chex.assert_trees_all_close(out, forward(flame_model, fj.FlameParams(expression=jnp.ones(N_EXPR))), atol=1e-6)


def test_with_exprdirs(flame_model, raw_flame):
    rng = np.random.default_rng(18)
    new = rng.normal(0, 0.004, size=(4, N_VERTS, 3))
    m = flame_model.with_exprdirs(jnp.asarray(new))  # float64 NumPy input is cast to the model's dtype
    assert m.n_expr == 4 and m.n_shape == N_SHAPE
    chex.assert_type(m.shapedirs, jnp.float32)
    np.testing.assert_allclose(np.asarray(m.exprdirs), new, atol=1e-8)
    chex.assert_trees_all_close(m.identity_dirs, flame_model.identity_dirs)
    raw = dict(raw_flame, shapedirs=np.concatenate(
        [raw_flame["shapedirs"][:, :, :N_SHAPE], np.transpose(new, (1, 2, 0))], axis=2))
    d = random_params(rng, n_expr=4)
    assert_matches_ref(forward(m, to_params(d, jnp.float32)), ref_forward(raw, **d), atol=2e-5)


def test_astype_float64(raw_flame, flame_model, x64):
    m64 = flame_model.astype(jnp.float64)
    for leaf in (m64.v_template, m64.shapedirs, m64.posedirs, m64.j_regressor, m64.weights,
                 m64.landmarks.static_bary, m64.landmarks.dynamic_bary, m64.landmarks.mediapipe_bary):
        chex.assert_type(leaf, jnp.float64)
    for leaf in (m64.faces, m64.landmarks.static_faces, m64.landmarks.dynamic_faces,
                 m64.landmarks.mediapipe_faces):
        assert jnp.issubdtype(leaf.dtype, jnp.integer)
    assert (m64.n_shape, m64.parents) == (flame_model.n_shape, flame_model.parents)
    assert m64.dtype == jnp.float64
    d = random_params(np.random.default_rng(19))
    out = forward(m64, to_params(d, jnp.float64))
    chex.assert_type(out.vertices, jnp.float64)
    # the float32 model's values, evaluated in float64
    ref = ref_forward(dict(raw_flame, **{k: np.asarray(raw_flame[k], np.float32).astype(np.float64)
                                         for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                                                   "weights", "static_bary", "dynamic_bary",
                                                   "mediapipe_bary")}), **d)
    assert_matches_ref(out, ref, atol=1e-12)
    back = m64.astype(jnp.float32)
    chex.assert_trees_all_close(back, flame_model, atol=0)
    chex.assert_type(back.v_template, jnp.float32)


def test_model_is_a_pytree_with_static_fields(flame_model):
    leaves, treedef = jax.tree_util.tree_flatten(flame_model)
    assert all(hasattr(x, "dtype") for x in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.n_shape == N_SHAPE and rebuilt.parents == (-1, 0, 1, 1, 1)


def test_other_random_model_seed():
    """A second random model (other sizes) against the reference, so nothing depends on one draw."""
    raw = make_raw_flame(seed=5, n_verts=40, n_faces=60, n_shape=3, n_expr=20)
    model = raw_to_model(raw)
    d = random_params(np.random.default_rng(20), large=True, n_shape=3, n_expr=20)
    assert_matches_ref(forward(model, to_params(d, jnp.float32)), ref_forward(raw, **d), atol=2e-5)
