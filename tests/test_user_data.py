"""The user's path (flamejax.user_data, data=folder): a data folder generated here in the real
formats (a FLAME 2020-layout pkl, a face-calibration folder, VHAP and plain tracker outputs, a
labels file) from the tiny synthetic world is read into the same calibration data as the world
itself, its bad files are named, and calibrate -> track -> fine-tune -> retarget run on it from
the command line."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from flamejax.evaluate import calibration_samples
from flamejax.io import FlameFileError, load_flame, save_flame, write_face_calibration
from flamejax.io.face_calibration import FaceCalibrationData
from flamejax.synthetic.world import simon_says_masks, take_frame_ids, take_valid
from flamejax.user_data import UserDataConfig, read_user_data

ROOT = Path(__file__).resolve().parent.parent
TRACKER = "OS1"
SS_FIRST_ID = 5      # the Simon-Says video's frame numbering starts here (labels use these ids)
TAKE_FIRST_ID = 100  # the pangram's
LOST = (3, 4)        # pangram frames the tracker lost (NaN expression)


def hold_ranges(hold, frame_ids, names):
    """A labels file's ``holds``: expression name -> [first, last] frame ids, or a list of ranges."""
    ranges = {}
    for e in np.unique(hold[hold >= 0]):
        idx = np.flatnonzero(hold == e)
        runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
        spans = [[int(frame_ids[r[0]]), int(frame_ids[r[-1]])] for r in runs]
        ranges[names[e]] = spans[0] if len(spans) == 1 else spans
    return ranges


def write_user_folder(root: Path, world) -> Path:
    """``root`` as a user would bring it: FLAME file, face_calibration/, performers/<name>/ with
    simon_says/ (VHAP tracked_flame_params.npz), simon_says_labels.yaml, pangram.npz (our plain
    layout, two lost frames)."""
    model, cs, rig = world.generic.model, world.control_set, world.generic.rig
    root.mkdir(parents=True)
    save_flame(model, root / "generic_model.pkl")
    first = next(iter(world.performers))
    write_face_calibration(root / "face_calibration", FaceCalibrationData(
        cs.names, np.asarray(rig.basis, np.float32), np.asarray(rig.offset, np.float32),
        np.asarray(world.performers[first].beta, np.float32), tuple(simon_says_masks(world)), "identity1"))
    for name, performer in world.performers.items():
        folder = root / "performers" / name
        (folder / "simon_says").mkdir(parents=True)
        ss = world.tracked[TRACKER][name]["simon_says"]
        t = len(ss.expression)
        f32 = lambda a: np.asarray(a, np.float32)   # noqa: E731
        np.savez(folder / "simon_says" / "tracked_flame_params.npz",
                 rotation=f32(ss.global_pose), translation=f32(ss.translation), neck_pose=f32(ss.neck_pose),
                 jaw_pose=f32(ss.jaw_pose), eyes_pose=np.zeros((t, 6), np.float32),
                 shape=f32(performer.beta), expr=f32(ss.expression),
                 timestep_id=np.array([f"{SS_FIRST_ID + i:05d}" for i in range(t)]))
        hold = world.sequences[name]["simon_says"].hold
        labels = {"control_set": cs.name,
                  "holds": hold_ranges(hold, SS_FIRST_ID + np.arange(t), cs.simon_says.expression_names)}
        (folder / "simon_says_labels.yaml").write_text(
            "# Simon-Says hold frames, written by the test as a user would\n" + yaml.safe_dump(labels, sort_keys=False))
        take = world.tracked[TRACKER][name]["pangram"]
        expression = np.array(take.expression, np.float64)
        expression[list(LOST)] = np.nan
        t = len(expression)
        np.savez(folder / "pangram.npz", expression=expression, shape=np.asarray(performer.beta, np.float64),
                 jaw_pose=np.asarray(take.jaw_pose), global_pose=np.asarray(take.global_pose),
                 neck_pose=np.asarray(take.neck_pose), translation=np.asarray(take.translation),
                 frame_ids=TAKE_FIRST_ID + np.arange(t))
    return root


@pytest.fixture(scope="module")
def user_folder(tiny_world, tmp_path_factory):
    return write_user_folder(tmp_path_factory.mktemp("user") / "data", tiny_world)


def config(root, **kw):
    return UserDataConfig(root=str(root), jaw_convention="xyz", **kw)


