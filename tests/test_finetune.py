"""Fine-tuning through the tracker (flamejax.finetune): the implicit derivative of the tracker's
solution against finite differences of re-solved problems and against differentiating an unrolled
solver; the staged fine-tuning lowers its objective and moves only what each stage may move."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax import finetune as ft
from flamejax.calibrate import SimonSaysData
from flamejax.gauss_newton import make_grams
from flamejax.semantic.controls import load_control_set
from flamejax.semantic.rig import rig_vertices_frames
from flamejax.synthetic.semantic_model import make_generic_semantic_model
from flamejax.track import InversionConfig, InversionWeights, RigInversion, objective

TIGHT = InversionConfig(maxiter=50, qp_iters=400, tol=1e-13, xtol=1e-10)


def _world(dtype):
    """Tiny generic rig (theta_R) and a 'performer' whose expression components have other gains:
    its Simon-Says geometry, as the tracker would see it."""
    cs = load_control_set("metahuman")
    gen = make_generic_semantic_model(0, "tiny", cs.names)
    model = gen.model.astype(dtype)
    rig = dataclasses.replace(gen.rig, basis=gen.rig.basis.astype(dtype), offset=gen.rig.offset.astype(dtype))
    rng = np.random.default_rng(0)
    gains = 1 + 0.3 * rng.standard_normal(model.n_expr)
    performer = model.exprdirs * jnp.asarray(gains, dtype)[:, None, None]
    targets = jnp.asarray(cs.simon_says.targets, dtype)
    verts = rig_vertices_frames(model, rig, targets, exprdirs=performer)
    data = SimonSaysData(targets, verts, jnp.ones(verts.shape[:2], dtype), jnp.arange(len(targets), dtype=jnp.int32))
    return cs, model, rig, data


@pytest.fixture(scope="module")
def world32():
    cs, model, rig, data = _world(jnp.float32)
    return cs, ft.finetune_problem(model, rig, primary=cs.primary_mask), data


def _direction(theta: ft.TrackerRig, fp, rng, size=1e-2):
    """A random change of B and of the expression basis (inside its support), ~size of each."""
    e = rng.standard_normal(theta.exprdirs.shape) * np.std(theta.exprdirs) * np.asarray(fp.support)[None, :, None]
    b = rng.standard_normal(theta.basis.shape) * np.std(theta.basis)
    return ft.TrackerRig(jnp.asarray(size * e, theta.exprdirs.dtype), jnp.asarray(size * b, theta.basis.dtype),
                         jnp.zeros_like(theta.offset))


def test_tracker_problem_rebuilds_the_grams_exactly(world32):
    _, fp, _ = world32
    rebuilt = ft.tracker_problem(fp, fp.reference)
    for a, b in zip(rebuilt.grams, fp.inversion.grams):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6 * np.abs(np.asarray(b)).max())
    # and it follows a changed expression basis (grams of the changed model, built independently)
    theta = fp.reference._replace(exprdirs=fp.reference.exprdirs * 1.5)
    moved = ft.tracker_problem(fp, theta)
    independent = make_grams(moved.fixed, fp.inversion.rig.n_expr, fp.inversion.grams.weights)
    np.testing.assert_allclose(np.asarray(moved.grams.g), np.asarray(independent.g), rtol=2e-5,
                               atol=1e-6 * np.abs(np.asarray(independent.g)).max())
    g0 = np.asarray(fp.inversion.grams.g)
    np.testing.assert_allclose(np.asarray(moved.grams.g), 2.25 * g0, rtol=1e-4, atol=1e-5 * np.abs(g0).max())


def test_implicit_derivative_matches_finite_differences(x64):
    cs, model, rig, data = _world(jnp.float64)
    fp = ft.finetune_problem(model, rig, primary=cs.primary_mask)
    weights = InversionWeights()
    solver = RigInversion(TIGHT)
    k = rig.n_controls

    @jax.jit
    def solve(theta, y):
        return solver.run(jnp.zeros(k), ft.tracker_problem(fp, theta), y, weights)[0]

    rng = np.random.default_rng(1)
    theta0 = fp.reference
    d = _direction(theta0, fp, rng)
    checked = 0
    for sample in (3, 7, 12):
        y = data.vertices[sample]
        c0 = solve(theta0, y)
        free = (c0 > 1e-4) & (c0 < 1 - 1e-4)
        assert 5 <= int(jnp.sum(free)) < k  # some controls inside the box, some at a bound
        u = jnp.asarray(rng.standard_normal(k))
        _, vjp = jax.vjp(lambda th, yy: ft.implicit_controls(th, fp, yy, weights, c0), theta0, y)
        g_theta, g_y = vjp(u)
        analytic = sum(float(jnp.vdot(a, b)) for a, b in zip(g_theta, d))
        dy = jnp.asarray(rng.standard_normal(y.shape)) * 1e-5
        analytic_y = float(jnp.vdot(g_y, dy))
        eps = 1e-3
        cp = solve(jax.tree_util.tree_map(lambda a, b: a + eps * b, theta0, d), y)
        cm = solve(jax.tree_util.tree_map(lambda a, b: a - eps * b, theta0, d), y)
        if bool(jnp.any(((cp > 1e-4) != (c0 > 1e-4)) | ((cm > 1e-4) != (c0 > 1e-4)))):
            continue  # the active set changed within +-eps: not differentiable there
        fd = float(jnp.vdot(u, cp - cm)) / (2 * eps)
        assert abs(fd - analytic) <= 1e-3 * abs(analytic) + 1e-7, (sample, fd, analytic)
        fd_y = float(jnp.vdot(u, solve(theta0, y + eps * dy) - solve(theta0, y - eps * dy))) / (2 * eps)
        assert abs(fd_y - analytic_y) <= 1e-3 * abs(analytic_y) + 1e-7, (sample, fd_y, analytic_y)
        checked += 1
    assert checked >= 2


def test_implicit_derivative_matches_an_unrolled_solver(x64):
    """Differentiate (reverse mode, through lax.scan) a plain projected-gradient solver run from the
    solution for as many steps as its contraction needs: it converges to the implicit derivative.
    A reduced rig (8 controls) keeps that solver's convergence affordable."""
    cs, model, rig, data = _world(jnp.float64)
    fp = ft.finetune_problem(model, rig, primary=cs.primary_mask)
    weights = InversionWeights()
    k = rig.n_controls
    sample = 3
    keep = np.flatnonzero(np.asarray(data.controls[sample]) > 0)
    others = [i for i in np.flatnonzero(cs.primary_mask) if i not in keep]
    keep = np.concatenate([keep, np.random.default_rng(2).choice(others, 8 - len(keep), replace=False)])
    mask = jnp.zeros(k).at[keep].set(1.0)
    theta0 = fp.reference._replace(basis=fp.reference.basis * mask[None, :])
    y = data.vertices[sample]
    c0 = RigInversion(TIGHT).run(jnp.zeros(k), ft.tracker_problem(fp, theta0), y, weights)[0]

    def f(c, theta):
        return objective(ft.tracker_problem(fp, theta, regram=False), c, y, weights)

    hess = jax.hessian(f)(c0, theta0)
    scale = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(hess), 1e-12))      # Jacobi preconditioner
    free = (c0 > 1e-6) & (c0 < 1 - 1e-6)
    assert int(jnp.sum(free)) >= 3
    h_s = (hess * scale[:, None] * scale[None, :])[np.ix_(np.asarray(free), np.asarray(free))]
    ev = np.linalg.eigvalsh(np.asarray(h_s))
    step = 1.0 / ev[-1]
    rate = 1 - ev[0] / ev[-1]
    n_steps = int(np.ceil(np.log(1e-9) / np.log(rate)))
    assert n_steps < 50_000, n_steps

    def unrolled(theta):
        grad = jax.grad(f)

        def one(c, _):
            return jnp.clip(c - step * scale ** 2 * grad(c, theta), 0.0, 1.0), None
        return jax.lax.scan(one, c0, None, length=n_steps)[0]

    u = jnp.asarray(np.random.default_rng(3).standard_normal(k))
    g_unrolled = jax.vjp(jax.jit(unrolled), theta0)[1](u)[0]
    g_implicit = jax.vjp(lambda th: ft.implicit_controls(th, fp, y, weights, c0, 0.0), theta0)[1](u)[0]
    for name in ("basis", "exprdirs"):
        a, b = np.asarray(getattr(g_implicit, name)), np.asarray(getattr(g_unrolled, name))
        assert np.linalg.norm(a) > 0
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.max(np.abs(b)), err_msg=name)


