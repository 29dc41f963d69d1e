"""The vectorised grid evaluation equals the per-setting evaluation it replaces, and its building
blocks (settings stacked for vmap, rigs x weights in one program) do what they say."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.calibrate import CalibrationConfig, calibrate_settings, calibrate_simon_says, stack_settings
from flamejax.evaluate import KEYS, calibration_samples, evaluate_world
from flamejax.sweep import evaluate_grid, stack_weights
from flamejax.track import InversionWeights, inversion_problem, objective, track_controls, track_grid

# Metrics computed from controls that float32 arithmetic in another batch order moves slightly:
# solving the same problems, the calibrations agree to ~1e-3 of the basis change (CG stops at a
# gradient tolerance) and the controls to ~1e-3; the geometry metrics then agree to well under 1%.
GEOMETRY = ("fit_tracked_mm", "fit_truth_mm", "retarget_mm", "intended_tracked_mm", "intended_truth_mm")
CONTROLS = ("sparsity", "tweakers", "control_mae", "control_rmse", "recognition")
SELECTION = dict(performers=["performer00"], trackers=["OS2"], takes=("pangram",), max_frames=6)


def test_stacked_settings_are_checked():
    stacked = stack_settings([CalibrationConfig(reg=1e-3), CalibrationConfig(reg=1e-1, w_combo=2.0)])
    assert stacked.reg.shape == (2,) and float(stacked.w_combo[1]) == 2.0
    with pytest.raises(ValueError, match="must share parameters, solver"):
        stack_settings([CalibrationConfig(), CalibrationConfig(maxiter=7)])
    with pytest.raises(ValueError, match="at least one"):
        stack_settings([])
    w = stack_weights([InversionWeights(l1=1e-4), InversionWeights(l1=1e-2, smoothness=0.5)])
    assert w.l1.shape == (2,) and float(w.smoothness[1]) == 0.5 and math.isclose(float(w.tweaker[0]), 1e-2, rel_tol=1e-6)


def test_calibrations_and_inversions_in_one_program_match_separate_ones(tiny_world):
    w = tiny_world
    model, rig = w.generic.model, w.generic.rig
    beta = jnp.asarray(w.performers["performer00"].beta, model.dtype)
    _, geometry, data = calibration_samples(w, "performer00", "OS2")
    combos = jnp.asarray(w.control_set.simon_says.combination_targets, model.dtype)
    settings = [CalibrationConfig(reg=1e-3), CalibrationConfig(reg=1.0)]
    many, state = calibrate_settings(model, rig, beta, data, combos, stack_settings(settings))
    for i, cfg in enumerate(settings):
        one, one_state = calibrate_simon_says(model, rig, beta, data, combos, cfg)
        change = np.abs(np.asarray(one.exprdirs - model.exprdirs)).max()
        assert np.abs(np.asarray(many.exprdirs[i] - one.exprdirs)).max() <= 5e-3 * change
        assert math.isclose(float(state.value[i]), float(one_state.value), rel_tol=1e-4)
    # a stronger regulariser keeps the basis closer to the generic one
    moved = [float(np.abs(np.asarray(many.exprdirs[i] - model.exprdirs)).mean()) for i in range(2)]
    assert moved[1] < 0.8 * moved[0]

    tweakers = np.asarray(w.control_set.tweaker_mask, bool)
    problems = [inversion_problem(model, rig, beta, tweakers=tweakers),
                inversion_problem(model, jax.tree_util.tree_map(lambda x: x[1], many.rig), beta, tweakers=tweakers,
                                  exprdirs=many.exprdirs[1])]
    weights = [InversionWeights(l1=1e-4), InversionWeights(l1=1e-2)]
    targets = geometry[:5]
    grid, grid_state = track_grid(problems, targets, stack_weights(weights))
    assert grid.shape == (2, 2, 5, rig.n_controls) and grid_state.value.shape == (2, 2, 5)
    for p, problem in enumerate(problems):
        for j, wj in enumerate(weights):
            one, _ = track_controls(problem, targets, wj)
            for t in range(5):
                y = jnp.asarray(targets[t])
                a, b = float(objective(problem, grid[p, j, t], y, wj)), float(objective(problem, one[t], y, wj))
                assert abs(a - b) <= 1e-3 * abs(b), (p, j, t, a, b)
    with pytest.raises(ValueError, match="same shapes"):
        track_grid([problems[0], inversion_problem(model, rig, beta)._replace(tweakers=jnp.zeros(3))], targets,
                   stack_weights(weights))


def test_grid_records_equal_per_setting_evaluations(tiny_world):
    settings = [CalibrationConfig(reg=1e-3), CalibrationConfig(reg=1e-1)]
    weights = [InversionWeights(l1=1e-4), InversionWeights(l1=1e-2, tweaker=0.1)]
    grid = evaluate_grid(tiny_world, settings, weights, **SELECTION)
    assert len(grid) == 2 * 2 * 2 * 2   # settings x weights x (Simon-Says + pangram) x (baseline, calibrated)
    key = lambda r: tuple(r[k] for k in KEYS)  # noqa: E731
    for ci, cfg in enumerate(settings):
        for wi, wts in enumerate(weights):
            ours = {key(r): r for r in grid if (r["calibration_index"], r["weights_index"]) == (ci, wi)}
            reference = evaluate_world(tiny_world, calibration=cfg, weights=wts, **SELECTION)
            assert sorted(ours) == sorted(key(r) for r in reference)
            for ref in reference:
                got = ours[key(ref)]
                for m in GEOMETRY:
                    assert math.isclose(got[m], ref[m], rel_tol=1e-2), (ci, wi, key(ref), m, got[m], ref[m])
                for m in CONTROLS:
                    if not (math.isnan(got[m]) and math.isnan(ref[m])):
                        assert abs(got[m] - ref[m]) <= 0.02, (ci, wi, key(ref), m, got[m], ref[m])
    # the settings act: a larger L1 weight gives sparser controls, on every rig
    for variant in ("baseline", "calibrated"):
        s = {wi: np.mean([r["sparsity"] for r in grid if r["variant"] == variant and r["weights_index"] == wi])
             for wi in (0, 1)}
        assert s[1] < s[0], (variant, s)
    # the baseline does not depend on the calibration settings
    base = [r for r in grid if r["variant"] == "baseline"]
    for r in base:
        twin = next(b for b in base if key(b) == key(r) and b["weights_index"] == r["weights_index"]
                    and b["calibration_index"] != r["calibration_index"])
        assert twin["control_mae"] == r["control_mae"]


def test_grid_with_temporal_smoothness_matches_track_controls(tiny_world):
    w = tiny_world
    model, rig = w.generic.model, w.generic.rig
    beta = jnp.asarray(w.performers["performer01"].beta, model.dtype)
    targets = calibration_samples(w, "performer01", "OS1")[1][:8]
    problem = inversion_problem(model, rig, beta, tweakers=np.asarray(w.control_set.tweaker_mask, bool))
    weights = [InversionWeights(smoothness=0.0), InversionWeights(smoothness=5.0)]
    grid, _ = track_grid([problem], targets, stack_weights(weights))
    for j, wj in enumerate(weights):
        one, _ = track_controls(problem, targets, wj)
        np.testing.assert_allclose(np.asarray(grid[0, j]), np.asarray(one), atol=5e-3)
    # the temporal term does smooth: smaller frame-to-frame changes
    jumps = [float(np.abs(np.diff(np.asarray(grid[0, j]), axis=0)).mean()) for j in range(2)]
    assert jumps[1] < jumps[0]