def read(root, world, **kw):
    with pytest.warns(UserWarning, match="lost|masked|NaN"):   # the pangram's lost frames are reported
        return read_user_data(config(root, **kw), world.generic.model)


def test_folder_reads_as_the_world_it_came_from(user_folder, tiny_world):
    user = read(user_folder, tiny_world)
    assert list(user.tracked) == ["vhap"] and list(user.performers) == list(tiny_world.performers)
    np.testing.assert_array_equal(np.asarray(user.generic.rig.basis), np.asarray(tiny_world.generic.rig.basis))
    for name in tiny_world.performers:
        assert sorted(user.sequences[name]) == ["pangram", "simon_says"]
        np.testing.assert_array_equal(user.sequences[name]["simon_says"].hold,
                                      tiny_world.sequences[name]["simon_says"].hold)
        np.testing.assert_array_equal(take_frame_ids(user, name, "pangram"),
                                      TAKE_FIRST_ID + np.arange(len(user.sequences[name]["pangram"].hold)))
        valid = take_valid(user, name, "pangram")
        assert list(np.flatnonzero(~valid)) == list(LOST)
        # the calibration data are the world's own: same samples, same region weights
        _, geometry, data = calibration_samples(user, name, "vhap")
        _, ref_geometry, ref = calibration_samples(tiny_world, name, TRACKER)
        np.testing.assert_allclose(geometry, ref_geometry, atol=1e-6)
        for field in ("controls", "vertices", "weights", "expression"):
            np.testing.assert_allclose(np.asarray(getattr(data, field)), np.asarray(getattr(ref, field)),
                                       atol=1e-6, err_msg=field)
        # the truth is unknown off the holds
        assert np.isnan(user.sequences[name]["pangram"].controls).all()


