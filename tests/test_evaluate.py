"""The method's evaluation (flamejax.evaluate) on a small world: every record finite, the summary
against an independent NumPy computation, the tables, extra variants, the one behaviour that
must hold (the calibrated rig explains its own Simon-Says take better than the generic rig), and
the ablation knobs (Simon-Says expressions left out by name or region, fewer hold frames,
landmark-only tracking) in the library, the vectorised sweep and Table 1's config."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import flamejax.evaluate as evaluate_module
import flamejax.sweep as sweep_module
from flamejax.calibrate import CalibrationConfig
from flamejax.evaluate import (INTENDED_TABLE1, METRICS, TABLE1_METRICS, TRAINING_TAKE, TRUTH_METRICS, Variant,
                               baseline_variant, calibration_samples, evaluate_world, finetuned_variant, frame_subset,
                               summarise, to_csv, to_markdown)
from flamejax.finetune import FinetuneConfig, FinetuneStage
from flamejax.metrics import expression_recognition
from flamejax.synthetic.world import tracked_geometry

TAKES = ("rom1", "rom2", "pangram")
FRAMES = 24
# the backtracking line search compiles in half the time of zoom (flamejax.calibrate); 60 iterations
# are plenty for the assertions here
CALIBRATION = CalibrationConfig(linesearch="backtracking", maxiter=60)


@pytest.fixture(scope="module")
def world(tiny_world):
    """test_world.py's small world (tiny head, two performers, both trackers, short takes, Simon-Says
    holds of the default length): conftest's ``tiny_world``, built once per test run."""
    return tiny_world


def _shifted(ctx):
    """An extra variant built from the calibrated one (as a fine-tuned rig would be)."""
    calibrated = ctx.variants["calibrated"]
    return Variant("shifted", calibrated.exprdirs * 1.01, calibrated.rig, {"from": "calibrated"})


@pytest.fixture(scope="module")
def records(world):
    messages = []
    out = evaluate_world(world, calibration=CALIBRATION, takes=TAKES, max_frames=FRAMES,
                         progress=messages.append, extra_variants=(_shifted,))
    assert messages
    return out


def test_every_record_is_complete_and_finite(world, records):
    performers, trackers = list(world.performers), list(world.tracked)
    takes = (TRAINING_TAKE,) + TAKES
    variants = ("baseline", "calibrated", "shifted")
    keys = [(r["performer"], r["tracker"], r["take"], r["variant"]) for r in records]
    assert sorted(keys) == sorted((p, t, k, v) for p in performers for t in trackers for k in takes for v in variants)
    for r in records:
        assert r["training"] == (r["take"] == TRAINING_TAKE)
        assert r["frames"] == len(frame_subset(len(world.sequences[r["performer"]][r["take"]].controls), FRAMES))
        for metric in METRICS:
            value = r[metric]
            if metric == "recognition" and r["take"] != TRAINING_TAKE:
                assert math.isnan(value)    # only the Simon-Says take has labelled holds
            else:
                assert np.isfinite(value), (metric, r)
        assert 0 <= r["sparsity"] <= 1 and 0 <= r["tweakers"] <= 1 and 0 <= r["control_mae"] <= 1
    # the generic rig does not depend on the tracker: its rig at the intended controls vs truth is
    # the same number for both trackers
    base = {(r["performer"], r["take"], r["tracker"]): r["intended_truth_mm"] for r in records
            if r["variant"] == "baseline"}
    for (p, take, tracker), value in base.items():
        assert value == pytest.approx(base[(p, take, trackers[0])], rel=1e-6)


def test_calibration_lowers_the_simon_says_residual(records):
    """The calibrated rig at the intended controls is closer to the tracked Simon-Says geometry
    (its own training data) than the generic rig, for every performer and tracker."""
    ss = {(r["performer"], r["tracker"], r["variant"]): r["intended_tracked_mm"] for r in records
          if r["take"] == TRAINING_TAKE}
    pairs = {(p, t) for p, t, _ in ss}
    for p, t in pairs:
        assert ss[(p, t, "calibrated")] < 0.9 * ss[(p, t, "baseline")], (p, t)


