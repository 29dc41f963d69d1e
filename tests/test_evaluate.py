"""The method's evaluation (flamejax.evaluate) on a small world: every record finite, the summary
against an independent NumPy computation, the tables, extra variants, and the one behaviour that
must hold (the calibrated rig explains its own Simon-Says take better than the generic rig)."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from flamejax.calibrate import CalibrationConfig
from flamejax.evaluate import (INTENDED_TABLE1, METRICS, TABLE1_METRICS, TRAINING_TAKE, TRUTH_METRICS, Variant,
                               baseline_variant, evaluate_world, finetuned_variant, frame_subset, summarise, to_csv,
                               to_markdown)
from flamejax.finetune import FinetuneConfig, FinetuneStage

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
