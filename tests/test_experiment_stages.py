"""The per-stage entry points (experiments/{calibrate,track,finetune,retarget,evaluate}.py): every
primary config composes into its typed config with the library's defaults, bad values fail with
the key named, and one ``experiment=quick`` run of each writes files that agree with facts
recomputed here (the calibrated model reproduces its reported residuals, the solved controls
reproduce the tracker's residuals, the retargeted meshes are ``retarget`` of the controls on
each avatar, the summary is ``summarise`` of the records)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from experiments.calibrate import CalibrateStageConfig
from experiments.configs import (AvatarsConfig, ConfigError, EvaluateConfig, FinetuneRigConfig, RetargetConfig,
                                 TrackConfig)
from experiments.figures import random_avatars
from experiments.table1 import resolved, resolved_text
from flamejax.calibrate import CalibrationConfig
from flamejax.evaluate import KEYS, calibration_samples, summarise, to_markdown
from flamejax.io import load_flame
from flamejax.retarget import retarget
from flamejax.semantic.rig import SemanticRig
from flamejax.synthetic.world import tracked_geometry
from flamejax.track import InversionConfig, InversionWeights
from test_calibration_report import check_flame2020_layout, check_report, read_flame_pickle

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parent.parent / "conf"
# stage -> (primary config, typed config, task_name)
STAGES = {
    "calibrate": ("calibrate", CalibrateStageConfig),
    "track": ("track", TrackConfig),
    "finetune": ("finetune_rig", FinetuneRigConfig),
    "retarget": ("retarget", RetargetConfig),
    "evaluate": ("evaluate", EvaluateConfig),
}
PERFORMER = "performer00"


def compose_stage(stage, overrides=(), hydra_node=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=STAGES[stage][0], overrides=list(overrides), return_hydra_config=hydra_node)


def typed(stage, overrides=()):
    return STAGES[stage][1].from_dict(yaml.safe_load(resolved_text(compose_stage(stage, overrides))))


def table1(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return resolved(compose(config_name="table1", overrides=list(overrides)))[0]


@pytest.mark.parametrize("stage", STAGES)
def test_defaults_are_the_library_defaults(stage):
    cfg = typed(stage)
    assert cfg.calibration == CalibrationConfig()
    assert cfg.tracker.weights == InversionWeights() and cfg.tracker.inversion == InversionConfig()
    reference = table1()   # the shared groups compose as Table 1's
    for field in ("data", "model", "controls", "finetune", "logger", "compilation_cache"):
        assert getattr(cfg, field) == getattr(reference, field), field
    assert cfg.task_name == stage
    assert compose_stage(stage, hydra_node=True).hydra.run.dir.startswith(f"outputs/{stage}/runs/")
    # experiment=quick is the tests' tiny world for every stage, its Table-1 blocks accepted
    quick = typed(stage, ["experiment=quick"])
    assert quick.data == table1(["experiment=quick"]).data and quick.data.world.size == "tiny"


def test_stage_keys_defaults():
    cal = typed("calibrate")
    assert (cal.performers, cal.tracked_by, cal.calibration_frames) == (None, None, "mean")
    assert cal.tracker_of(SimpleNamespace(tracked={"OS1": {}, "OS2": {}})) == "OS1"   # null: the data's first
    assert (cal.flame_formats, cal.report) == (("pkl", "npz"), True)
    assert typed("calibrate", ["flame_formats=[npz]", "report=false"]).flame_formats == ("npz",)
    tr = typed("track")
    assert (tr.take, tr.rig, tr.max_frames, tr.performers) == ("pangram", "calibrated", None, None)
    rt = typed("retarget")
    assert rt.retarget == AvatarsConfig() and (rt.rig, rt.write_obj) == ("calibrated", False)
    # the avatars group's defaults are random_avatars' own
    defaults = random_avatars.__kwdefaults__
    assert (rt.retarget.seed, rt.retarget.n_coefficients, rt.retarget.scale) == \
        (defaults["seed"], defaults["n_coefficients"], defaults["scale"])
    assert typed("evaluate").evaluation == table1().evaluation
    assert typed("evaluate", ["finetune=none"]).finetune is None
    assert typed("track", ["rig=finetuned", "performers=[performer01]"]).performers == ("performer01",)


@pytest.mark.parametrize("stage, overrides, message", [
    ("calibrate", ["calibration_frames=some"], "calibration_frames must be 'mean' or 'all'"),
    ("calibrate", ["+foo=1"], "unknown key calibrate.foo"),
    ("calibrate", ["performers=[]"], "performers must be null (all) or a non-empty list"),
    ("calibrate", ["tracker.l1=-1"], "tracker.l1 must be >= 0"),   # composed groups are checked, used or not
    ("calibrate", ["model.size=full"], "model.size='full' differs from the world's data.size='small'"),
    ("calibrate", ["flame_formats=[obj]"], "flame_formats must be a non-empty list of distinct ['pkl', 'npz']"),
    ("calibrate", ["flame_formats=[]"], "flame_formats must be a non-empty list"),
    ("calibrate", ["report=maybe"], "report must be true or false"),
    ("track", ["take=rom3"], "take must be one of"),
    ("track", ["rig=custom"], "rig must be one of"),
    ("track", ["rig=finetuned", "finetune=none"], "rig=finetuned needs the finetune group's stages"),
    ("track", ["max_frames=0"], "max_frames must be >= 1 or null"),
    ("finetune", ["finetune=none"], "finetune=none leaves nothing to fine-tune"),
    ("finetune", ["+finetune.stages.full.foo=1"], "unknown key finetune.stages.full.foo"),
    ("retarget", ["retarget.n_avatars=0"], "retarget.n_avatars must be >= 1"),
    ("retarget", ["+retarget.sigma=1"], "unknown key retarget.sigma"),
    ("retarget", ["max_obj_frames=0"], "max_obj_frames must be >= 1"),
    ("evaluate", ["evaluation.max_frames=0"], "evaluation.max_frames must be >= 1"),
    ("evaluate", ["+figures.take=simon"], "figures.take must be one of"),   # a preset's block, still checked
])
def test_bad_config_names_the_key(stage, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        typed(stage, overrides)


def stage_cli(stage, args, cwd=CONF.parent):
    return subprocess.run([sys.executable, "-m", f"experiments.{stage}", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, "PYTHONPATH": str(CONF.parent)})


def test_command_line_rejects_a_bad_config(tmp_path):
    out = stage_cli("track", ["rig=custom", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "track: bad config: rig must be one of" in out.stderr
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "failed" and "rig must be one of" in status["error"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["rig"] == "custom"


# ---------------------------------------------------------------- quick runs on the tiny world


@pytest.fixture(scope="module")
def quick(tiny_world, tmp_path_factory):
    """run(stage, *overrides) -> (job folder, typed config, process): ``python -m
    experiments.<stage> experiment=quick`` on conftest's tiny world cache, every run sharing one
    JAX compilation cache (later stages reuse the calibration's and the tracker's programs)."""
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "tiny_world_cache"
    assert (cache / f"world-{tiny_world.config.key()}").is_dir(), "conftest's tiny_world cache moved"
    jax_cache = tmp_path_factory.mktemp("stages_jax_cache")

    def run(stage, *overrides):
        out_dir = tmp_path_factory.mktemp(f"{stage}_quick")
        args = ["experiment=quick", f"data.cache_dir={cache}", f"compilation_cache={jax_cache}", *overrides]
        cfg = typed(stage, args)
        assert cfg.data.world == tiny_world.config
        proc = stage_cli(stage, [*args, f"hydra.run.dir={out_dir}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not list(out_dir.rglob(".*.tmp*")), "a temporary file was left behind"
        status = json.loads((out_dir / "run.json").read_text())
        assert status["status"] == "done" and status["world_key"] == tiny_world.config.key()
        assert type(cfg).from_dict(yaml.safe_load((out_dir / "config.yaml").read_text())) == cfg
        return out_dir, cfg, proc

    return run


# one performer, few frames; the runs are made in this order (module-scoped fixtures, used in order)
@pytest.fixture(scope="module")
def calibrate_run(quick):
    return quick("calibrate", f"performers=[{PERFORMER}]")


@pytest.fixture(scope="module")
def calibrate_npz_run(quick, calibrate_run):
    return quick("calibrate", f"performers=[{PERFORMER}]", "flame_formats=[npz]", "report=false")


@pytest.fixture(scope="module")
def track_run(quick, calibrate_run):
    return quick("track", f"performers=[{PERFORMER}]", "max_frames=8")


@pytest.fixture(scope="module")
def finetune_run(quick, track_run):
    return quick("finetune", f"performers=[{PERFORMER}]")


@pytest.fixture(scope="module")
def retarget_run(quick, track_run):
    return quick("retarget", f"performers=[{PERFORMER}]", "max_frames=8", "write_obj=true", "max_obj_frames=2")


@pytest.fixture(scope="module")
def evaluate_run(quick, finetune_run, retarget_run):
    return quick("evaluate", "finetune=none", f"evaluation.performers=[{PERFORMER}]", "evaluation.trackers=[OS1]",
                 "evaluation.takes=[pangram]", "evaluation.max_frames=8")


def rig_from_npz(path) -> SemanticRig:
    z = np.load(path)
    return SemanticRig(jnp.asarray(z["basis"]), jnp.asarray(z["offset"]), int(z["n_expr"]), str(z["jaw_convention"]),
                       bool(z["has_neck"]), tuple(str(n) for n in z["controls"]))


def test_calibrate_writes_a_model_that_reproduces_its_residuals(calibrate_run, tiny_world):
    out_dir, cfg, proc = calibrate_run
    folder = out_dir / PERFORMER
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == [PERFORMER]
    report = json.loads((folder / "calibration.json").read_text())
    with open(out_dir / "calibration.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["performer"] == PERFORMER and float(row["residual_after_mm"]) == report["residual_after_mm"]
    assert report["objective_after"] < report["objective_before"] and report["residual_after_mm"] < report["residual_before_mm"]
    assert 1 <= report["iterations"] <= cfg.calibration.maxiter and len(report["history"]) == report["iterations"] + 1
    names = tiny_world.control_set.simon_says.expression_names
    assert set(report["per_expression"]) <= set(names) and len(report["per_expression"]) > 1

    generic = tiny_world.generic.model
    model = load_flame(folder / "flame_calibrated.npz")
    assert np.abs(np.asarray(model.exprdirs) - np.asarray(generic.exprdirs)).max() > 1e-6   # calibrated ...
    np.testing.assert_array_equal(np.asarray(model.v_template), np.asarray(generic.v_template))  # ... only that
    rig = rig_from_npz(folder / "rig_calibrated.npz")
    np.testing.assert_array_equal(np.asarray(rig.basis), np.asarray(tiny_world.generic.rig.basis))
    # the saved model, at each Simon-Says sample's controls, is as far from the tracked geometry as reported
    _, _, data = calibration_samples(tiny_world, PERFORMER, "OS1")
    meshes = np.asarray(retarget(model, rig, data.controls, shape=tiny_world.performers[PERFORMER].beta))
    w = np.asarray(data.weights)
    rms = np.sqrt((w * ((meshes - np.asarray(data.vertices)) ** 2).sum(-1)).sum(-1) / w.sum(-1)) * 1e3
    for e, value in zip(np.asarray(data.expression), rms):
        assert value == pytest.approx(report["per_expression"][names[e]]["after_mm"], rel=1e-3, abs=1e-4)
    assert float(np.mean(rms)) == pytest.approx(report["residual_after_mm"], rel=1e-3)


def test_calibrate_exports_flame_pkl_and_report(calibrate_run, tiny_world):
    """flame_calibrated.pkl is FLAME 2020's generic_model.pkl layout (plain pickle, latin1) holding
    the npz's model (whose residuals the test above reproduces); report/ shows calibration.json's
    numbers."""
    out_dir, cfg, proc = calibrate_run
    folder = out_dir / PERFORMER
    generic = tiny_world.generic.model
    data = read_flame_pickle(folder / "flame_calibrated.pkl")
    check_flame2020_layout(data, generic.n_vertices, len(generic.faces))
    npz = load_flame(folder / "flame_calibrated.npz")
    np.testing.assert_array_equal(data["shapedirs"][:, :, 300:300 + generic.n_expr],
                                  np.transpose(np.asarray(npz.exprdirs, np.float64), (1, 2, 0)))
    pkl = load_flame(folder / "flame_calibrated.pkl")
    for field in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights", "faces"):
        np.testing.assert_array_equal(np.asarray(getattr(pkl, field)), np.asarray(getattr(npz, field)), field)
    report = json.loads((folder / "calibration.json").read_text())
    assert report["gradient_norm"] <= cfg.calibration.tol or report["iterations"] == cfg.calibration.maxiter
    text = check_report(folder / "report", report)
    assert f"**performer**: {PERFORMER}" in text and "**tracker**: OS1" in text
    assert json.loads((out_dir / "run.json").read_text())["seconds"]["report"] > 0


def test_calibrate_writes_only_what_is_asked(calibrate_npz_run):
    out_dir, cfg, _ = calibrate_npz_run
    assert (cfg.flame_formats, cfg.report) == (("npz",), False)
    assert sorted(p.name for p in (out_dir / PERFORMER).iterdir()) == \
        ["calibration.json", "flame_calibrated.npz", "rig_calibrated.npz"]


def test_track_writes_the_controls(track_run, calibrate_run, tiny_world):
    out_dir, cfg, _ = track_run
    folder = out_dir / PERFORMER
    z = np.load(folder / "controls.npz")
    names = tiny_world.control_set.names
    with open(folder / "controls.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", *names] and list(z["names"]) == list(names)
    n_take = len(tiny_world.sequences[PERFORMER]["pangram"].controls)
    start = (n_take - 8) // 2   # max_frames=8: consecutive frames from the middle of the take
    assert len(rows) == 1 + 8 and [int(r[0]) for r in rows[1:]] == list(range(start, start + 8))
    np.testing.assert_array_equal(z["frames"], np.arange(start, start + 8))
    np.testing.assert_array_equal(np.array([[float(v) for v in r[1:]] for r in rows[1:]], np.float32), z["controls"])
    assert z["controls"].shape == (8, len(names)) and z["controls"].min() >= 0 and z["controls"].max() <= 1
    assert z["iterations"].shape == (8,) and z["iterations"].min() >= 1
    # the calibrated rig (experiments.calibrate's file: the same calibration) at the solved controls
    # is as far from the tracked meshes as the tracker reports (all vertices, equally weighted)
    model = load_flame(calibrate_run[0] / PERFORMER / "flame_calibrated.npz")
    meshes = np.asarray(retarget(model, tiny_world.generic.rig, z["controls"], shape=tiny_world.performers[PERFORMER].beta))
    tracked = tracked_geometry(tiny_world, "OS1", PERFORMER, "pangram")[z["frames"]]
    rms = np.sqrt(((meshes - tracked) ** 2).sum(-1).mean(-1)) * 1e3
    np.testing.assert_allclose(rms, z["residual_mm"], rtol=1e-3, atol=1e-5)
    with open(out_dir / "track.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["performer"], row["rig"], int(row["frames"])) == (PERFORMER, "calibrated", 8)


def test_finetune_writes_the_tuned_rig(finetune_run, calibrate_run, tiny_world):
    out_dir, cfg, _ = finetune_run
    folder = out_dir / PERFORMER
    report = json.loads((folder / "finetune.json").read_text())
    assert [s["name"] for s in report["stages"]] == [s.name for s in cfg.finetune.stages] == ["full"]
    values = report["stage_values"]
    assert len(values) == len(cfg.finetune.stages) + 1 and values[-1] <= values[0]
    calibrated = load_flame(folder / "flame_calibrated.npz")
    # theta_R is experiments.calibrate's calibration (same settings, same samples)
    np.testing.assert_allclose(np.asarray(calibrated.exprdirs),
                               np.asarray(load_flame(calibrate_run[0] / PERFORMER / "flame_calibrated.npz").exprdirs),
                               atol=1e-7)
    tuned = load_flame(folder / "flame_finetuned.npz")
    assert np.abs(np.asarray(tuned.exprdirs) - np.asarray(calibrated.exprdirs)).max() > 0   # tune=both
    basis_r = rig_from_npz(folder / "rig_calibrated.npz").basis
    basis_t = rig_from_npz(folder / "rig_finetuned.npz").basis
    primary = np.asarray(tiny_world.control_set.primary_mask) > 0
    changed = np.abs(np.asarray(basis_t) - np.asarray(basis_r)).max(0) > 0
    assert changed.any() and not changed[~primary].any()   # columns=primary: only primary columns move
    with open(out_dir / "finetune.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["loss_after"]) == values[-1]


def test_retarget_meshes_carry_each_avatars_identity(retarget_run, track_run, tiny_world):
    out_dir, cfg, _ = retarget_run
    model, rig = tiny_world.generic.model, tiny_world.generic.rig
    shapes = np.load(out_dir / "avatars.npz")["shapes"]
    np.testing.assert_array_equal(shapes, random_avatars(model.n_shape, 2, seed=0))
    z = np.load(out_dir / PERFORMER / "controls.npz")
    # tracked as experiments.track does (same rig, take and frames)
    np.testing.assert_allclose(z["controls"], np.load(track_run[0] / PERFORMER / "controls.npz")["controls"], atol=1e-6)
    meshes = [np.load(out_dir / PERFORMER / f"avatar{i:02d}" / "meshes.npz") for i in range(2)]
    for i, m in enumerate(meshes):
        assert m["vertices"].dtype == np.float32 and m["vertices"].shape == (8, model.n_vertices, 3)
        np.testing.assert_array_equal(m["faces"], np.asarray(model.faces))
        np.testing.assert_array_equal(m["shape"], shapes[i])
        expected = np.asarray(retarget(model, rig, z["controls"][3:4], shape=shapes[i]))[0]
        np.testing.assert_allclose(m["vertices"][3], expected, atol=1e-6)
        objs = sorted((out_dir / PERFORMER / f"avatar{i:02d}" / "obj").glob("*.obj"))
        assert [p.name for p in objs] == [f"frame_{f:05d}.obj" for f in z["frames"][:2]]
    assert np.abs(meshes[0]["vertices"] - meshes[1]["vertices"]).max() > 1e-3   # two identities
    import trimesh
    obj = trimesh.load(out_dir / PERFORMER / "avatar01" / "obj" / f"frame_{z['frames'][0]:05d}.obj", process=False)
    np.testing.assert_allclose(obj.vertices, meshes[1]["vertices"][0], atol=1e-6)


def _number(key, value):
    if key in ("world", "performer", "tracker", "take", "variant"):
        return value
    if key == "training":
        return value == "True"
    return int(value) if key == "frames" else float(value)


def test_evaluate_summary_is_the_records_summary(evaluate_run):
    out_dir, cfg, _ = evaluate_run
    with open(out_dir / "records.csv") as fh:
        records = [{k: _number(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]
    assert {(r["take"], r["variant"]) for r in records} == {(t, v) for t in ("simon_says", "pangram")
                                                           for v in ("baseline", "calibrated")}
    assert all(r["performer"] == PERFORMER and r["tracker"] == "OS1" and r["frames"] <= 8 for r in records)
    summary = summarise(records)
    with open(out_dir / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(summary) and summary[0].metric not in KEYS
    for row, expected in zip(rows, summary):
        for field, value in expected._asdict().items():
            got = row[field]
            if isinstance(value, str):
                assert got == value
            else:
                assert float(got) == pytest.approx(value, nan_ok=True, rel=1e-12, abs=1e-15)
    assert to_markdown(summary) in (out_dir / "report.md").read_text()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["pangram/OS1/calibrated/sparsity/mean"] == pytest.approx(
        next(r["sparsity"] for r in records if (r["take"], r["variant"]) == ("pangram", "calibrated")))


def test_finished_job_is_skipped(quick, evaluate_run):
    """Re-running into a done job folder with the same config does nothing (run.json untouched)."""
    out_dir, cfg, _ = evaluate_run
    before = (out_dir / "run.json").stat().st_mtime_ns
    text = (out_dir / "config.yaml").read_text()
    args = ["experiment=quick", f"data.cache_dir={cfg.data.cache_dir}", f"compilation_cache={cfg.compilation_cache}",
            "finetune=none", f"evaluation.performers=[{PERFORMER}]", "evaluation.trackers=[OS1]",
            "evaluation.takes=[pangram]", "evaluation.max_frames=8", f"hydra.run.dir={out_dir}"]
    proc = stage_cli("evaluate", args)
    assert proc.returncode == 0 and "already holds this job's results" in proc.stdout, proc.stderr[-2000:]
    assert (out_dir / "run.json").stat().st_mtime_ns == before and (out_dir / "config.yaml").read_text() == text