def test_summary_matches_numpy(records):
    summary = summarise(records)
    metrics = [m for m in records[0] if m in METRICS]
    assert {r.metric for r in summary} == set(metrics)
    groups = {(r["tracker"], r["take"], r["variant"]) for r in records}
    assert len(summary) == len(groups) * len(metrics)
    for row in summary:
        values = np.array([r[row.metric] for r in records
                           if (r["tracker"], r["take"], r["variant"]) == (row.tracker, row.take, row.variant)], float)
        values = values[~np.isnan(values)]
        assert row.n == len(values)
        if row.n == 0:
            assert math.isnan(row.mean)
            continue
        assert row.mean == pytest.approx(float(np.sum(values) / len(values)), rel=1e-12, abs=1e-15)
        assert row.std == pytest.approx(float(np.sqrt(np.mean((values - values.mean()) ** 2))), rel=1e-9, abs=1e-15)
        assert row.min == values.min() and row.max == values.max()


def test_markdown_and_csv(records):
    summary = summarise(records)
    text = to_markdown(summary)
    table1, table2 = text.strip().split("\n\n")
    lines1 = table1.splitlines()
    assert lines1[0].startswith("| Sequence | Tracker | Sparsity: Baseline | Sparsity: Ours | Sparsity: shifted |")
    assert "Sparsity: Truth" in lines1[0] and "Tweakers: Ours" in lines1[0]
    # the seed's row order: ROM 2, ROM 1, Pangram 1, each for OS1 then OS2
    rows = [tuple(c.strip() for c in line.strip("|").split("|")[:2]) for line in lines1[2:]]
    assert rows == [(take, tr) for take in ("ROM 2", "ROM 1", "Pangram 1") for tr in ("OS1", "OS2")]
    n_cols = len(lines1[0].split("|"))
    assert all(len(line.split("|")) == n_cols for line in lines1)
    # a cell is the summary's mean ± std
    row = next(r for r in summary if (r.tracker, r.take, r.variant, r.metric) == ("OS1", "rom2", "calibrated", "sparsity"))
    assert f"{row.mean:.3f} ± {row.std:.3f}" in lines1[2]
    lines2 = table2.splitlines()
    assert all(m in lines2[0] for m in ("control MAE", "recognition", "retarget (mm)"))
    assert len(lines2) == 2 + 4 * 2 * 3       # (Simon-Says + 3 takes) x trackers x variants
    assert any(line.startswith("| Simon-Says (training) | OS1 | Ours |") for line in lines2)

    parsed = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert len(parsed) == len(records)
    assert float(parsed[0]["sparsity"]) == pytest.approx(records[0]["sparsity"])
    assert set(TABLE1_METRICS + INTENDED_TABLE1 + TRUTH_METRICS) <= set(parsed[0])
    parsed = list(csv.DictReader(io.StringIO(to_csv(summary))))
    assert len(parsed) == len(summary) and parsed[0]["metric"] == summary[0].metric


def test_bad_arguments(world):
    with pytest.raises(ValueError, match="held-out takes"):
        evaluate_world(world, takes=("simon_says",))
    with pytest.raises(ValueError, match="unknown trackers"):
        evaluate_world(world, trackers=("OS9",))
    assert list(frame_subset(10, None)) == list(range(10))
    assert list(frame_subset(10, 3)) == [0, 4, 9] or list(frame_subset(10, 3)) == [0, 5, 9]


def test_finetuned_variant_descends_from_the_calibrated_rig(world):
    """The fine-tuned variant (one short stage here) starts from "calibrated", lowers its own
    objective, and its records are complete; without a calibrated variant before it, a clear error."""
    config = FinetuneConfig(stages=(FinetuneStage("primary", tune="basis", columns="primary", maxiter=3),))
    performer, tracker = list(world.performers)[0], list(world.tracked)[0]
    built = []

    def finetuned(ctx):
        built.append((ctx.variants["calibrated"], finetuned_variant(config)(ctx)))
        return built[-1][1]

    out = evaluate_world(world, calibration=CALIBRATION, takes=("rom1",), max_frames=FRAMES, performers=[performer],
                         trackers=[tracker], extra_variants=(finetuned,))
    tuned = [r for r in out if r["variant"] == "finetuned"]
    assert sorted(r["take"] for r in tuned) == sorted([TRAINING_TAKE, "rom1"])
    for r in tuned:
        assert all(math.isfinite(r[m]) for m in METRICS if not (m == "recognition" and r["take"] != TRAINING_TAKE))
    start, tuned_variant = built[0]
    values = tuned_variant.info["stage_values"]
    assert len(values) == 2 and values[1] < values[0]
    # a B-only stage on the primary columns: the rest of the calibrated rig is untouched
    tweakers = np.asarray(world.control_set.tweaker_mask)
    np.testing.assert_array_equal(np.asarray(tuned_variant.exprdirs), np.asarray(start.exprdirs))
    tuned_basis, start_basis = np.asarray(tuned_variant.rig.basis), np.asarray(start.rig.basis)
    np.testing.assert_array_equal(tuned_basis[:, tweakers], start_basis[:, tweakers])
    assert np.any(tuned_basis[:, ~tweakers] != start_basis[:, ~tweakers])
    with pytest.raises(ValueError, match="calibrated"):
        evaluate_world(world, takes=("rom1",), max_frames=4, performers=[performer], trackers=[tracker],
                       variants=(baseline_variant,), extra_variants=(finetuned_variant(config),))


