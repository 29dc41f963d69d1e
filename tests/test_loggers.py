"""experiments/loggers.py: the W&B logger run offline in a temporary folder, then what it wrote read
back (the run's ``.wandb`` record file and its media files); the none logger never imports wandb;
conf/logger/wandb.yaml composes into LoggerConfig.

Nothing here touches the network or the home folder: W&B runs offline with its config, cache and
data folders (and HOME) inside the test's temporary folder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.configs import LoggerConfig, Table1Config
from experiments.loggers import Logger, LoggerError, NullLogger, WandbLogger, make_logger
from wandb_records import Run, items, wandb_environment

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

CONFIG = {"task_name": "table1", "tracker": {"l1": 0.001, "maxiter": 40}, "evaluation": {"takes": ["rom2", "rom1"]}}
METRICS = {"rom2/OS1/ours/sparsity/mean": 0.25, "rom2/OS1/ours/sparsity/std": float("nan"),
           "rom2/OS1/ours/tweakers/mean": np.float32(1.5), "rom2/OS1/ours/tweakers/std": None,
           "seconds/evaluation": 12}
# long enough (one record per value) that the record file crosses its 32 KiB block size, so
# the reader below also reassembles records split over two blocks
OBJECTIVE = [float(100.0 / (i + 1)) for i in range(300)]
STAGE = [3.0, float("nan"), 1.0]  # a NaN point is left out, the others keep their iteration
COLUMNS = ["take", "variant", "sparsity", "std"]
ROWS = [["rom2", "baseline", 0.5, 0.125], ["rom2", "ours", np.float64(0.25), float("nan")], ["rom1", "ours", 0.75, None]]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """Offline, silent W&B whose every folder is in a temporary folder (:func:`wandb_environment`)."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_NAME"):
            mp.delenv(name, raising=False)
        for name, value in wandb_environment(home).items():
            mp.setenv(name, value)
        yield home


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 16x16 PNG and an 8-frame 32x32 MP4 (H.264, imageio-ffmpeg's bundled ffmpeg)."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    png = folder / "overlay.png"
    imageio.imwrite(png, rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
    mp4 = folder / "turntable.mp4"
    with imageio.get_writer(mp4, fps=8, codec="libx264", macro_block_size=16) as writer:
        for i in range(8):
            writer.append_data(np.full((32, 32, 3), 30 * i, dtype=np.uint8))
    return png, mp4


@pytest.fixture(scope="module")
def logged(wandb_env, media, tmp_path_factory):
    """One offline run that logs one of everything (W&B's service start-up is the slow part,
    so the module shares it) -> (the logger, what it wrote, the job directory)."""
    job_dir = tmp_path_factory.mktemp("job")
    png, mp4 = media
    cfg = LoggerConfig(kind="wandb", group="sweep-1", tags=("table1", "quick"))
    with make_logger(cfg, job_dir, CONFIG, job_name="table1") as log:
        assert isinstance(log, WandbLogger) and log.mode == "offline" and log.url is None
        log.log_metrics(METRICS)
        log.log_history("calibration/alice/OS1/objective", OBJECTIVE)
        log.log_history("finetune/full", STAGE, step_name="step")
        log.log_metrics({"progress/frames": 10.0}, step=5)
        log.log_metrics({"progress/frames": 4.0}, step=2)  # a lower step than before is kept too
        log.log_table("results/table1", COLUMNS, ROWS)
        log.log_image("media/overlay", png)
        log.log_video("media/turntable", mp4)
        log.log_config({"extra": {"seed": 3}})
        log.summary({"rom2/OS1/ours/sparsity/mean": 0.25, "world_key": "abc123", "undefined": float("nan")})
    return log, Run.finished(log.run_path), job_dir


# ---------------------------------------------------------------- the offline run, read back


def test_offline_run_is_written_in_the_job_directory(logged):
    log, run, job_dir = logged
    assert log.run_path.parent == job_dir / "wandb" and log.run_path.name.startswith("offline-run-")
    assert run.by_type["header"] and len(run.records) > 300
    assert len(list(run.path.glob("run-*.wandb"))) == 1 and (run.path / "files").is_dir()


def test_run_record_holds_the_config_and_how_the_run_is_filed(logged):
    _, run, _ = logged
    (first, *later) = [r.run for r in run.by_type["run"]]
    assert (first.project, first.display_name, first.run_group) == ("flamejax", "table1", "sweep-1")
    assert list(first.tags) == ["table1", "quick"]
    config = items(first.config.update)
    assert {k: config[k] for k in CONFIG} == CONFIG
    # log_config's update comes as a config record
    updates = {}
    for r in run.by_type.get("config", []):
        updates.update(items(r.config.update))
    assert updates["extra"] == {"seed": 3}


def test_metrics_are_one_history_row_without_missing_values(logged):
    _, run, _ = logged
    (row,) = [row for row in run.history if "seconds/evaluation" in row]
    assert row["rom2/OS1/ours/sparsity/mean"] == 0.25 and row["rom2/OS1/ours/tweakers/mean"] == 1.5
    assert row["seconds/evaluation"] == 12
    assert "rom2/OS1/ours/sparsity/std" not in row and "rom2/OS1/ours/tweakers/std" not in row


def test_histories_have_their_own_axes(logged):
    _, run, _ = logged
    axis = "calibration/alice/OS1/objective/iteration"
    assert run.series("calibration/alice/OS1/objective", axis) == list(enumerate(OBJECTIVE))
    assert run.series("finetune/full", "finetune/full/step") == [(0, 3.0), (2, 1.0)]
    assert run.metrics["calibration/alice/OS1/objective"].step_metric == axis
    assert run.metrics[axis].options.hidden
    assert run.metrics["finetune/full"].step_metric == "finetune/full/step"


def test_a_callers_step_is_a_custom_axis_that_may_go_back(logged):
    _, run, _ = logged
    # both points survive although W&B's own step had passed 300 (the histories) by then
    assert run.series("progress/frames", "step") == [(5, 10.0), (2, 4.0)]
    assert run.metrics["progress/frames"].step_metric == "step"


def test_summary(logged):
    _, run, _ = logged
    assert run.summary["rom2/OS1/ours/sparsity/mean"] == 0.25 and run.summary["world_key"] == "abc123"
    assert "undefined" not in run.summary
    assert run.summary["calibration/alice/OS1/objective"] == OBJECTIVE[-1]  # a series' last value


def test_table_is_written_with_its_columns_and_rows(logged):
    _, run, _ = logged
    ref, path = run.media("results/table1")
    assert ref["_type"] == "table-file" and path.is_file()
    assert path.is_relative_to(run.path / "files" / "media" / "table") and path.name.endswith(".table.json")
    table = json.loads(path.read_text())  # strict JSON: NaN would not parse as a number here
    assert table["columns"] == COLUMNS
    assert table["data"] == [["rom2", "baseline", 0.5, 0.125], ["rom2", "ours", 0.25, None], ["rom1", "ours", 0.75, None]]
    assert ref["ncols"] == 4 and ref["nrows"] == 3


def test_image_and_video_files(logged, media):
    _, run, _ = logged
    png, mp4 = media
    ref, path = run.media("media/overlay")
    assert ref["_type"] == "image-file" and (ref["width"], ref["height"]) == (16, 16)
    assert path.is_file() and path.is_relative_to(run.path / "files" / "media" / "images")
    assert np.array_equal(imageio.imread(path), imageio.imread(png))
    ref, path = run.media("media/turntable")
    assert ref["_type"] == "video-file" and path.suffix == ".mp4"
    assert path.is_relative_to(run.path / "files" / "media" / "videos")
    assert path.read_bytes() == mp4.read_bytes()  # copied as it was, not re-encoded


def test_finished_run_has_exit_code_zero(logged):
    log, run, _ = logged
    (exit_record,) = run.by_type["exit"]
    assert exit_record.exit.exit_code == 0
    log.finish(exit_code=3)  # finishing again does nothing (the with block already finished it)
    time.sleep(0.2)
    assert len(Run.finished(log.run_path).by_type["exit"]) == 1


def test_a_failed_run_is_recorded_as_failed(wandb_env, tmp_path):
    cfg = LoggerConfig(kind="wandb", dir=str(tmp_path / "elsewhere"), name="crash")
    with pytest.raises(RuntimeError, match="boom"):
        with make_logger(cfg, tmp_path / "job", {"a": 1}, job_name="table1") as log:
            log.log_metrics({"x": 1.0})
            raise RuntimeError("boom")
    assert log.run_path.parent == tmp_path / "elsewhere" / "wandb"  # logger.dir wins over the job dir
    run = Run.finished(log.run_path)
    assert run.by_type["run"][0].run.display_name == "crash"
    (exit_record,) = run.by_type["exit"]
    assert exit_record.exit.exit_code == 1


def test_online_without_credentials_fails_with_what_to_do(wandb_env, tmp_path):
    # mode=online is passed to wandb.init, which wins over the fixture's WANDB_MODE=offline
    with pytest.raises(LoggerError, match=r"mode='online'.*wandb login.*logger\.mode=offline"):
        make_logger(LoggerConfig(kind="wandb", mode="online"), tmp_path, {}, job_name="table1")


# ---------------------------------------------------------------- the none logger, the config group


def test_null_logger_takes_every_call(tmp_path):
    with make_logger(LoggerConfig(), tmp_path, CONFIG, job_name="table1") as log:
        assert type(log) is NullLogger and isinstance(log, Logger)
        log.log_config({"a": 1})
        log.log_metrics(METRICS, step=1)
        log.log_history("h", [1.0, 2.0])
        log.log_table("t", ["a"], [[1]])
        log.log_image("i", tmp_path / "none.png")
        log.log_video("v", tmp_path / "none.mp4")
        log.summary({"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_none_logger_never_imports_wandb(tmp_path):
    code = ("import sys\n"
            "from experiments.configs import LoggerConfig\n"
            "from experiments.loggers import make_logger\n"
            f"with make_logger(LoggerConfig(kind='none'), {str(tmp_path)!r}, {{'a': 1}}, job_name='t') as log:\n"
            "    log.log_metrics({'a': 1.0}); log.log_history('h', [1.0]); log.summary({'a': 1})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'wandb'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def table1_logger(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        dcfg = compose(config_name="table1", overrides=list(overrides))
    return Table1Config.from_dict(OmegaConf.to_container(dcfg, resolve=True)).logger


def test_logger_group_composes():
    assert table1_logger([]) == LoggerConfig(kind="none")
    assert table1_logger(["logger=wandb"]) == LoggerConfig(kind="wandb", project="flamejax", entity=None,
                                                           mode="offline", dir=None, group=None, name=None, tags=())
    online = table1_logger(["logger=wandb", "logger.mode=online", "logger.entity=lab", "logger.tags=[a,b]",
                            "logger.group=l1-sweep"])
    assert (online.mode, online.entity, online.tags, online.group) == ("online", "lab", ("a", "b"), "l1-sweep")


def test_missing_values():
    from experiments.loggers import _missing

    assert _missing(None) and _missing(float("nan")) and _missing(np.float32("nan")) and _missing(np.array(math.nan))
    assert not any(_missing(v) for v in (0.0, 0, np.float64(1.0), "nan", float("inf")))


def test_disabled_mode_writes_nothing(wandb_env, tmp_path, media):
    png, mp4 = media
    with make_logger(LoggerConfig(kind="wandb", mode="disabled"), tmp_path, CONFIG, job_name="table1") as log:
        assert log.run_path is None
        log.log_metrics(METRICS, step=1)
        log.log_history("h", [1.0, 2.0])
        log.log_table("t", COLUMNS, ROWS)
        log.log_image("i", png)
        log.log_video("v", mp4)
        log.summary({"a": 1})
    assert not (tmp_path / "wandb").exists()
