"""The Table 1 job: every config group composes into the library's configs, bad configs fail with
the key named, and ``experiment=quick`` runs end to end and writes consistent files."""

import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from experiments.configs import ConfigError, Table1Config
from experiments.table1 import OUTPUTS, resolved
from flamejax.calibrate import CalibrationConfig
from flamejax.finetune import DEFAULT_STAGES, FinetuneConfig
from flamejax.track import InversionConfig, InversionWeights
from wandb_records import Run, wandb_environment

CONF = Path(__file__).resolve().parent.parent / "conf"


def compose_table1(overrides=(), hydra_node=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="table1", overrides=list(overrides), return_hydra_config=hydra_node)


def typed(overrides=()):
    return resolved(compose_table1(overrides))[0]


def test_default_groups_are_the_library_defaults():
    cfg = typed()
    assert cfg.calibration == CalibrationConfig()
    assert cfg.tracker.weights == InversionWeights() and cfg.tracker.inversion == InversionConfig()
    assert cfg.model.kind == "synthetic" and (cfg.model.seed, cfg.model.size) == (cfg.data.world.seed, cfg.data.world.size)
    assert cfg.controls == cfg.data.world.control_set == "metahuman"
    assert cfg.logger.kind == "none" and cfg.task_name == "table1"
    assert cfg.data.cache_dir == ".flamejax_cache" and cfg.compilation_cache == ".flamejax_cache/jax"
    assert cfg.evaluation.takes == ("rom2", "rom1", "pangram") and cfg.evaluation.max_frames >= 1
    # the short schedule: the authors' second stage, few iterations
    (stage,) = cfg.finetune.stages
    assert (stage.tune, stage.columns, stage.tracker_controls) == ("both", "primary", "all") and stage.maxiter <= 5


def test_finetune_group_options():
    full = typed(["finetune=default"]).finetune
    defaults = FinetuneConfig()
    assert [(s.tune, s.columns, s.tracker_controls, s.maxiter) for s in full.stages] == \
        [(s.tune, s.columns, s.tracker_controls, s.maxiter) for s in DEFAULT_STAGES]
    assert dataclasses.replace(full, stages=()) == dataclasses.replace(defaults, stages=())
    assert typed(["finetune=none"]).finetune is None
    dropped = typed(["finetune=default", "~finetune.stages.tweakers", "finetune.stages.full.maxiter=7"]).finetune
    assert [s.name for s in dropped.stages] == ["primary_reduced", "full", "filtered"] and dropped.stages[1].maxiter == 7


def test_hydra_and_experiment_groups():
    cfg = compose_table1(hydra_node=True)
    assert cfg.hydra.run.dir.startswith("outputs/table1/runs/")
    assert cfg.hydra.sweep.dir.startswith("outputs/table1/multiruns/")
    assert cfg.hydra.job.chdir is False
    quick = compose_table1(["experiment=quick"], hydra_node=True)
    assert quick.hydra.run.dir.startswith("outputs/table1_quick/runs/") and quick.task_name == "table1"
    assert quick.hydra.sweep.dir.startswith("outputs/table1_quick/multiruns/")
    t = resolved(quick)[0]
    assert t.data.world.size == "tiny" and t.model.size == "tiny" and t.data.world.n_performers == 2
    assert t.evaluation.max_frames <= 32 and t.finetune is not None