STAGES = (ft.FinetuneStage("primary, reduced rig", tune="basis", columns="primary", tracker_controls="primary",
                           maxiter=5),
          ft.FinetuneStage("full rig", tune="both", columns="filtered", maxiter=4),
          ft.FinetuneStage("tweakers", tune="basis", columns="tweakers", maxiter=2))


@pytest.fixture(scope="module")
def tuned(world32):
    _, fp, data = world32
    return ft.FineTuning(ft.FinetuneConfig(stages=STAGES)).run(None, fp, data)


def test_finetuning_lowers_the_objective_and_the_control_error(world32, tuned):
    _, fp, data = world32
    theta, state = tuned
    values = np.asarray(state.stage_values)
    assert values.shape == (len(STAGES) + 1,) and np.all(np.isfinite(values))
    assert values[-1] < 0.5 * values[0], values
    assert np.all(np.diff(values) <= 1e-6 * values[0]), values      # each stage is a descent
    before = np.sum((np.asarray(state.controls_before) - np.asarray(data.controls)) ** 2)
    after = np.sum((np.asarray(state.controls_after) - np.asarray(data.controls)) ** 2)
    assert after < 0.5 * before
    # the state's numbers are what loss_terms says about the returned rig
    terms, controls = ft.loss_terms(theta, fp, data, ft.FinetuneConfig(stages=STAGES))
    np.testing.assert_allclose(float(terms.controls + terms.geometry + 1e-2 * terms.reg), float(state.value),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(controls), np.asarray(state.controls_after), atol=1e-6)
    accepted, columns = np.asarray(state.accepted), np.asarray(state.columns)
    assert accepted[:2].tolist() == [-1, -1] and 0 <= accepted[2] <= columns[2]


