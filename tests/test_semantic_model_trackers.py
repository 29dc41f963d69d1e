"""The generic semantic model (FLAME basis = PCA of the target rig's population, B fitted from the
rig) and the two simulated trackers (OS1, OS2). Size "tiny" throughout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax import gauss_newton
from flamejax.flame import FlameParams, flame_forward
from flamejax.semantic import rig_vertices
from flamejax.flame import bind_identity
from flamejax.synthetic.semantic_model import make_generic_semantic_model, population_activations, target_rig_targets
from flamejax.synthetic.target_rig import rig_flame_model, rig_jaw_pose
from flamejax.synthetic.trackers import OS1, OS2, TrackerConfig, track, tracked_vertices

T = 8


@pytest.fixture(scope="module")
def world():
    return make_generic_semantic_model(0, "tiny")


def _smooth_poses(rng, t):
    """Slow head motion: (T, 3) global and neck axis-angle, (T, 3) translation."""
    s = np.linspace(0.0, 1.0, t)[:, None]
    gp = 0.15 * np.sin(2 * np.pi * s * rng.uniform(0.5, 1.0, 3) + rng.uniform(0, 6, 3))
    neck = 0.05 * np.sin(2 * np.pi * s * rng.uniform(0.5, 1.0, 3) + rng.uniform(0, 6, 3))
    tr = 0.01 * np.sin(2 * np.pi * s + rng.uniform(0, 6, 3))
    return [jnp.asarray(x, jnp.float32) for x in (gp, neck, tr)]


def _rig_sequence(world, rng, t=T):
    """Target-rig geometry of a smooth random performance: (T, K) controls, (T, V, 3), poses."""
    k = len(world.target.names)
    keys = (rng.uniform(size=(4, k)) < 0.12) * rng.uniform(0.2, 1.0, (4, k))
    s = np.linspace(0, 3, t)
    controls = np.stack([np.interp(s, np.arange(4), keys[:, j]) for j in range(k)], 1)
    gp, neck, tr = _smooth_poses(rng, t)
    rm = rig_flame_model(world.model, world.target)

    def frame(c, g, n, x):
        return flame_forward(rm, FlameParams(expression=c, jaw_pose=rig_jaw_pose(world.target, c),
                                             global_pose=g, neck_pose=n, translation=x)).vertices

    geo = jax.vmap(frame)(jnp.asarray(controls, jnp.float32), gp, neck, tr)
    return controls, geo, gp, neck, tr


def _rms(a, b):
    return np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, -1), -1))


def test_deterministic(world):
    again = make_generic_semantic_model(0, "tiny")
    np.testing.assert_array_equal(np.asarray(world.model.shapedirs), np.asarray(again.model.shapedirs))
    np.testing.assert_array_equal(np.asarray(world.rig.basis), np.asarray(again.rig.basis))
    np.testing.assert_array_equal(world.target.deltas, again.target.deltas)
    # A different stream gives a different population.
    a = population_activations(world.target.mirror, 10, 5, np.random.default_rng(1))
    b = population_activations(world.target.mirror, 10, 5, np.random.default_rng(2))
    assert not np.array_equal(a, b)


def test_expression_basis_is_pca_and_not_semantic(world):
    e = np.asarray(world.model.exprdirs).reshape(world.model.n_expr, -1)
    assert e.shape[0] == 100
    n = np.linalg.norm(e, axis=1)
    # Orthogonal (up to float32) with norms = the decreasing PCA stds.
    g = (e / n[:, None]) @ (e / n[:, None]).T
    assert np.abs(g - np.eye(100)).max() < 1e-4
    np.testing.assert_allclose(n, world.expr_std, rtol=1e-4)
    assert np.all(np.diff(world.expr_std) <= 1e-9)
    # Non-semantic: no mode is a single control. Measured (seed 0, tiny): max 0.73, median 0.28.
    d = world.target.deltas.reshape(len(world.target.names), -1)
    dn = np.linalg.norm(d, axis=1)
    live = dn > 0
    cos = np.abs((e / n[:, None]) @ (d[live] / dn[live, None]).T).max(axis=1)
    print(f"max |cos| of a mode with a single control: {cos.max():.3f}, median {np.median(cos):.3f}")
    assert cos.max() < 0.85
    assert np.median(cos) < 0.45


def test_fitted_basis_reproduces_target_rig(world):
    targets = np.asarray(target_rig_targets(world.model, world.target))
    fixed = bind_identity(world.model)
    k = len(world.target.names)
    v = jax.vmap(rig_vertices, in_axes=(None, None, 0))(fixed, world.rig, jnp.eye(k))
    err = _rms(v, targets)
    # The reported residual is the measured one (float32 agreement).
    np.testing.assert_allclose(err, world.residual, atol=2e-6)
    # Good but not exact: measured (seed 0, tiny) median 0.007 mm, max 0.025 mm RMS, against
    # per-control motions of ~0.1-2 mm RMS.
    print(f"B residual: median {np.median(err) * 1e3:.4f} mm, max {err.max() * 1e3:.4f} mm")
    assert err.max() < 1e-4
    assert err.max() > 1e-7
    motion = _rms(targets, np.asarray(world.model.v_template)[None])
    rel = err / motion
    # Relative to each control's own motion: measured median ~3%, worst a subtle tweaker.
    print(f"B residual / control motion: median {np.median(rel):.3f}, max {rel.max():.3f}")
    assert np.median(rel) < 0.1


def test_noise_free_tracking_recovers_generic_parameters(world):
    rng = np.random.default_rng(0)
    m = world.model
    psi = jnp.asarray(0.7 * rng.normal(size=(T, 100)), jnp.float32)
    jaw = jnp.asarray(np.stack([rng.uniform(0, 0.25, T), rng.normal(0, 0.03, T), rng.normal(0, 0.03, T)], 1),
                      jnp.float32)
    gp, neck, tr = _smooth_poses(rng, T)
    geo = jax.vmap(lambda p, j, g, n, x: flame_forward(m, FlameParams(
        expression=p, jaw_pose=j, global_pose=g, neck_pose=n, translation=x)).vertices)(psi, jaw, gp, neck, tr)
    seq = track(m, geo, gp, neck, TrackerConfig(), jax.random.PRNGKey(0), translation=tr)
    # Tolerances (float32): the tail modes are ~40x smaller than the first, so their coefficients
    # are the least determined. Measured: max 0.05 coefficient, jaw 1e-5 rad, 0.0006 mm RMS.
    err = np.abs(np.asarray(seq.expression) - np.asarray(psi))
    assert err[:, :20].max() < 0.01
    assert err.max() < 0.1
    np.testing.assert_allclose(seq.jaw_pose, jaw, atol=1e-4)
    assert np.asarray(seq.residual).max() < 1e-5
    np.testing.assert_allclose(_rms(tracked_vertices(m, seq), geo), seq.residual, atol=1e-7)


def test_os1_and_os2_on_rig_geometry(world):
    rng = np.random.default_rng(1)
    controls, geo, gp, neck, tr = _rig_sequence(world, rng)
    motion = _rms(geo, jax.vmap(lambda g, n, x: flame_forward(world.model, FlameParams(
        global_pose=g, neck_pose=n, translation=x)).vertices)(gp, neck, tr))
    exact = track(world.model, geo, gp, neck, TrackerConfig(), jax.random.PRNGKey(0), translation=tr)
    os1 = track(world.model, geo, gp, neck, OS1, jax.random.PRNGKey(1), translation=tr)
    os2 = track(world.model, geo, gp, neck, OS2, jax.random.PRNGKey(2), translation=tr)
    r0, r1, r2 = (np.asarray(s.residual) for s in (exact, os1, os2))
    print(f"rig motion {motion.mean() * 1e3:.3f} mm RMS; residual exact fit {r0.mean() * 1e3:.4f}, "
          f"OS1 {r1.mean() * 1e3:.4f}, OS2 {r2.mean() * 1e3:.4f} mm")
    # The generic basis spans the rig's motion up to its truncation: exact fit << motion.
    assert r0.mean() < 0.05 * motion.mean()
    assert r1.mean() < 0.5 * motion.mean()
    assert r2.mean() < 0.8 * motion.mean()
    # OS2: 50 coefficients (rest zero), jaw opening >= 0, shrinkage visible (smaller coefficients
    # than the noise-free fit over the same first 50).
    e2 = np.asarray(os2.expression)
    assert e2.shape == (T, 100) and np.all(e2[:, 50:] == 0)
    assert np.all(np.asarray(os2.jaw_pose)[:, 0] >= 0)
    e0 = np.asarray(exact.expression)[:, :50]
    ratio = np.sum(e2[:, :50] * e0) / np.sum(e0 * e0)
    assert 0.75 < ratio < 0.95    # shrinkage 0.15 -> 0.85
    # OS1: 100 coefficients, its leading ones correlated with the noise-free fit (smoothing and
    # pose noise move them; the tail modes, ~40x smaller, move most).
    e1 = np.asarray(os1.expression)[:, :20]
    assert np.abs(np.asarray(os1.expression)[:, 90:]).max() > 0
    ex = np.asarray(exact.expression)[:, :20]
    corr = np.sum(e1 * ex) / np.sqrt(np.sum(e1 * e1) * np.sum(ex * ex))
    print(f"OS1 vs exact fit, correlation of the first 20 coefficients: {corr:.3f}")
    assert corr > 0.8


def test_fast_frame_fit_equals_plain_gauss_newton(world, x64):
    """The tracker's structured normal equations give the same Gauss-Newton iterates as the plain
    per-frame jacfwd fit (its reference), on rig geometry with head motion (float64)."""
    import dataclasses

    from flamejax.synthetic import trackers

    model = world.model.astype(jnp.float64)
    fixed = dataclasses.replace(bind_identity(model), landmarks=None)
    grams = gauss_newton.grams(fixed, 100)
    _, geo, gp, neck, tr = _rig_sequence(world, np.random.default_rng(3), t=3)
    for i in range(3):
        args = (jnp.asarray(geo[i], jnp.float64), jnp.asarray(gp[i], jnp.float64),
                jnp.asarray(neck[i], jnp.float64), jnp.asarray(tr[i], jnp.float64))
        slow = trackers.fit_frame(fixed, *args, n_expr=100, n_steps=4, ridge=1e-12)
        fast = trackers._fit_frame_fast(fixed, grams, *args, n_expr=100, n_steps=4, ridge=1e-12)
        np.testing.assert_allclose(np.asarray(fast[0]), np.asarray(slow[0]), atol=1e-6)
        np.testing.assert_allclose(np.asarray(fast[1]), np.asarray(slow[1]), atol=1e-9)