# ---------------------------------------------------------------- ablation knobs

PERFORMER, TRACKER = "performer00", "OS1"


def _regions_of(cs):
    """Independently of flamejax.evaluate: {expression index: regions}, an expression being in each
    region that holds at least half of the controls it prompts (non-zero values)."""
    out = {}
    for i, expression in enumerate(cs.simon_says.expressions):
        prompted = [cs.regions[cs.index(name)] for name, value in expression.controls if value != 0]
        counts = Counter(prompted)
        out[i] = {r for r, n in counts.items() if 2 * n >= len(prompted)}
    return out


def test_simon_says_exclude_by_name_and_region(world):
    cs = world.control_set
    names = cs.simon_says.expression_names
    regions = _regions_of(cs)
    hold = np.asarray(world.sequences[PERFORMER][TRAINING_TAKE].hold)
    geometry = tracked_geometry(world, TRACKER, PERFORMER, TRAINING_TAKE)
    assert not regions[names.index("Neutral")] and {"cheek", "mouth"} == regions[names.index("Cheek Puff")]
    for exclude in (["mouth"], ["Jaw Open", "brow"], ["Neutral", "eye", "Lip Bite"]):
        dropped = {i for i in range(len(names)) if names[i] in exclude or regions[i] & set(exclude)}
        assert dropped and (names.index("Neutral") in dropped) == ("Neutral" in exclude)   # no region holds it
        kept = sorted(set(np.unique(hold[hold >= 0]).tolist()) - dropped)
        _, _, mean = calibration_samples(world, PERFORMER, TRACKER, "mean", simon_says_exclude=exclude)
        assert np.asarray(mean.expression).tolist() == kept, exclude
        for row, e in enumerate(kept):   # each sample is its whole hold's mean
            np.testing.assert_allclose(np.asarray(mean.vertices[row]), geometry[hold == e].mean(0), atol=1e-7)
        _, _, every = calibration_samples(world, PERFORMER, TRACKER, "all", simon_says_exclude=exclude)
        frames = np.flatnonzero(np.isin(hold, kept))
        np.testing.assert_array_equal(np.asarray(every.expression), hold[frames])
        np.testing.assert_allclose(np.asarray(every.vertices), geometry[frames])
    # the mouth region drops every expression all of whose prompted controls are mouth controls
    mouth_only = {i for i, e in enumerate(cs.simon_says.expressions)
                  if e.controls and all(cs.regions[cs.index(n)] == "mouth" for n, _ in e.controls)}
    _, _, data = calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=["mouth"])
    assert mouth_only and not mouth_only & set(np.asarray(data.expression).tolist())

    with pytest.raises(ValueError, match=r"unknown Simon-Says expression or region 'mouht' \(did you mean 'mouth'"):
        calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=["mouht"])
    with pytest.raises(ValueError, match=r"'Smile'.*'Smile \(corner pull\)'"):
        evaluate_world(world, simon_says_exclude=["Smile"])       # fails before any work
    with pytest.raises(ValueError, match="region.*tongue"):
        calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=["tongue"])
    with pytest.raises(ValueError, match="leaves no Simon-Says expression"):
        calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=["Neutral"] + sorted(set().union(*regions.values())))