def test_finetuning_moves_only_what_its_stages_allow(world32, tuned):
    cs, fp, _ = world32
    theta, _ = tuned
    ref = fp.reference
    np.testing.assert_array_equal(np.asarray(theta.offset), np.asarray(ref.offset))
    outside = np.asarray(fp.support) == 0
    assert outside.any()
    np.testing.assert_array_equal(np.asarray(theta.exprdirs)[:, outside], np.asarray(ref.exprdirs)[:, outside])
    assert np.any(np.asarray(theta.exprdirs) != np.asarray(ref.exprdirs))   # the full-rig stage moved it


def test_basis_only_stage_keeps_the_expression_basis_and_frozen_columns(world32):
    cs, fp, data = world32
    stage = ft.FinetuneStage("primary", tune="basis", columns="primary", maxiter=2)  # compiled programs reused
    theta, state = ft.FineTuning(ft.FinetuneConfig(stages=(stage,))).run(None, fp, data)
    np.testing.assert_array_equal(np.asarray(theta.exprdirs), np.asarray(fp.reference.exprdirs))
    tweak = np.asarray(cs.tweaker_mask)
    np.testing.assert_array_equal(np.asarray(theta.basis)[:, tweak], np.asarray(fp.reference.basis)[:, tweak])
    assert np.any(np.asarray(theta.basis)[:, ~tweak] != np.asarray(fp.reference.basis)[:, ~tweak])
    assert float(state.stage_values[1]) < float(state.stage_values[0])


def test_bad_configuration_and_data_are_refused(world32):
    cs, fp, data = world32
    fp_model_rig = _world(jnp.float32)[1:3]
    with pytest.raises(ValueError, match="tune"):
        ft.FinetuneStage("x", tune="everything")
    with pytest.raises(ValueError, match="columns"):
        ft.FinetuneStage("x", columns="some")
    with pytest.raises(ValueError, match="maxiter"):
        ft.FinetuneStage("x", maxiter=0)
    with pytest.raises(ValueError, match="w_reg"):
        ft.FinetuneConfig(w_reg=-1.0)
    with pytest.raises(ValueError, match="primary"):
        ft.finetune_problem(fp_model_rig[0], fp_model_rig[1], primary=np.ones(3, bool))
    bad = data._replace(vertices=data.vertices[:, :10])
    with pytest.raises(ValueError, match="vertices"):
        ft.FineTuning(ft.FinetuneConfig(stages=STAGES[:1])).run(None, fp, bad)