def broken_copy(user_folder, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(user_folder, root)
    return root


def test_missing_files_are_named(user_folder, tiny_world, tmp_path):
    root = broken_copy(user_folder, tmp_path)
    name = next(iter(tiny_world.performers))
    (root / "performers" / name / "simon_says_labels.yaml").unlink()
    with pytest.raises(FlameFileError, match=re.escape(f"{name}/simon_says_labels.yaml: no such labels file")):
        read_user_data(config(root), tiny_world.generic.model)
    shutil.rmtree(root / "performers" / name / "simon_says")
    with pytest.raises(FlameFileError, match=f"{name}: no Simon-Says take"):
        read_user_data(config(root), tiny_world.generic.model)
    with pytest.raises(FlameFileError, match="no such data folder"):
        read_user_data(config(tmp_path / "nowhere"), tiny_world.generic.model)


def test_model_mismatches_are_named(user_folder, tiny_world, tmp_path):
    model = tiny_world.generic.model
    # a FLAME model loaded with 50 expression coefficients cannot take a 100-coefficient basis
    small = load_flame(user_folder / "generic_model.pkl", n_expr=50)
    with pytest.raises(FlameFileError, match=r"semantic_to_flame_deltas_basis.npy: drives 100 FLAME expression "
                                             r"coefficients but the model has 50"):
        read_user_data(config(user_folder), small)
    # masks for another mesh (e.g. FLAME 2020's 5023 vertices on a 5143-vertex VHAP model)
    root = broken_copy(user_folder, tmp_path)
    mask = root / "face_calibration" / "masks" / "3.npy"
    good = np.load(mask)
    np.save(mask, np.array([1, model.n_vertices + 119], np.int32))
    with pytest.raises(FlameFileError, match=rf"masks/3.npy: .*out of range for {model.n_vertices} vertices.*"
                                             r"is model.path the FLAME model these masks belong to"):
        read_user_data(config(root), model)
    np.save(mask, good)
    # a control list that is not the control set's
    names = (root / "face_calibration" / "controls_simple.txt").read_text().split()
    (root / "face_calibration" / "controls_simple.txt").write_text("\n".join([names[1], names[0], *names[2:]]))
    with pytest.raises(FlameFileError, match="controls_simple.txt: lists the control set's names in another order"):
        read_user_data(config(root), model)


# ---------------------------------------------------------------- the command line, end to end


def stage(name, *args):
    return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def run_stage(user_folder, tmp_path_factory):
    jax_cache = tmp_path_factory.mktemp("user_jax_cache")
    common = ["data=folder", f"data.root={user_folder}", "data.jaw_convention=xyz", "model=file",
              f"model.path={user_folder / 'generic_model.pkl'}", f"compilation_cache={jax_cache}",
              "calibration.maxiter=30", "tracker.maxiter=8", "finetune.stages.full.maxiter=2"]

    def run(name, *overrides, out_dir=None):
        out_dir = out_dir or tmp_path_factory.mktemp(name)
        proc = stage(name, *common, *overrides, f"hydra.run.dir={out_dir}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        status = json.loads((out_dir / "run.json").read_text())
        assert status["status"] == "done"
        return out_dir, proc

    return run


@pytest.mark.slow
def test_user_path_calibrate_track_finetune_retarget(run_stage, tiny_world, user_folder):
    performer = next(iter(tiny_world.performers))
    out, _ = run_stage("calibrate", f"performers=[{performer}]")
    report = json.loads((out / performer / "calibration.json").read_text())
    assert report["tracked_by"] == "vhap" and report["residual_after_mm"] < report["residual_before_mm"]
    calibrated = load_flame(out / performer / "flame_calibrated.npz")
    assert calibrated.n_vertices == tiny_world.generic.model.n_vertices

    out, _ = run_stage("track", f"performers=[{performer}]", "take=pangram")
    z = np.load(out / performer / "controls.npz")
    t = len(tiny_world.sequences[performer]["pangram"].hold)
    np.testing.assert_array_equal(z["frames"], TAKE_FIRST_ID + np.arange(t))   # the tracker's frame ids
    assert not z["valid"][list(LOST)].any() and z["valid"].sum() == t - len(LOST)
    assert np.isnan(z["controls"][list(LOST)]).all() and np.isfinite(z["controls"][z["valid"]]).all()
    with open(out / performer / "controls.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == list(TAKE_FIRST_ID + np.arange(t))

    out, _ = run_stage("finetune", f"performers=[{performer}]")
    assert (out / performer / "flame_finetuned.npz").is_file()

    out, _ = run_stage("retarget", f"performers=[{performer}]", "take=pangram", "write_obj=true", "max_obj_frames=2")
    assert list((out / performer).rglob("*.obj"))

    # a finished job is skipped while the data's files are unchanged, and re-run when one changes
    out, proc = run_stage("calibrate", f"performers=[{performer}]", "calibration.maxiter=5")
    assert "already holds" not in proc.stdout
    _, proc = run_stage("calibrate", f"performers=[{performer}]", "calibration.maxiter=5", out_dir=out)
    assert "already holds this job's results" in proc.stdout
    labels = user_folder / "performers" / performer / "simon_says_labels.yaml"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    _, proc = run_stage("calibrate", f"performers=[{performer}]", "calibration.maxiter=5", out_dir=out)
    assert "already holds" not in proc.stdout and "re-running" in proc.stdout


# ---------------------------------------------------------------- evaluation on a user's data (issue 7)


def test_evaluate_world_on_user_data(user_folder, tiny_world):
    """Table 1's metrics, fit_tracked_mm and recognition on a world without the truth; the truth's
    metrics NaN; the tracker's lost frames never evaluated; the held-out takes are the user's."""
    from flamejax.calibrate import CalibrationConfig
    from flamejax.evaluate import (NEEDS_TRUTH, TABLE1_METRICS, baseline_variant, check_selection, evaluate_world,
                                   has_truth, undefined_metrics)
    from flamejax.track import InversionConfig
    from experiments.jobs import NonFiniteResult, check_finite

    user = read(user_folder, tiny_world)
    assert not has_truth(user) and has_truth(tiny_world)
    performer = next(iter(user.performers))
    records = evaluate_world(user, calibration=CalibrationConfig(maxiter=20), inversion=InversionConfig(maxiter=8),
                             takes=["pangram"], performers=[performer])
    assert {(r["take"], r["variant"]) for r in records} == {(t, v) for t in ("simon_says", "pangram")
                                                            for v in ("baseline", "calibrated")}
    n_valid = int(take_valid(user, performer, "pangram").sum())
    assert n_valid == len(user.sequences[performer]["pangram"].hold) - len(LOST)
    for r in records:
        training = r["take"] == "simon_says"
        assert r["frames"] == (len(user.sequences[performer]["simon_says"].hold) if training else n_valid)
        for m in TABLE1_METRICS + ("fit_tracked_mm", "frames_per_second"):
            assert np.isfinite(r[m]), (m, r)
        for m in NEEDS_TRUTH:
            assert np.isnan(r[m]), (m, r)
        # defined on the Simon-Says take (its holds' prompted controls) only
        assert np.isfinite(r["recognition"]) == training and np.isfinite(r["intended_tracked_mm"]) == training
    check_finite(records, undefined_metrics(user))          # the expected NaN pass ...
    with pytest.raises(NonFiniteResult):
        check_finite(records)                               # ... and are NaN
    with pytest.raises(ValueError, match=r"unknown held-out takes \['rom1'\]; the takes every selected performer "
                                         r"has are \['pangram'\]"):
        check_selection(user, ["rom1"], True, None, None)
    # the max_frames cap is spread over the valid frames only
    capped = evaluate_world(user, calibration=CalibrationConfig(maxiter=5), inversion=InversionConfig(maxiter=4),
                            takes=["pangram"], performers=[performer], training_take=False, max_frames=n_valid - 1,
                            variants=[baseline_variant])
    assert [r["frames"] for r in capped] == [n_valid - 1] and np.isfinite(capped[0]["fit_tracked_mm"])


@pytest.mark.slow
def test_table1_and_ablate_on_user_data(tiny_world, user_folder, tmp_path_factory):
    """python -m experiments.table1 / experiments.ablate with data=folder: records with finite
    Table 1 metrics and NaN truth metrics, lost frames left out, an ablation table."""
    data = ["data=folder", f"data.root={user_folder}", "data.jaw_convention=xyz", "model=file",
            f"model.path={user_folder / 'generic_model.pkl'}"]
    quick = ["evaluation.takes=[pangram]", "evaluation.max_frames=8", "finetune=none", "calibration.maxiter=30",
             "tracker.maxiter=8", f"compilation_cache={tmp_path_factory.mktemp('jax_table1_user')}"]
    out = tmp_path_factory.mktemp("table1_user")
    proc = stage("table1", *data, *quick, "figures.enabled=false", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out / "records.csv") as fh:
        records = list(csv.DictReader(fh))
    assert {r["take"] for r in records} == {"simon_says", "pangram"}
    assert {r["performer"] for r in records} == set(tiny_world.performers)
    n_pangram = len(tiny_world.sequences[next(iter(tiny_world.performers))]["pangram"].hold)
    for r in records:
        for m in ("sparsity", "tweakers", "fit_tracked_mm"):
            assert np.isfinite(float(r[m])), (m, r)
        for m in ("control_mae", "control_rmse", "fit_truth_mm", "retarget_mm", "intended_truth_mm",
                  "intended_sparsity", "intended_tweakers"):
            assert np.isnan(float(r[m])), (m, r)
        if r["take"] == "pangram":   # 8 evenly spaced frames of the valid ones, none of the lost
            assert int(r["frames"]) == min(8, n_pangram - len(LOST))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pangram/vhap/calibrated/control_mae/mean"] is None
    assert metrics["pangram/vhap/calibrated/sparsity/mean"] is not None
    table = (out / "table1.md").read_text()
    assert "data folder" in table and "nan" not in table.lower().replace("n/a", "")
    # an unknown take is named against the user's takes, as a config error
    proc = stage("evaluate", *data, "evaluation.takes=[rom1]",
                 f"hydra.run.dir={tmp_path_factory.mktemp('bad_take')}")
    assert proc.returncode == 2 and "unknown held-out takes ['rom1']" in proc.stderr, proc.stderr[-2000:]

    # two variants on the folder: one job each (no world seed), then the table
    ablate_dir = tmp_path_factory.mktemp("ablate_user")
    proc = stage("ablate", *data, *quick, "variants=[full,no_l1]", f"hydra.run.dir={ablate_dir}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "seeds=[0, 1, 2] ignored" in proc.stdout and "2 run, 0 already done, 0 failed" in proc.stdout
    for variant in ("full", "no_l1"):
        assert json.loads((ablate_dir / "runs" / variant / "seed0" / "run.json").read_text())["status"] == "done"
    with open(ablate_dir / "ablation.csv") as fh:
        rows = {(r["variant"], r["tracker"], r["metric"]): r for r in csv.DictReader(fh)}
    assert np.isfinite(float(rows[("no_l1", "all", "sparsity")]["mean"]))
    assert rows[("no_l1", "all", "control_mae")]["n"] == "0"
    assert "Jobs not in the table" not in (ablate_dir / "ablation.md").read_text()
