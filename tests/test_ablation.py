"""Ablations from configs: every conf/ablation/ config composes with Table 1 and changes only its own
keys; ``python -m experiments.ablate`` runs variants x seeds on the tests' tiny world, records a
failing job and goes on, skips finished jobs on a re-run; the ablation table's numbers are the
means of the per-run records.csv files, recomputed here; a multirun's folder layout is collected
the same way; the collector picks the reported rig, flags duplicates and reads the differences'
direction right."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from experiments import ablation_table
from experiments.ablate import job_overrides
from experiments.callbacks import CollectSweep
from experiments.collect import flatten
from experiments.configs import ConfigError, EvaluationConfig
from experiments.table1 import resolved

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
VARIANTS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))
# variants whose keys the evaluation gains in a separate change (flamejax/evaluate.py, EvaluationConfig)
EVALUATION_KEYS = {"fewer_expressions": "simon_says_exclude", "fewer_frames": "hold_frames",
                   "landmarks_only": "landmarks_only"}


def compose_table1(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="table1", overrides=list(overrides))


def flat_config(overrides):
    cfg, text = resolved(compose_table1(overrides))
    return cfg, flatten(yaml.safe_load(text))


def own_keys(variant: str) -> set[str]:
    """The keys conf/ablation/<variant>.yaml sets (flattened), plus each group it overrides."""
    d = yaml.safe_load((CONF / "ablation" / f"{variant}.yaml").read_text())
    keys = {k for k in flatten({k: v for k, v in d.items() if k != "defaults"})}
    for entry in d.get("defaults", []):
        if isinstance(entry, dict):
            keys |= {k.split()[-1].lstrip("/") for k in entry}    # "override /finetune" -> finetune
    return keys


def needs_evaluation_key(variant: str) -> None:
    key = EVALUATION_KEYS.get(variant)
    if key and key not in {f.name for f in dataclasses.fields(EvaluationConfig)}:
        pytest.skip(f"evaluation.{key} is not an EvaluationConfig key yet")


def test_variant_lists_agree():
    ablate = yaml.safe_load((CONF / "ablate.yaml").read_text())
    assert ablate["variants"][0] == "full" and sorted(ablate["variants"]) == VARIANTS
    assert list(ablation_table.ORDER) == ablate["variants"]
    assert len(ablate["seeds"]) >= 3
    for v in VARIANTS:
        assert yaml.safe_load((CONF / "ablation" / f"{v}.yaml").read_text())["ablation_name"] == v


@pytest.mark.parametrize("variant", VARIANTS)
def test_ablation_config_composes_and_changes_only_its_keys(variant):
    needs_evaluation_key(variant)
    _, full = flat_config(["experiment=quick", "ablation=full"])
    cfg, mine = flat_config(["experiment=quick", f"ablation={variant}"])
    assert cfg.ablation_name == variant
    differ = {k for k in set(full) | set(mine) if full.get(k) != mine.get(k)} - {"ablation_name"}
    allowed = own_keys(variant) - {"ablation_name"}
    assert all(any(k == a or k.startswith(a + ".") for a in allowed) for k in differ), (differ, allowed)
    assert bool(differ) == (variant != "full")
    # the ablation overrides the preset (after experiment= in table1's defaults)
    if variant.startswith("finetune_"):
        k = int(variant[-1])
        assert [s.name for s in cfg.finetune.stages] == ["primary_reduced", "full", "filtered", "tweakers"][:k]
        assert k < 2 or next(s for s in cfg.finetune.stages if s.name == "full").maxiter == 2   # quick's maxiter kept
    # under the ablate driver: the seed replaces quick's, no figures, no fine-tuning unless the row reports it
    ov = job_overrides(["experiment=quick", "variants=[x]", "finetune.w_reg=0.02"], variant, 2)
    job = resolved(compose_table1(ov))[0]
    assert job.data.world.seed == job.model.seed == 2 and not job.figures.enabled
    assert (job.finetune is not None) == variant.startswith("finetune")
    assert ablation_table.reported_rig(variant) == ("finetuned" if variant.startswith("finetune") else "calibrated")


def test_full_is_table1_itself():
    assert resolved(compose_table1(["experiment=quick"]))[1] == resolved(compose_table1(["experiment=quick", "ablation=full"]))[1]


def test_job_overrides():
    assert job_overrides(["experiment=quick", "seeds=[1]"], "no_l1", 3) == \
        ["experiment=quick", "ablation=no_l1", "data.seed=3", "figures.enabled=false", "finetune=none"]
    # finetune settings are dropped where the job has no fine-tuning, kept where it has
    assert "finetune.w_reg=2" not in job_overrides(["finetune.w_reg=2"], "full", 0)
    assert "finetune.w_reg=2" in job_overrides(["finetune.w_reg=2"], "finetune_1", 0)
    assert job_overrides(["finetune=short"], "full", 0)[-1] == "figures.enabled=false"   # the user's choice wins
    for bad in ("data.seed=1", "ablation=no_l1", "ablation_name=x"):
        with pytest.raises(ConfigError, match="not an ablate override"):
            job_overrides([bad], "full", 0)


# ---------------------------------------------------------------- a quick ablate run

SEEDS = (1, 2)                     # 1: conftest's tiny world (cached); 2: made once here
RUN_VARIANTS = ("full", "no_l1", "bogus")   # bogus: no such config, the job fails and the run goes on


def tiny_world_cache(tiny_world, tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp()
    cache = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "tiny_world_cache"
    assert (cache / f"world-{tiny_world.config.key()}").is_dir(), "conftest's tiny_world cache moved"
    return cache


@pytest.fixture(scope="module")
def ablate_run(tiny_world, tmp_path_factory):
    cache = tiny_world_cache(tiny_world, tmp_path_factory)
    out = tmp_path_factory.mktemp("ablate")
    args = ["experiment=quick", f"data.cache_dir={cache}", f"compilation_cache={tmp_path_factory.mktemp('jax')}",
            "evaluation.takes=[pangram]", "evaluation.max_frames=4", f"variants=[{','.join(RUN_VARIANTS)}]",
            f"seeds=[{','.join(map(str, SEEDS))}]", f"hydra.run.dir={out}"]
    # one BLAS thread: the world's least-squares fits crawl when OpenBLAS threads share 2 busy cores
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "experiments.ablate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, args, env, proc


def _records(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def expected_table(out: Path) -> dict:
    """{(variant, rig, tracker or "all", metric): (mean, std, n)} recomputed from the runs' records.csv."""
    metrics = ablation_table.METRICS
    units = defaultdict(dict)       # (row, rig) -> {(seed, performer, tracker): {metric: value}}
    for job in (out / "runs").glob("*/seed*"):
        if json.loads((job / "run.json").read_text())["status"] != "done":
            continue
        variant, seed = job.parent.name, int(job.name[4:])
        rows = [(variant, "calibrated")] + ([("no calibration", "baseline")] if variant == "full" else [])
        recs = _records(job / "records.csv")
        for row, rig in rows:
            cells = defaultdict(lambda: defaultdict(list))
            for r in recs:
                if r["variant"] == rig:
                    for m in metrics:
                        training = r["take"] == "simon_says"
                        if training == (m == "recognition"):
                            cells[(seed, r["performer"], r["tracker"])][m].append(float(r[m]))
            for key, values in cells.items():
                units[(row, rig)][key] = {m: float(np.mean(v)) for m, v in values.items()}
    out_table = {}
    for (row, rig), by in units.items():
        trackers = sorted({t for (_, _, t) in by})
        people = sorted({(s, p) for (s, p, _) in by})
        for m in metrics:
            for t in trackers:
                v = np.array([by[(s, p, t)][m] for s, p in people])
                out_table[(row, rig, t, m)] = (v.mean(), v.std(), len(v))
            v = np.array([np.mean([by[(s, p, t)][m] for t in trackers]) for s, p in people])
            out_table[(row, rig, "all", m)] = (v.mean(), v.std(), len(v))
    return out_table