def test_hold_frames_keeps_the_central_frames(world):
    hold = np.asarray(world.sequences[PERFORMER][TRAINING_TAKE].hold)
    geometry = tracked_geometry(world, TRACKER, PERFORMER, TRAINING_TAKE)
    for k in (1, 4, 5):
        central = {}
        for e in np.unique(hold[hold >= 0]):
            frames = np.flatnonzero(hold == e)
            first = (len(frames) - k) // 2
            central[e] = frames[first:first + k]
        kept = np.sort(np.concatenate(list(central.values())))
        _, _, every = calibration_samples(world, PERFORMER, TRACKER, "all", hold_frames=k)
        np.testing.assert_array_equal(np.asarray(every.expression), hold[kept])
        np.testing.assert_allclose(np.asarray(every.vertices), geometry[kept])
        _, _, mean = calibration_samples(world, PERFORMER, TRACKER, "mean", hold_frames=k,
                                         simon_says_exclude=["Jaw Left"])
        expressions = [e for e in central if e != world.control_set.simon_says.expression_names.index("Jaw Left")]
        assert np.asarray(mean.expression).tolist() == expressions
        for row, e in enumerate(expressions):
            np.testing.assert_allclose(np.asarray(mean.vertices[row]), geometry[central[e]].mean(0), atol=1e-7)
    # more than a hold has: the whole hold
    _, _, every = calibration_samples(world, PERFORMER, TRACKER, "all", hold_frames=10_000)
    np.testing.assert_array_equal(np.asarray(every.expression), hold[hold >= 0])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="hold_frames must be an integer >= 1"):
            calibration_samples(world, PERFORMER, TRACKER, hold_frames=bad)


def test_ablations_reach_every_variant_and_landmark_tracking(world, records, monkeypatch):
    """One run with all three knobs: the builders' calibration samples are the reduced ones, every
    take is inverted from (T, 68, 3) landmarks through the landmark problem, the Simon-Says take
    is still scored on all its frames and expressions, and landmark-only control errors stay within
    a loose factor of the geometric ones (records: the same frames, tracked from the geometry)."""
    seen, problems, calls = [], [], []

    def spy_builder(ctx):
        seen.append(ctx.data)
        return baseline_variant(ctx)

    real_problem, real_track = evaluate_module.inversion_problem, evaluate_module.track_controls

    def spy_problem(*args, **kwargs):
        problems.append(kwargs.get("landmarks_only"))
        return real_problem(*args, **kwargs)

    def spy_track(problem, targets, *args, **kwargs):
        solved, state = real_track(problem, targets, *args, **kwargs)
        calls.append((problem.landmarks is not None, np.shape(targets), np.asarray(solved)))
        return solved, state

    monkeypatch.setattr(evaluate_module, "inversion_problem", spy_problem)
    monkeypatch.setattr(evaluate_module, "track_controls", spy_track)
    exclude = ["mouth", "Neutral"]
    out = evaluate_world(world, takes=("rom1",), max_frames=FRAMES, performers=[PERFORMER], trackers=[TRACKER],
                         variants=(spy_builder,), simon_says_exclude=exclude, hold_frames=5, landmarks_only=True)
    (data,) = seen
    _, _, reference = calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=exclude, hold_frames=5)
    for got, want in zip(data, reference):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert problems == [True]
    assert [(lm, shape) for lm, shape, _ in calls] == [(True, (r["frames"], 68, 3)) for r in out]
    ss = next(r for r in out if r["take"] == TRAINING_TAKE)
    seq = world.sequences[PERFORMER][TRAINING_TAKE]
    frames = frame_subset(len(seq.controls), FRAMES)
    assert ss["frames"] == len(frames)
    labels = seq.hold[frames]
    names = world.control_set.simon_says.expression_names
    left_out = [i for i, r in _regions_of(world.control_set).items() if names[i] == "Neutral" or "mouth" in r]
    assert np.any(np.isin(labels, left_out))     # frames of left-out expressions are scored too
    solved = calls[[r["take"] for r in out].index(TRAINING_TAKE)][2]
    assert ss["recognition"] == pytest.approx(
        expression_recognition(solved, labels, world.control_set.simon_says.targets).accuracy)
    geometric = {r["take"]: r for r in records if (r["performer"], r["tracker"], r["variant"]) ==
                 (PERFORMER, TRACKER, "baseline")}
    for r in out:
        g = geometric[r["take"]]
        assert r["frames"] == g["frames"] and r["control_mae"] != g["control_mae"]
        assert r["control_mae"] < 6 * g["control_mae"] + 0.01, (r["take"], r["control_mae"], g["control_mae"])
        # still scored on the whole face region: the baseline rig fits the tracked mesh almost as well
        assert r["fit_tracked_mm"] < 2 * g["fit_tracked_mm"] + 0.05, (r["take"], r["fit_tracked_mm"])


def test_landmarks_only_needs_a_landmark_embedding(world):
    model = dataclasses.replace(world.generic.model, landmarks=None)
    bare = world._replace(generic=world.generic._replace(model=model))
    with pytest.raises(ValueError, match="landmarks_only=True needs a landmark embedding"):
        evaluate_world(bare, landmarks_only=True)
    with pytest.raises(ValueError, match="landmarks_only=True needs a landmark embedding"):
        sweep_module.evaluate_grid(bare, [CALIBRATION], [evaluate_module.InversionWeights()], landmarks_only=True)


