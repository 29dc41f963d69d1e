"""The semantic rig (theta = B c + g -> FLAME) and fitting its basis from paired data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import flamejax as fj
from flamejax.semantic.fit import fit_semantic_rig
from flamejax.semantic.rig import (
    make_rig,
    rig_flame_params,
    rig_parameters,
    rig_vertices,
    rig_vertices_frames,
    rig_vertices_full,
)

N_SHAPE, N_EXPR, K = 10, 12, 4

# One jitted batch forward for all fixtures (a jit made per fixture call would recompile).
_frames = jax.jit(jax.vmap(rig_vertices, in_axes=(None, None, 0)))


@pytest.fixture(scope="module")
def model():
    return fj.synthetic.make_flame(0, size="tiny", n_shape=N_SHAPE, n_expr=N_EXPR)


def _basis(rng, n_expr=N_EXPR, k=K, neck=False):
    """A plausible B: expression coefficients ~N(0, 1), jaw angles ~0.1 rad, control 0 opens the jaw."""
    b = np.concatenate([rng.normal(size=(n_expr, k)), rng.normal(0.0, 0.1, size=(3, k))])
    b[n_expr, 0] = 0.3
    if neck:
        b = np.concatenate([b, rng.normal(0.0, 0.1, size=(3, k))])
    return b


def _reference_parameters(basis, offset, controls, n_expr, convention, neck):
    """Plain NumPy + scipy: theta = B c + g; Euler XYZ -> matrix (transposed for
    face_calibration) -> rotation vector."""
    theta = basis @ controls + offset

    def aa(angles):
        r = Rotation.from_euler("XYZ", angles).as_matrix()  # intrinsic: Rx Ry Rz
        if convention == "face_calibration":
            r = r.T
        return Rotation.from_matrix(r).as_rotvec()

    return theta[:n_expr], aa(theta[n_expr:n_expr + 3]), (aa(theta[n_expr + 3:]) if neck else None)


@pytest.mark.parametrize("convention", ["face_calibration", "xyz"])
@pytest.mark.parametrize("neck", [False, True])
def test_rig_parameters_match_numpy(convention, neck):
    rng = np.random.default_rng(1)
    basis = _basis(rng, neck=neck)
    offset = rng.normal(0.0, 0.05, size=basis.shape[0])
    rig = make_rig(basis, offset, jaw_convention=convention, has_neck=neck)
    assert rig.n_expr == N_EXPR and rig.n_params == basis.shape[0] and rig.n_controls == K
    for controls in rng.uniform(0.0, 1.0, size=(3, K)):
        expr, jaw, neck_pose = jax.jit(rig_parameters)(rig, controls)
        ref = _reference_parameters(basis, offset, controls, N_EXPR, convention, neck)
        np.testing.assert_allclose(expr, ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(jaw, ref[1], atol=2e-6)
        if neck:
            np.testing.assert_allclose(neck_pose, ref[2], atol=2e-6)
        else:
            assert neck_pose is None


def test_conventions_are_each_others_inverse():
    rig = make_rig(_basis(np.random.default_rng(2)))
    xyz = make_rig(rig.basis, jaw_convention="xyz")
    c = jnp.array([1.0, 0.5, 0.2, 0.7])
    np.testing.assert_allclose(rig_parameters(rig, c)[1], -rig_parameters(xyz, c)[1], atol=1e-6)


def test_make_rig_validates():
    with pytest.raises(ValueError):
        make_rig(np.zeros((15, 3)), n_expr=10)
    with pytest.raises(ValueError):
        make_rig(np.zeros((15, 3)), np.zeros(14))
    with pytest.raises(ValueError):
        make_rig(np.zeros((15, 3)), jaw_convention="zyx")
    with pytest.raises(ValueError):
        make_rig(np.zeros((15, 3)), controls=("a", "b"))
    rig = make_rig(np.zeros((18, 2)), has_neck=True, controls=("jawOpen", "mouthFunnel"))
    assert rig.n_expr == 12 and rig.controls == ("jawOpen", "mouthFunnel")


@pytest.mark.parametrize("neck", [False, True])
def test_vertices_equal_flame_forward(model, neck):
    rng = np.random.default_rng(3)
    rig = make_rig(_basis(rng, neck=neck), has_neck=neck)
    shape = jnp.asarray(rng.normal(size=N_SHAPE), jnp.float32)
    fixed = fj.bind_identity(model, shape)
    global_pose = jnp.array([0.05, -0.1, 0.02])
    for controls in rng.uniform(0.0, 1.0, size=(2, K)):
        expr, jaw, neck_pose = rig_parameters(rig, controls)
        ref = jax.jit(fj.flame_forward)(model, fj.FlameParams(shape=shape, expression=expr, jaw_pose=jaw,
                                                     neck_pose=neck_pose, global_pose=global_pose)).vertices
        fast = jax.jit(rig_vertices)(fixed, rig, controls, global_pose=global_pose)
        full = jax.jit(rig_vertices_full)(model, rig, controls, shape, global_pose=global_pose)
        np.testing.assert_allclose(fast, ref, atol=2e-6)
        np.testing.assert_allclose(full, ref, atol=2e-6)
    assert (rig_flame_params(rig, controls).neck_pose is None) == (not neck)
    with pytest.raises(ValueError):
        rig_flame_params(rig, controls, jaw_pose=jnp.zeros(3))


def test_vmap_over_frames_equals_loop(model):
    rng = np.random.default_rng(4)
    rig = make_rig(_basis(rng))
    fixed = fj.bind_identity(model)
    frames = jnp.asarray(rng.uniform(0.0, 1.0, size=(5, K)), jnp.float32)
    batched = jax.jit(jax.vmap(rig_vertices, in_axes=(None, None, 0)))(fixed, rig, frames)
    looped = jnp.stack([rig_vertices(fixed, rig, c) for c in frames])
    np.testing.assert_allclose(batched, looped, atol=1e-6)
    np.testing.assert_allclose(jax.jit(rig_vertices_frames)(model, rig, frames), looped, atol=2e-6)


def test_gradients_match_finite_differences(model, x64):
    """d(loss)/d(controls, B, g, expression basis) in float64, against central differences
    along random directions."""
    rng = np.random.default_rng(5)
    m64 = model.astype(jnp.float64)
    rig = make_rig(jnp.asarray(_basis(rng)), jnp.asarray(rng.normal(0.0, 0.05, size=N_EXPR + 3)))
    shape = jnp.asarray(rng.normal(size=N_SHAPE))
    frames = jnp.asarray(rng.uniform(0.0, 1.0, size=(3, K)))
    weights = jnp.asarray(rng.normal(size=(3, m64.n_vertices, 3)))

    def loss(controls, basis, offset, exprdirs):
        r = make_rig(basis, offset)
        return jnp.sum(weights * rig_vertices_frames(m64, r, controls, shape, exprdirs=exprdirs))

    args = (frames, rig.basis, rig.offset, m64.exprdirs)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    jloss = jax.jit(loss)
    for i, g in enumerate(grads):
        assert bool(jnp.all(jnp.isfinite(g)))
        d = jnp.asarray(rng.normal(size=g.shape))
        eps = 1e-6 * (1.0 if i != 3 else 1e-3)  # the basis entries are ~1e-4 m

        def shifted(s):
            a = list(args)
            a[i] = a[i] + s * eps * d
            return jloss(*a)

        fd = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(g, d), fd, rtol=1e-6, atol=1e-9)


@pytest.fixture
def fit_world(model, x64):
    """float64 bound identity, a known rig and its full-activation targets + combination pairs."""
    rng = np.random.default_rng(6)
    m64 = model.astype(jnp.float64)
    fixed = fj.bind_identity(m64, jnp.asarray(rng.normal(size=N_SHAPE)))
    basis = _basis(rng)
    frames = _frames
    pair_controls = rng.uniform(0.0, 1.0, size=(3, K))
    world = dict(fixed=fixed, basis=basis, rng=rng, pair_controls=pair_controls)
    for convention in ("face_calibration", "xyz"):
        rig = make_rig(jnp.asarray(basis), jaw_convention=convention)
        world[convention] = (frames(fixed, rig, jnp.eye(K)), frames(fixed, rig, jnp.asarray(pair_controls)))
    return world


@pytest.mark.parametrize("convention", ["face_calibration", "xyz"])
def test_fit_recovers_known_basis(fit_world, convention):
    targets, _ = fit_world[convention]
    fit = fit_semantic_rig(fit_world["fixed"], targets, jaw_convention=convention, ridge=0.0,
                           controls=("a", "b", "c", "d"))
    assert fit.rig.jaw_convention == convention and fit.rig.controls == ("a", "b", "c", "d")
    assert fit.residual.shape == (K,) and fit.pair_residual is None
    np.testing.assert_array_less(fit.residual, 1e-10)
    np.testing.assert_allclose(fit.rig.basis[:N_EXPR], fit_world["basis"][:N_EXPR], atol=1e-6)
    np.testing.assert_allclose(fit.rig.basis[N_EXPR:], fit_world["basis"][N_EXPR:], atol=1e-4)


def test_fit_with_masks_pairs_and_default_ridge(fit_world):
    targets, pair_targets = fit_world["face_calibration"]
    rng = fit_world["rng"]
    n_v = targets.shape[1]
    # Masks keep ~70% of the vertices per control, still enough to pin down all 15 numbers.
    masks = rng.uniform(size=(K, n_v)) < 0.7
    fit = fit_semantic_rig(fit_world["fixed"], targets, masks=masks, ridge=0.0,
                           pairs=(fit_world["pair_controls"], pair_targets))
    np.testing.assert_array_less(fit.residual, 1e-10)
    np.testing.assert_array_less(fit.pair_residual, 1e-10)
    np.testing.assert_allclose(fit.rig.basis[N_EXPR:], fit_world["basis"][N_EXPR:], atol=1e-4)
    np.testing.assert_allclose(fit.rig.basis[:N_EXPR], fit_world["basis"][:N_EXPR], atol=1e-5)
    # The default ridge biases only slightly: sub-micrometre residuals on ~0.1 mm basis vectors.
    fit = fit_semantic_rig(fit_world["fixed"], targets)
    np.testing.assert_array_less(fit.residual, 1e-6)
    np.testing.assert_allclose(fit.rig.basis[N_EXPR:], fit_world["basis"][N_EXPR:], atol=1e-4)


def test_fit_residual_reports_noise_level(fit_world):
    targets, _ = fit_world["face_calibration"]
    sigma = 1e-4  # metres per coordinate
    noisy = targets + fit_world["rng"].normal(0.0, sigma, size=targets.shape)
    fit = fit_semantic_rig(fit_world["fixed"], noisy, ridge=0.0)
    # RMS vertex error of isotropic noise is sigma * sqrt(3); the 15 fitted numbers absorb
    # only ~1% of the ~1500 coordinates' noise.
    np.testing.assert_allclose(fit.residual, sigma * np.sqrt(3.0), rtol=0.1)
    np.testing.assert_allclose(fit.rig.basis[N_EXPR:], fit_world["basis"][N_EXPR:], atol=2e-2)
