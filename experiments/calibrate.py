"""Simon-Says calibration of the synthetic world's performers, from conf/calibrate.yaml.

    python -m experiments.calibrate                                # every performer, as OS1 tracked them
    python -m experiments.calibrate performers=[performer00] tracked_by=OS2 calibration.reg=1e-2
    python -m experiments.calibrate experiment=quick               # the tests' tiny world

Per selected performer, :func:`flamejax.calibrate.calibrate_simon_says` on their Simon-Says take
as ``tracked_by`` saw it (canonical pose, the world's hold labels and Simon-Says masks, the control
set's combinations: exactly the "calibrated" variant of :mod:`flamejax.evaluate`). Writes into the
job folder, each file atomically, ``run.json`` last:

- ``<performer>/flame_calibrated.npz``: the FLAME model with the calibrated expression basis
  (:func:`flamejax.io.save_flame` of :func:`flamejax.calibrate.calibrated_model`; loads with
  :func:`flamejax.load_flame` and ``smplx.FLAME``);
- ``<performer>/rig_calibrated.npz``: the semantic rig (basis (P, K), offset (P,), control names,
  n_expr, jaw_convention, has_neck; the generic one unless ``calibration.parameters`` is rig/both);
- ``<performer>/calibration.json``: iterations, objective before/after (mm^2), mean residual
  before/after (mm), per Simon-Says expression the residual before/after (mm), the objective per
  iteration, seconds;
- ``calibration.csv``: one row per performer (the numbers of calibration.json but the lists);
- ``config.yaml`` (the resolved config) and ``run.json`` (world key, timings, device).

What the stage entry points share is in :mod:`experiments.stages`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import hydra
import jax
import numpy as np
from omegaconf import DictConfig

from experiments.configs import CalibrateConfig
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.stages import finish_job, load_world, performer_context, rig_arrays, run_stage, save_atomic, save_npz
from flamejax.calibrate import calibrate_simon_says, calibrated_model
from flamejax.evaluate import to_csv
from flamejax.io import save_flame


def calibration_report(state, data, expression_names) -> dict:
    """A calibration's numbers (JSON-able): iterations; objective before/after (mm^2); the samples'
    mean weighted RMS residual before/after (mm); per Simon-Says expression (by name) the RMS of
    its samples' residuals (mm; one sample per expression with frames="mean"); stalled; history:
    the objective after each iteration (entry 0: the generic rig)."""
    expression = np.asarray(data.expression)
    before, after = np.asarray(state.residual_before) * 1e3, np.asarray(state.residual_after) * 1e3
    per_expression = {}
    for e in np.unique(expression[expression >= 0]):
        rows = expression == e
        per_expression[expression_names[e]] = {"before_mm": float(np.sqrt(np.mean(before[rows] ** 2))),
                                               "after_mm": float(np.sqrt(np.mean(after[rows] ** 2)))}
    return {"iterations": int(state.iter_num), "objective_before": float(state.history[0]),
            "objective_after": float(state.value), "residual_before_mm": float(np.mean(before)),
            "residual_after_mm": float(np.mean(after)), "stalled": bool(state.stalled),
            "per_expression": per_expression,
            "history": [float(v) for v in np.asarray(state.history) if np.isfinite(v)]}


def run(cfg: CalibrateConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Calibrate the selected performers and write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    model, cs = world.generic.model, world.control_set
    rows, reports, results, paths = [], {}, {}, {}
    for performer in cfg.selected(world):
        ctx = performer_context(world, performer, cfg)
        start = time.perf_counter()
        result, state = calibrate_simon_says(model, world.generic.rig, ctx.beta, ctx.data, ctx.combinations,
                                             cfg.calibration)
        jax.block_until_ready(result)
        seconds = time.perf_counter() - start
        report = {"performer": performer, "tracked_by": cfg.tracked_by,
                  **calibration_report(state, ctx.data, cs.simon_says.expression_names), "seconds": seconds}
        progress(f"  {performer}: {report['iterations']} iterations in {seconds:.1f} s, objective "
                 f"{report['objective_before']:.4f} -> {report['objective_after']:.4f} mm^2, residual "
                 f"{report['residual_before_mm']:.3f} -> {report['residual_after_mm']:.3f} mm")
        rows.append({k: v for k, v in report.items() if k not in ("per_expression", "history")})
        reports[performer], results[performer] = report, result
        logger.log_history(f"calibrated/{performer}/{cfg.tracked_by}/history", report["history"])
    check_finite(rows)   # nothing is written for a diverged calibration
    for performer, result in results.items():
        folder = out_dir / performer
        folder.mkdir(parents=True, exist_ok=True)
        save_atomic(folder / "flame_calibrated.npz", lambda tmp: save_flame(calibrated_model(model, result), tmp))
        save_npz(folder / "rig_calibrated.npz", **rig_arrays(result.rig))
        write_atomic(folder / "calibration.json", json.dumps(reports[performer], indent=1))
        for name in ("flame_calibrated.npz", "rig_calibrated.npz", "calibration.json"):
            paths[f"{performer}/{name}"] = folder / name
    write_atomic(out_dir / "calibration.csv", to_csv(rows))
    paths["calibration.csv"] = out_dir / "calibration.csv"
    if rows:
        logger.log_table("calibration", list(rows[0]), [list(r.values()) for r in rows])
    logger.summary({f"{r['performer']}/residual_after_mm": r["residual_after_mm"] for r in rows})
    return finish_job(cfg, out_dir, text, paths, {"seconds": {"world": world_s, "calibration": sum(r["seconds"] for r in rows)}})


@hydra.main(config_path="../conf", config_name="calibrate", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("calibrate", dcfg, CalibrateConfig, run)


if __name__ == "__main__":
    main()
