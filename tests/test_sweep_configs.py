"""The sweep configs (conf/hydra/launcher/, conf/hparams_search/): each composes onto table1 and
instantiates its plugin's launcher or sweeper; the SLURM launcher writes the sbatch script we
expect (with stand-in ``srun``/``sbatch`` commands, no cluster); and real multiruns of a tiny
throwaway Hydra app run through the joblib launcher, one a small Optuna search."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.table1 import TABLE_METRICS, resolved

CONF = Path(__file__).resolve().parent.parent / "conf"
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="the 'search' extra (hydra-optuna-sweeper, optuna) is not "
                                                         "installed: pip install -e '.[search]'")
# optuna 2.10 (the newest the sweeper allows) uses SQLAlchemy APIs that 2.0 moved; it says so on import
quiet_optuna = pytest.mark.filterwarnings("ignore:Deprecated API features detected")


def search_override(name="optuna"):
    """``hparams_search=<name>``, with '+' while table1.yaml's defaults list has no hparams_search entry."""
    defaults = yaml.safe_load((CONF / "table1.yaml").read_text())["defaults"]
    listed = any(isinstance(d, dict) and "hparams_search" in d for d in defaults)
    return f"{'' if listed else '+'}hparams_search={name}"


def class_path(obj):
    """``module.Class`` of obj (Hydra's plugin discovery may load a plugin module twice, so two
    class objects of one plugin class can exist and isinstance is not reliable)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def compose_table1(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="table1", overrides=list(overrides), return_hydra_config=True)


def test_joblib_local_launcher():
    node = compose_table1(["hydra/launcher=joblib_local"]).hydra.launcher
    assert node._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert node.n_jobs == 2 and node.prefer == "processes"
    launcher = instantiate(node)
    assert class_path(launcher) == node._target_ and launcher.joblib["n_jobs"] == 2
    assert compose_table1(["hydra/launcher=joblib_local", "hydra.launcher.n_jobs=4"]).hydra.launcher.n_jobs == 4


def test_slurm_launchers_compose():
    cfg = compose_table1(["hydra/launcher=slurm"])
    node = cfg.hydra.launcher
    assert node._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert node.partition is None and node.account is None and node.gpus_per_node is None
    assert (node.timeout_min, node.cpus_per_task, node.mem_gb, node.tasks_per_node) == (120, 4, 8, 1)
    assert node.array_parallelism == 32 and node.max_num_timeout == 0
    assert node.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"
    assert class_path(instantiate(node)) == node._target_
    local = compose_table1(["hydra/launcher=slurm_local"]).hydra.launcher
    assert local._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert (local.timeout_min, local.gpus_per_node) == (120, 0)
    assert class_path(instantiate(local)) == local._target_


def test_slurm_launcher_writes_the_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own launch() with stand-in srun/sbatch: submitit writes the job array's sbatch
    script and 'submits' it; the test stops before it would wait for the jobs."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", 'cp "$1" "$(dirname "$0")/submitted.sh"; '
                                                     'echo "Submitted batch job 4242"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitted = []
    real_map_array = submitit.AutoExecutor.map_array

    def map_array(self, fn, *iterables):
        submitted.extend(real_map_array(self, fn, *iterables))
        return []  # launch() would otherwise wait on the (nonexistent) cluster for the results

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    sweep_dir = tmp_path / "sweep"
    cfg = compose_table1(["hydra/launcher=slurm", "hydra.launcher.partition=cpu_short",
                          "+hydra.launcher.additional_parameters.mail-type=END", f"hydra.sweep.dir={sweep_dir}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["calibration.reg=1e-4"], ["calibration.reg=1e-3"]], initial_job_idx=0) == []
    assert [job.job_id for job in submitted] == ["4242_0", "4242_1"]
    script = (bin_dir / "submitted.sh").read_text()
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
    assert flags["partition"] == "cpu_short" and flags["array"] == "0-1%2"  # min(jobs, array_parallelism)
    assert (flags["cpus-per-task"], flags["mem"], flags["time"]) == ("4", "8GB", "120")
    assert flags["job-name"] == cfg.hydra.job.name and flags["mail-type"] == "END"
    assert flags["nodes"] == "1" and flags["ntasks-per-node"] == "1"
    assert not {"gpus-per-node", "account", "qos", "gres"} & set(flags)
    assert str(sweep_dir / ".submitit") in flags["output"]
    assert f"{sys.executable} -u -m submitit.core._submit" in script.replace("'", "")


@needs_optuna
@quiet_optuna
def test_optuna_search_config():
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import LogUniformDistribution
    from optuna.samplers import TPESampler

    cfg = compose_table1([search_override()])
    node = cfg.hydra.sweeper
    assert node._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert node.direction == "minimize" and node.storage is None and node.sampler.seed == 0
    assert node.n_trials >= 10 and node.n_jobs >= 1 and 0 <= node.max_failure_rate < 1
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # the search picks no launcher itself
    sweeper = instantiate(node)
    assert class_path(sweeper) == node._target_ and isinstance(sweeper.sweeper.sampler, TPESampler)
    space, fixed = create_params_from_overrides(sweeper.sweeper._parse_sweeper_params_config())
    assert fixed == {} and set(space) == {"calibration.reg", "tracker.l1", "tracker.tweaker"}
    assert all(isinstance(d, LogUniformDistribution) for d in space.values())
    # every parameter is a table1 setting and both ends of its range make a valid Table1Config
    defaults = compose_table1([])
    for bound in ("low", "high"):
        values = [f"{key}={getattr(d, bound)}" for key, d in space.items()]
        conf = compose_table1([search_override(), *values])
        for key, d in space.items():
            assert OmegaConf.select(defaults, key) is not None
            assert math.isclose(OmegaConf.select(conf, key), getattr(d, bound))
            assert d.low < OmegaConf.select(defaults, key) < d.high  # the search brackets the default
        if "optimized_metric" not in OmegaConf.to_container(defaults):
            del conf.optimized_metric  # until table1's config knows the key (main returns that metric)
        resolved(conf)
    # the objective names a metrics.json entry (experiments/table1.py flat_metrics) of this run
    take, tracker, variant, metric, stat = cfg.optimized_metric.split("/")
    assert take in [*cfg.evaluation.takes, "simon_says"] and tracker in ("OS1", "OS2")
    assert variant in ("baseline", "calibrated", "finetuned") and metric in TABLE_METRICS and stat == "mean"


# A throwaway Hydra app for the real multiruns: its primary config adds flamejax's conf/ to the
# search path (so hydra/launcher=joblib_local and hparams_search=optuna are the files under test)
# and has the keys the search varies; each job writes metrics.json, pid.txt, and returns
# metrics[optimized_metric] the way experiments/table1.py's main must for the Optuna sweeper.
APP = '''
import json, math, os
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(config_path="conf", config_name="app", version_base="1.3")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    score = sum(math.log10(v / t) ** 2 for v, t in ((cfg.calibration.reg, 1e-3), (cfg.tracker.l1, 1e-2)))
    metrics = {"pangram/OS2/calibrated/control_mae/mean": score + cfg.tracker.tweaker}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "pid.txt").write_text(str(os.getpid()))
    if cfg.optimized_metric is not None:
        return float(metrics[cfg.optimized_metric])

if __name__ == "__main__":
    main()
'''


def run_app(tmp_path, overrides):
    """Writes the app into tmp_path and runs ``app.py -m overrides`` -> (sweep dir, its job dirs,
    the launching process's pid, its stdout + stderr)."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "multirun"
    (tmp_path / "conf" / "app.yaml").write_text(textwrap.dedent(f"""\
        calibration: {{reg: 1.0e-3}}
        tracker: {{l1: 1.0e-3, tweaker: 1.0e-2}}
        optimized_metric: null
        hydra:
          searchpath: ["file://{CONF}"]
          sweep: {{dir: "{sweep_dir}", subdir: "${{hydra.job.num}}"}}
        """))
    proc = subprocess.Popen([sys.executable, "app.py", "-m", *overrides], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return sweep_dir, jobs, proc.pid, stdout + stderr


def test_joblib_multirun_writes_one_folder_per_job(tmp_path):
    sweep_dir, jobs, pid, output = run_app(tmp_path, ["hydra/launcher=joblib_local", "tracker.l1=0.0001,0.001,0.01"])
    assert "Joblib.Parallel(n_jobs=2" in output
    assert [p.name for p in jobs] == ["0", "1", "2"]
    seen = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        seen.append(overrides)
        assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["tracker"]["l1"] == float(overrides[0].split("=")[1])
        assert json.loads((job / "metrics.json").read_text())
        assert int((job / "pid.txt").read_text()) != pid  # ran in a joblib worker, not the launching process
    assert seen == [["tracker.l1=0.0001"], ["tracker.l1=0.001"], ["tracker.l1=0.01"]]
    assert (sweep_dir / "multirun.yaml").is_file()


@needs_optuna
def test_optuna_search_through_joblib(tmp_path):
    trials = 4
    # the app's defaults list has no hparams_search entry: '+' appends the group
    sweep_dir, jobs, _, output = run_app(tmp_path, ["+hparams_search=optuna", "hydra/launcher=joblib_local",
                                                    f"hydra.sweeper.n_trials={trials}"])
    assert "setup plugin alembic" not in output  # quieted by the search config
    assert len(jobs) == trials
    values = []
    for job in jobs:
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert 1e-5 <= config["calibration"]["reg"] <= 1e-1 and 1e-4 <= config["tracker"]["tweaker"] <= 1.0
        values.append(json.loads((job / "metrics.json").read_text())[config["optimized_metric"]])
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and set(result["best_params"]) == {"calibration.reg", "tracker.l1", "tracker.tweaker"}
    assert result["best_value"] == min(values)  # the jobs' return values were the objective