def test_evaluate_grid_passes_the_ablations_on(world, monkeypatch):
    """The vectorised sweep builds its samples, problems and targets like evaluate_world (stopped
    at its first inversion; the calibration is replaced by the generic rig to skip compiling)."""
    import jax

    from flamejax.calibrate import CalibratedRig

    seen = {}

    class Stop(Exception):
        pass

    def fake_calibrate(model, rig, beta, data, combinations, cfgs):
        seen["data"] = data
        stacked = CalibratedRig(model.exprdirs[None], jax.tree_util.tree_map(lambda x: np.asarray(x)[None], rig))
        return stacked, type("S", (), {"iter_num": np.zeros(1, int)})()

    def fake_grid(problems, targets, *args, **kwargs):
        seen["targets"], seen["landmarks"] = np.shape(targets), [p.landmarks is not None for p in problems]
        raise Stop

    monkeypatch.setattr(sweep_module, "calibrate_settings", fake_calibrate)
    monkeypatch.setattr(sweep_module, "track_grid", fake_grid)
    with pytest.raises(Stop):
        sweep_module.evaluate_grid(world, [CALIBRATION], [evaluate_module.InversionWeights()], takes=("rom1",),
                                   max_frames=6, performers=[PERFORMER], trackers=[TRACKER],
                                   simon_says_exclude=["jaw"], hold_frames=2, landmarks_only=True)
    _, _, reference = calibration_samples(world, PERFORMER, TRACKER, simon_says_exclude=["jaw"], hold_frames=2)
    np.testing.assert_array_equal(np.asarray(seen["data"].expression), np.asarray(reference.expression))
    np.testing.assert_array_equal(np.asarray(seen["data"].vertices), np.asarray(reference.vertices))
    assert seen["targets"] == (6, 68, 3) and seen["landmarks"] == [True, True]


CONF = Path(__file__).resolve().parent.parent / "conf"


def _table1(overrides):
    from hydra import compose, initialize_config_dir

    from experiments.table1 import resolved

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolved(compose(config_name="table1", overrides=list(overrides)))[0]


def test_table1_config_keys():
    from experiments.configs import ConfigError, EvaluationConfig
    from flamejax.sweep import evaluate_grid

    default = _table1([]).evaluation
    assert (default.simon_says_exclude, default.hold_frames, default.landmarks_only) == ((), None, False)
    cfg = _table1(["evaluation.simon_says_exclude=[mouth,'Jaw Open']", "evaluation.hold_frames=4",
                   "evaluation.landmarks_only=true", "evaluation.calibration_frames=all"]).evaluation
    assert cfg.simon_says_exclude == ("mouth", "Jaw Open") and cfg.hold_frames == 4 and cfg.landmarks_only
    kwargs = cfg.evaluate_kwargs()
    assert kwargs["simon_says_exclude"] == ("mouth", "Jaw Open") and kwargs["hold_frames"] == 4
    assert kwargs["landmarks_only"] is True and kwargs["calibration_frames"] == "all"
    # every key the jobs pass is a keyword of both evaluations, with the library's default
    for fn in (evaluate_world, evaluate_grid):
        params = inspect.signature(fn).parameters
        for key, value in EvaluationConfig().evaluate_kwargs().items():
            assert key in params, (fn.__name__, key)
            if key != "takes":      # Table 1 orders its rows ROM 2, ROM 1, Pangram
                assert params[key].default == value, (fn.__name__, key)
    assert _table1(["evaluation.simon_says_exclude=mouth"]).evaluation.simon_says_exclude == ("mouth",)
    for overrides, message in [
        (["evaluation.hold_frames=0"], "evaluation.hold_frames must be >= 1"),
        (["evaluation.hold_frames=1.5"], "evaluation.hold_frames must be >= 1"),
        (["evaluation.landmarks_only=3"], "evaluation.landmarks_only must be true or false"),
        (["evaluation.simon_says_exclude=[mouht]"], "evaluation.simon_says_exclude: unknown Simon-Says expression "
                                                    "or region 'mouht' (did you mean 'mouth'?)"),
        (["evaluation.simon_says_exclude=[tongue]"], "evaluation.simon_says_exclude: no Simon-Says expression"),
        (["evaluation.simon_says_exclude=[1]"], "evaluation.simon_says_exclude must be a list"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            _table1(overrides)
