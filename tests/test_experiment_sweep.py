"""Sweeps two ways on the tests' tiny world: a Hydra multirun of the Table 1 job and the vectorised
sweep of the same grid give the same numbers and the same joined table; a bad grid value is
recorded as failed while the sweep goes on; a re-run skips the finished jobs; the collector's
table is what the job folders hold."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import collect
from experiments.jobs import NonFiniteResult, check_finite, finished, read_status, write_failed

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# 2 x 3 grid, one of whose l1 values is invalid: 4 good jobs and 2 failing ones
GRID = {"calibration.reg": ["0.001", "0.1"], "tracker.l1": ["0.0001", "0.01", "-1"]}
GOOD = [(r, l1) for r in (0.001, 0.1) for l1 in (0.0001, 0.01)]


def cli(module, args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def common(tiny_world, tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "tiny_world_cache"
    assert (cache / f"world-{tiny_world.config.key()}").is_dir(), "conftest's tiny_world cache moved"
    jax_cache = tmp_path_factory.mktemp("jax_cache")
    # one performer, one tracker, one held-out take, few frames: the sweep machinery, cheaply
    return ["experiment=quick", f"data.cache_dir={cache}", f"compilation_cache={jax_cache}", "finetune=none",
            "figures.enabled=false",
            "evaluation.performers=[performer00]", "evaluation.trackers=[OS2]", "evaluation.takes=[pangram]",
            "evaluation.max_frames=4"]


@pytest.fixture(scope="module")
def multirun(common, tmp_path_factory):
    out = tmp_path_factory.mktemp("multirun")
    args = ["-m", f"hydra.sweep.dir={out}", *common] + [f"{k}={','.join(v)}" for k, v in GRID.items()]
    proc = cli("experiments.table1", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, args, proc


@pytest.fixture(scope="module")
def vectorised(common, tmp_path_factory):
    out = tmp_path_factory.mktemp("vectorised")
    grid = "{" + ", ".join(f"{k}: [{', '.join(v)}]" for k, v in GRID.items()) + "}"
    proc = cli("experiments.sweep", [f"hydra.run.dir={out}", f"grid={grid}", *common])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def rows_by_point(sweep_dir: Path):
    with open(sweep_dir / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {(float(r["calibration.reg"]), float(r["tracker.l1"])): r for r in rows}


def test_multirun_records_failures_and_goes_on(multirun):
    out, _, proc = multirun
    jobs = {j.name: j for j in collect.find_jobs(out)}
    assert len(jobs) == 6
    failed = [j for j in jobs.values() if j.status == "failed"]
    assert len(failed) == 2 and all("tracker.l1=-1" in j.name for j in failed)
    assert all("tracker.l1 must be >= 0" in j.error for j in failed)
    assert "traceback" in read_status(out / failed[0].name)
    assert sum(j.status == "done" for j in jobs.values()) == 4
    assert "table1: bad config: tracker.l1 must be >= 0" in proc.stderr


def test_vectorised_sweep_equals_the_multirun(multirun, vectorised):
    a, b = rows_by_point(multirun[0]), rows_by_point(vectorised[0])
    assert set(a) == set(b) and len(a) == 6
    for point, row in a.items():
        other = b[point]
        assert row["status"] == other["status"], point
        if row["status"] != "done":
            assert point[1] == -1 and "tracker.l1" in other["error"]
            continue
        metrics = [k for k in row if "/" in k]
        assert metrics and all(row[k] != "" for k in metrics)
        for k in metrics:
            x, y = float(row[k]), float(other[k])
            # float32 solves batched differently: geometry to 1%, control statistics to 0.02 (absolute)
            tol = 1e-2 * abs(x) if k.endswith("_mm") else 0.02
            assert abs(x - y) <= tol, (point, k, x, y)
    # every point has table1's files, and the vectorised job's config is the multirun job's
    for (reg, l1) in GOOD:
        vec = next(p for p in vectorised[0].iterdir() if p.name == f"calibration.reg={reg},tracker.l1={l1}")
        assert (vec / "table1.md").is_file() and read_status(vec)["status"] == "done"
    # the weights do something: more L1, sparser controls
    assert float(a[(0.001, 0.01)]["calibrated/sparsity"]) < float(a[(0.001, 0.0001)]["calibrated/sparsity"])


def test_collector_table_is_the_job_files(multirun):
    out = multirun[0]
    rows = rows_by_point(out)
    assert (out / "sweep.md").is_file() and (out / "sweep_long.csv").is_file()
    assert (out / "sweep_plots.png").stat().st_size > 10_000
    for job in collect.find_jobs(out):
        if job.status != "done":
            continue
        metrics = json.loads((out / job.name / "metrics.json").read_text())
        row = rows[(job.config["calibration.reg"], job.config["tracker.l1"])]
        # the headline cell is the mean over held-out takes x trackers: here one cell, pangram/OS2
        for variant in ("baseline", "calibrated"):
            for metric in ("sparsity", "fit_tracked_mm"):
                assert math.isclose(float(row[f"{variant}/{metric}"]),
                                    metrics[f"pangram/OS2/{variant}/{metric}/mean"], rel_tol=1e-12)
    params = collect.swept_parameters(collect.find_jobs(out))
    assert params == ["calibration.reg", "tracker.l1"]


def test_rerun_skips_finished_jobs_and_retries_failed_ones(multirun):
    out, args, _ = multirun
    done = {p: (p / "metrics.json").stat().st_mtime_ns for p in out.iterdir() if (p / "metrics.json").exists()}
    proc = cli("experiments.table1", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("already holds this job's results") == 4
    assert all((p / "metrics.json").stat().st_mtime_ns == t for p, t in done.items())
    assert proc.stderr.count("bad config") == 2    # the failed ones were tried again


def test_vectorised_rerun_skips_everything_done(vectorised, common):
    out, _ = vectorised
    grid = "{" + ", ".join(f"{k}: [{', '.join(v)}]" for k, v in GRID.items()) + "}"
    proc = cli("experiments.sweep", [f"hydra.run.dir={out}", f"grid={grid}", *common])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 already done, 2 bad, 0 to run" in proc.stdout


def test_job_protocol(tmp_path):
    job = tmp_path / "job"
    assert not finished(job, "a: 1\n") and read_status(job) is None
    write_failed(job, ValueError("boom"), "a: 1\n")
    assert read_status(job)["status"] == "failed" and "ValueError: boom" in read_status(job)["error"]
    assert not finished(job, "a: 1\n")
    (job / "run.json").write_text('{"status": "done"}')
    assert finished(job, "a: 1\n") and not finished(job, "a: 2\n")
    (job / "run.json").write_text('{"status": "do')          # interrupted while writing: unfinished
    assert read_status(job) is None and not finished(job, "a: 1\n")
    check_finite([{"take": "rom1", "sparsity": 0.1, "recognition": math.nan}])
    with pytest.raises(NonFiniteResult, match="fit_tracked_mm is nan .*take=rom1"):
        check_finite([{"take": "rom1", "sparsity": 0.1, "fit_tracked_mm": math.nan}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no job folders"):
        collect.collect(tmp_path / "empty")