def read_table(path: Path) -> dict:
    return {(r["variant"], r["rig"], r["tracker"], r["metric"]): r for r in _records(path)}


@pytest.mark.slow
def test_ablate_runs_every_job_and_records_the_failed_one(ablate_run):
    out, _, _, proc = ablate_run
    for variant in RUN_VARIANTS:
        for seed in SEEDS:
            status = json.loads((out / "runs" / variant / f"seed{seed}" / "run.json").read_text())
            assert status["status"] == ("failed" if variant == "bogus" else "done"), (variant, seed)
            if variant == "bogus":
                assert "Could not find 'ablation/bogus'" in status["error"]
            else:
                config = yaml.safe_load((out / "runs" / variant / f"seed{seed}" / "config.yaml").read_text())
                assert config["ablation_name"] == variant and config["data"]["seed"] == seed
                assert config["figures"]["enabled"] is False and config["finetune"]["enabled"] is False
    assert "ablate: 6 jobs" in proc.stdout and "4 run, 0 already done, 2 failed" in proc.stdout
    md = (out / "ablation.md").read_text()
    assert md in proc.stdout   # printed
    assert "runs/bogus/seed1" in md and "Could not find 'ablation/bogus'" in md
    assert (out / "ablation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_ablation_table_is_the_records(ablate_run):
    out = ablate_run[0]
    table = read_table(out / "ablation.csv")
    expected = expected_table(out)
    assert {k[:3] for k in expected} >= {("full", "calibrated", "all"), ("no_l1", "calibrated", "OS1"),
                                         ("no calibration", "baseline", "OS2")}
    assert set(table) == set(expected)
    for key, (mean, std, n) in expected.items():
        row = table[key]
        assert int(row["n"]) == n == 2 * len(SEEDS), key          # 2 performers x 2 seeds
        assert math.isclose(float(row["mean"]), mean, rel_tol=1e-9, abs_tol=1e-12), key
        assert math.isclose(float(row["std"]), std, rel_tol=1e-9, abs_tol=1e-12), key
        if key[0] == "full":
            assert row["diff"] == "nan" and row["verdict"] == ""
        else:
            diff = mean - expected[("full", "calibrated", *key[2:])][0]
            assert math.isclose(float(row["diff"]), diff, rel_tol=1e-9, abs_tol=1e-12), key
            lower_better = key[3] != "recognition"
            assert row["verdict"] in ({"same"} if diff == 0 else {"better" if (diff < 0) == lower_better else "worse"})
    # the L1 term does what it is for
    assert float(table[("no_l1", "calibrated", "all", "sparsity")]["diff"]) > 0
    md = (out / "ablation.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| **full** | Ours |") and lines[2].startswith("| no calibration | Baseline |")
    assert lines[3].startswith("| no_l1 | Ours | tracker.l1=0.0 | 4 |")
    sparsity = table[("no_l1", "calibrated", "all", "sparsity")]
    assert f"{float(sparsity['mean']):.3f} ± {float(sparsity['std']):.3f} (+{float(sparsity['diff']):.3f} ▲ worse)" in lines[3]
    # the header names the seeds and each seed's world
    keys = {json.loads((out / "runs" / "full" / f"seed{s}" / "run.json").read_text())["world_key"] for s in SEEDS}
    assert "seeds 1, 2." in md and len(keys) == 2 and all(f"`{k}`" in md for k in keys)
    assert "n_performers: 2" in md and "max_frames: 4" in md


@pytest.mark.slow
def test_rerun_skips_finished_jobs(ablate_run):
    out, args, env, _ = ablate_run
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/seed*/records.csv")}
    table = (out / "ablation.csv").read_text()
    proc = subprocess.run([sys.executable, "-m", "experiments.ablate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 run, 4 already done, 2 failed" in proc.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()) and len(mtimes) == 4
    assert (out / "ablation.csv").read_text() == table


@pytest.mark.slow
def test_multirun_layout_is_collected_the_same(ablate_run, tmp_path):
    """A multirun's folders (``ablation=<v>,data.seed=<s>``, Hydra's .hydra inside) give the same table."""
    out = ablate_run[0]
    multi = tmp_path / "multirun"
    for job in (out / "runs").glob("*/seed*"):
        dest = multi / f"ablation={job.parent.name},data.seed={job.name[4:]},evaluation.max_frames=4"
        shutil.copytree(job, dest)
        (dest / ".hydra").mkdir()
        (dest / ".hydra" / "config.yaml").write_text("not: a job\n")
    (multi / "multirun.yaml").write_text("hydra: {}\n")
    assert ablation_table.main([str(multi)]) == 0
    assert (multi / "ablation.csv").read_text() == (out / "ablation.csv").read_text()
    assert (multi / "ablation_units.csv").read_text() == (out / "ablation_units.csv").read_text()
    md = (multi / "ablation.md").read_text()
    assert "ablation=bogus,data.seed=1" in md and "bogus seed 1: failed" in md
    # the end-of-multirun callback writes the same table
    for name in ("ablation.md", "ablation.csv"):
        (multi / name).unlink()
    CollectSweep._ablation(multi)
    assert (multi / "ablation.csv").read_text() == (out / "ablation.csv").read_text()
    assert (multi / "ablation.md").read_text() == md


# ---------------------------------------------------------------- the collector on hand-made jobs


def _fake_job(folder: Path, variant, seed: int, rows: dict, finetune=None, status="done"):
    """A job folder: config.yaml (ablation_name unless variant is None), records.csv with one
    record per (performer, take, rig) whose metrics are ``rows[rig] + performer offset``, run.json."""
    folder.mkdir(parents=True)
    config = {"data": {"kind": "synthetic", "seed": seed, "size": "tiny", "n_performers": 2},
              "calibration": {"reg": 0.001}, "tracker": {"l1": 0.001},
              "finetune": finetune or {"enabled": False}, "evaluation": {"takes": ["pangram"], "max_frames": 4}}
    if variant is not None:
        config["ablation_name"] = variant
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    recs = []
    for i, performer in enumerate(("p0", "p1")):
        for rig, base in rows.items():
            for take in ("simon_says", "pangram"):
                rec = {"world": f"w{seed}", "performer": performer, "tracker": "OS1", "take": take, "variant": rig,
                       "training": take == "simon_says", "frames": 4}
                rec.update({m: base + i + (10 if take == "simon_says" else 0) for m in ablation_table.METRICS})
                recs.append(rec)
    with open(folder / "records.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(recs[0]))
        writer.writeheader()
        writer.writerows(recs)
    (folder / "run.json").write_text(json.dumps({"status": status}))


def test_collector_rig_choice_duplicates_and_directions(tmp_path):
    stages = {"enabled": True, "stages": {"primary_reduced": {"maxiter": 20}, "full": {"maxiter": 2}, "filtered": None}}
    for seed in (0, 1):
        # a multirun with finetune=short: the full jobs also hold a fine-tuned rig, which full does not report
        _fake_job(tmp_path / f"ablation=full,data.seed={seed}", "full", seed,
                  {"baseline": 2.0, "calibrated": 1.0, "finetuned": 5.0}, finetune=stages)
        _fake_job(tmp_path / f"ablation=finetune_2,data.seed={seed}", "finetune_2", seed,
                  {"baseline": 2.0, "calibrated": 1.0, "finetuned": 0.5}, finetune=stages)
    _fake_job(tmp_path / "old" / "seed0", None, 0, {"calibrated": 9.0})         # no ablation_name: full, a duplicate
    _fake_job(tmp_path / "runs" / "no_l1" / "seed0", "no_l1", 0, {"calibrated": 1.0}, finetune={"enabled": False})
    _fake_job(tmp_path / "runs" / "finetune_1" / "seed0", "finetune_1", 0, {"calibrated": 1.0})   # finetune=none
    col = ablation_table.collect(tmp_path)
    rows = {r.variant: r for r in col.rows}
    assert [r.variant for r in col.rows][:2] == ["full", "no calibration"]
    assert (rows["full"].rig, rows["finetune_2"].rig, rows["no calibration"].rig) == ("calibrated", "finetuned", "baseline")
    # held-out takes for every metric, the training take for recognition; mean over performers 0 and +1
    full, ft = rows["full"].cells, rows["finetune_2"].cells
    assert full[("all", "sparsity")].mean == 1.5 and full[("all", "recognition")].mean == 11.5
    assert full[("all", "sparsity")].n == 4 and full[("all", "sparsity")].std == 0.5
    assert ft[("all", "sparsity")].diff == -0.5 and ft[("all", "sparsity")].verdict == "better"
    assert ft[("all", "recognition")].diff == -0.5 and ft[("all", "recognition")].verdict == "worse"
    assert ft[("all", "sparsity")].diff_std == 0.0 and ft[("all", "sparsity")].n_pairs == 4
    assert rows["no_l1"].changes == "finetune: none"
    assert rows["finetune_2"].changes == "(none)"   # same finetune block as these full jobs
    why = dict(col.not_done)
    assert "duplicate" in why["old/seed0"] and "'finetuned' records" in why["runs/finetune_1/seed0"]
    assert ablation_table.format_cell(ft[("all", "sparsity")], "sparsity") == "1.000 ± 0.500 (-0.500 ▼ better)"
    assert ablation_table.format_cell(full[("all", "sparsity")], "sparsity", reference=True) == "1.500 ± 0.500"
    paths = ablation_table.write(tmp_path, col)
    assert set(paths) == set(ablation_table.FILES)


def test_collector_without_jobs(tmp_path):
    assert ablation_table.main([str(tmp_path)]) == 2


@pytest.mark.slow   # every variant once in its quick form: ~6 min on 2 cores (the fine-tuning ones most of it)
def test_every_variant_runs_in_its_quick_form(tiny_world, tmp_path, tmp_path_factory):
    cache = tiny_world_cache(tiny_world, tmp_path_factory)
    args = ["experiment=quick", f"data.cache_dir={cache}", f"compilation_cache={tmp_path / 'jax'}", "seeds=[1]",
            "evaluation.performers=[performer00]", "evaluation.trackers=[OS2]", "evaluation.takes=[pangram]",
            "evaluation.max_frames=4", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-m", "experiments.ablate", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(VARIANTS)} run, 0 already done, 0 failed" in proc.stdout, proc.stdout[-3000:]
    table = read_table(tmp_path / "run" / "ablation.csv")
    assert {k[0] for k in table} == set(VARIANTS) | {"no calibration"}
