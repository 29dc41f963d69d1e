"""The method's evaluation on the synthetic world (or a user's data), from conf/evaluate.yaml:
Table 1's job without the figures.

    python -m experiments.evaluate                                 # baseline, calibrated, fine-tuned (short)
    python -m experiments.evaluate finetune=none evaluation.takes=[pangram] evaluation.trackers=[OS2]
    python -m experiments.evaluate -m tracker.l1=1e-4,1e-3,1e-2     # one job folder per value

:func:`flamejax.evaluate.evaluate_world` with the variants baseline, calibrated and, unless
``finetune=none``, finetuned (the finetune group's stages) on the ``evaluation`` selection (as
conf/table1.yaml's). Writes into the job folder, each file atomically, ``run.json`` last:

- ``records.csv``: one row per (performer, tracker, take, variant): every metric and timing;
- ``summary.csv``: :func:`flamejax.evaluate.summarise` of the records (every metric, timings
  included): mean, std, min, max and n over performers per (tracker, take, variant, metric);
- ``report.md``: :func:`flamejax.evaluate.to_markdown` of the summary (the sparsity/tweakers table
  and the truth-based metrics), under a line saying what was evaluated;
- ``metrics.json``: flat ``{"<take>/<tracker>/<variant>/<metric>/<mean|std>": value}`` of the
  summary (null where undefined), as table1's;
- ``config.yaml``, ``run.json`` (frames per take, variant build times, timings, device).

On a user's data (``data=folder``) ``evaluation.takes`` are the user's takes and the metrics that
need the truth are NaN (null in metrics.json, "–" in report.md), as in :mod:`experiments.table1`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from experiments.configs import EvaluateConfig
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.table1 import flat_metrics, logged_builder
from experiments.table1 import load_world
from experiments.stages import finish_job, run_stage
from flamejax.evaluate import (baseline_variant, calibrated_variant, evaluate_world, finetuned_variant, has_truth,
                               summarise, to_csv, to_markdown, undefined_metrics)


def run(cfg: EvaluateConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Evaluate and write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    ev = cfg.evaluation
    builders = [baseline_variant, calibrated_variant] + ([finetuned_variant(cfg.finetune)] if cfg.finetune else [])
    start = time.perf_counter()
    records = evaluate_world(world, calibration=cfg.calibration, weights=cfg.tracker.weights,
                             inversion=cfg.tracker.inversion, **ev.evaluate_kwargs(),
                             progress=lambda msg: progress("  " + msg),
                             variants=[logged_builder(b, logger) for b in builders])
    eval_s = time.perf_counter() - start
    check_finite(records, undefined_metrics(world))   # nothing is written for NaN results (but the undefined)
    summary = summarise(records)
    metrics = flat_metrics(summary)
    frames = {t: sorted({r["frames"] for r in records if r["take"] == t}) for t in dict.fromkeys(r["take"] for r in records)}
    variants = ", ".join(dict.fromkeys(r["variant"] for r in records))
    cap = f"at most {ev.max_frames} evenly spaced frames per take" if ev.max_frames else "all frames"
    where = (f"the synthetic world {cfg.data.world.key()}" if has_truth(world) else
             f"the data folder {cfg.data.world.root} ({cfg.data.world.key()}; no truth: the truth-based "
             f"metrics are n/a, lost frames are left out)")
    header = (f"# Evaluation on {where}\n\n"
              f"Variants {variants}; performers {', '.join(dict.fromkeys(r['performer'] for r in records))}; "
              f"trackers {', '.join(dict.fromkeys(r['tracker'] for r in records))}; {cap} (evaluated: {frames}). "
              f"Cells: mean ± std over performers. Evaluation {eval_s:.0f} s.\n\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("records.csv", "summary.csv", "report.md", "metrics.json")}
    write_atomic(paths["records.csv"], to_csv(records))
    write_atomic(paths["summary.csv"], to_csv(summary))
    write_atomic(paths["report.md"], header + to_markdown(summary))
    write_atomic(paths["metrics.json"], json.dumps(metrics, indent=1, sort_keys=True))
    logger.log_table("summary", list(summary[0]._fields), [list(r) for r in summary])
    logger.log_metrics(metrics)
    logger.summary(metrics)
    return finish_job(cfg, out_dir, text, paths, {
        "frames": frames, "seconds": {"world": world_s, "evaluation": eval_s},
        "variant_seconds": {f"{r['performer']}/{r['tracker']}/{r['variant']}": r["variant_seconds"] for r in records},
    })


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("evaluate", dcfg, EvaluateConfig, run)


if __name__ == "__main__":
    main()