@pytest.mark.parametrize("overrides, message", [
    (["calibration.reg=-1"], "calibration: reg must be >= 0"),
    (["+calibration.reg_weight=1"], "unknown key calibration.reg_weight"),
    (["tracker.l1=-1"], "tracker.l1 must be >= 0"),
    (["tracker.maxiter=0"], "tracker.maxiter must be >= 1"),
    (["+tracker.bounds=1"], "unknown key tracker.bounds"),
    (["+finetune.stages.full.foo=1"], "unknown key finetune.stages.full.foo"),
    (["finetune.stages.full.tune=everything"], "finetune.stages.full: stage 'full': tune must be one of"),
    (["finetune=none", "+finetune.w_reg=1"], "finetune=none takes no settings"),
    (["+finetune.weights=1"], "unknown key finetune.weights"),
    (["+data.sequences.foo=1"], "data: SequenceConfig"),
    (["+data.foo=1"], "unknown key data.foo"),
    (["model.size=full"], "model.size='full' differs from the world's data.size='small'"),
    (["evaluation.max_frames=0"], "evaluation.max_frames must be >= 1"),
    (["evaluation.takes=[simon_says]"], "evaluation.takes must be"),
    (["logger.kind=comet"], "logger.kind must be 'none' or 'wandb'"),
    (["figures.take=simon"], "figures.take must be one of"),
    (["figures.max_frames=0"], "figures.max_frames must be >= 1"),
    (["+logger.mode=cloud"], "logger.mode must be"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        typed(overrides)


def test_unknown_override_without_plus_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="calibration.foo"):
        compose_table1(["calibration.foo=1"])


def table1_cli(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.table1", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, "PYTHONPATH": str(CONF.parent), **(env or {})})


def test_command_line_rejects_a_bad_config(tmp_path):
    out = table1_cli(["calibration.reg=-1", f"hydra.run.dir={tmp_path}"], CONF.parent)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "table1: bad config: calibration: reg must be >= 0" in out.stderr
    assert not (tmp_path / "table1.md").exists()
    # the failure is recorded in the job folder, with the config it failed with
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "failed" and "reg must be >= 0" in status["error"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["calibration"]["reg"] == -1


@pytest.fixture(scope="module")
def quick_run(tiny_world, tmp_path_factory):
    """``python -m experiments.table1 experiment=quick logger=wandb`` on conftest's tiny world (its
    cache, so the world is read back, not rebuilt; W&B offline inside a temporary folder) ->
    (output dir, the typed config, the process)."""
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "tiny_world_cache"
    assert (cache / f"world-{tiny_world.config.key()}").is_dir(), "conftest's tiny_world cache moved"
    out_dir = tmp_path_factory.mktemp("table1_quick")
    jax_cache = tmp_path_factory.mktemp("jax_cache")
    overrides = ["experiment=quick", f"data.cache_dir={cache}", f"compilation_cache={jax_cache}",
                 "logger=wandb", f"hydra.run.dir={out_dir}"]
    cfg = typed(overrides[:4])
    assert cfg.data.world == tiny_world.config  # experiment=quick is the tests' tiny world
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(wandb_environment(tmp_path_factory.mktemp("wandb_home")))
    proc = subprocess.run([sys.executable, "-m", "experiments.table1", *overrides], capture_output=True, text=True,
                          cwd=CONF.parent, timeout=600, env={**env, "PYTHONPATH": str(CONF.parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out_dir, cfg, proc


def test_quick_run_writes_every_file_atomically(quick_run):
    out_dir, _, proc = quick_run
    for name in OUTPUTS:
        assert (out_dir / name).is_file() and str(out_dir / name) in proc.stdout
    assert not list(out_dir.glob(".*.tmp"))
    assert any(Path(quick_run[1].compilation_cache).iterdir())  # the compiled programs, for the next run
    assert "| Sequence | Tracker | Sparsity: Baseline |" in proc.stdout
    # the figures and the video, and their paths printed
    for name in ("fig1_controls.png", "fig3_retarget.png", "retarget.mp4"):
        path = out_dir / "figures" / name
        assert path.stat().st_size > 1000 and str(path) in proc.stdout


def test_quick_run_table1_layout(quick_run):
    out_dir, _, _ = quick_run
    text = (out_dir / "table1.md").read_text()
    table1, truth = [block for block in text.split("\n\n") if block.startswith("| Sequence")]
    head = table1.splitlines()[0]
    for metric in ("Sparsity", "Tweakers"):
        for variant in ("Baseline", "Ours", "Fine-tuned", "Truth"):
            assert f"{metric}: {variant}" in head
    rows = [line.split(" | ")[:2] for line in table1.splitlines()[2:]]
    assert rows == [[f"| {take}", tracker] for take in ("ROM 2", "ROM 1", "Pangram 1") for tracker in ("OS1", "OS2")]
    assert "control MAE" in truth.splitlines()[0] and "Simon-Says (training)" in truth


def test_quick_run_numbers_agree(quick_run):
    out_dir, cfg, _ = quick_run
    metrics = json.loads((out_dir / "metrics.json").read_text())
    with open(out_dir / "table1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["variant"] for r in rows} == {"baseline", "calibrated", "finetuned"}
    for r in rows:
        assert int(r["n"]) in (0, 2)  # both performers (recognition: NaN outside Simon-Says)
        for stat in ("mean", "std"):
            value = metrics.pop(f"{r['take']}/{r['tracker']}/{r['variant']}/{r['metric']}/{stat}")
            assert (value is None and math.isnan(float(r[stat]))) or value == float(r[stat])
    assert set(metrics) == {"seconds/world", "seconds/evaluation", "seconds/figures"}
    # a Table 1 cell is the CSV's mean ± std
    cell = next(r for r in rows if (r["take"], r["tracker"], r["variant"], r["metric"]) == ("rom2", "OS1", "calibrated", "sparsity"))
    assert f"{float(cell['mean']):.3f} ± {float(cell['std']):.3f}" in (out_dir / "table1.md").read_text()
    with open(out_dir / "records.csv") as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 2 * 2 * 4 * 3  # performers x trackers x (3 held-out takes + Simon-Says) x variants
    assert all(int(r["frames"]) <= cfg.evaluation.max_frames for r in records)
    run = json.loads((out_dir / "run.json").read_text())
    assert run["world_key"] == cfg.data.world.key() and run["status"] == "done"


def test_quick_run_config_round_trips(quick_run):
    out_dir, cfg, _ = quick_run
    written = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert "hydra" not in written
    assert Table1Config.from_dict(written) == cfg


def test_quick_run_logged_to_wandb_offline(quick_run):
    """The job's offline W&B run (in the job folder) holds its config, the metrics, Table 1 as a
    table, the calibration's per-iteration objective, the figures and the video."""
    out_dir, cfg, _ = quick_run
    (run_dir,) = (out_dir / "wandb").glob("offline-run-*")
    run = Run.finished(run_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    key = "rom2/OS1/calibrated/sparsity/mean"
    assert math.isclose(run.summary[key], metrics[key], rel_tol=1e-12)
    (config,) = [r.run.config for r in run.by_type["run"]]
    assert any(item.key == "calibration" for item in config.update)
    # Table 1 as a wandb.Table: every summary row of table1.csv
    ref, path = run.media("table1")
    table = json.loads(path.read_text())
    with open(out_dir / "table1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert table["columns"] == list(rows[0]) and len(table["data"]) == len(rows)
    # the calibration's objective, one point per iteration, decreasing
    series = run.series("calibrated/performer00/OS1/history", "calibrated/performer00/OS1/history/iteration")
    assert len(series) > 2 and series[-1][1] < series[0][1]
    for name in ("figures/fig1", "figures/fig3", "figures/video"):
        _, media_file = run.media(name)
        assert media_file.stat().st_size > 1000
    assert run.records[-1].exit.exit_code == 0
