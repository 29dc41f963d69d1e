"""Metrics (against hand-computed values) and retargeting (against the plain full FLAME forward)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.flame import FlameParams, flame_forward
from flamejax.metrics import control_error, expression_recognition, geometry_error, sparsity, tweaker_mean
from flamejax.retarget import retarget
from flamejax.semantic.rig import make_rig, rig_parameters
from flamejax.synthetic import make_flame


def test_table1_metrics_by_hand():
    c = np.array([[0.0, 0.06, 0.05, 1.0], [0.2, 0.0, 0.0, 0.04]])
    assert sparsity(c) == pytest.approx(3 / 8)               # 0.06, 1.0, 0.2 exceed 0.05 (0.05 does not)
    assert tweaker_mean(c, [False, True, True, False]) == pytest.approx((0.06 + 0.05) / 4)
    assert tweaker_mean(c, [False] * 4) == 0.0
    with pytest.raises(ValueError, match="tweakers must be"):
        tweaker_mean(c, [True, False])
    with pytest.raises(ValueError, match="controls must be"):
        sparsity(np.zeros(3))


def test_control_error():
    truth = np.zeros((2, 3))
    solved = np.array([[0.1, 0.0, 0.0], [0.0, 0.3, 0.0]])
    e = control_error(solved, truth)
    assert e.mean == pytest.approx(0.4 / 6)
    np.testing.assert_allclose(e.per_control, [0.05, 0.15, 0.0])
    np.testing.assert_allclose(e.per_frame, [0.1 / 3, 0.1])
    assert e.rmse == pytest.approx(np.sqrt(0.1 / 6))
    with pytest.raises(ValueError, match="differ in shape"):
        control_error(solved, np.zeros((3, 3)))


def test_expression_recognition():
    targets = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]])        # Neutral, A, B
    controls = np.array([[0.01, 0.0, 0.02],    # quiet -> Neutral (prompted Neutral: right)
                         [0.9, 0.1, 0.0],      # A (right)
                         [0.5, 0.4, 0.4],      # closer to B (prompted A: wrong)
                         [0.0, 0.7, 0.8],      # B (right)
                         [0.3, 0.3, 0.3]])     # unlabelled
    labels = np.array([0, 1, 1, 2, -1])
    r = expression_recognition(controls, labels, targets)
    assert r.accuracy == pytest.approx(3 / 4)
    np.testing.assert_allclose(r.per_expression, [1.0, 0.5, 1.0])
    assert r.confusion[1, 2] == 1 and r.confusion.sum() == 4
    with pytest.raises(ValueError, match="no labelled frames"):
        expression_recognition(controls, -np.ones(5, int), targets)


def test_geometry_error_weighted():
    ref = np.zeros((1, 4, 3))
    v = ref.copy()
    v[0, 0, 0] = 0.002
    assert geometry_error(v, ref)[0] == pytest.approx(0.001)
    assert geometry_error(v, ref, weights=np.array([0, 1, 1, 1]))[0] == 0.0


def test_retarget_matches_full_forward_on_another_identity():
    model = make_flame(0, size="tiny", n_shape=10, n_expr=20)
    rng = np.random.default_rng(0)
    k = 5
    basis = np.concatenate([rng.normal(0, 1, (20, k)), rng.normal(0, 0.05, (3, k))]).astype(np.float32)
    rig = make_rig(basis, n_expr=20, jaw_convention="xyz")
    controls = rng.uniform(0, 1, (7, k)).astype(np.float32)
    beta = rng.normal(0, 1, 10).astype(np.float32)
    exprdirs = np.asarray(model.exprdirs) * 1.1
    got = retarget(model, rig, controls, shape=beta, exprdirs=exprdirs, chunk=4)   # two chunks, one padded
    other = model.with_exprdirs(jnp.asarray(exprdirs))
    for t in range(7):
        expr, jaw, _ = rig_parameters(rig, controls[t])
        want = flame_forward(other, FlameParams(shape=beta, expression=expr, jaw_pose=jaw)).vertices
        np.testing.assert_allclose(np.asarray(got[t]), np.asarray(want), atol=2e-6)
    with pytest.raises(ValueError, match=r"controls must be \(T, 5\)"):
        retarget(model, rig, controls[:, :3])
