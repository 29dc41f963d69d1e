"""Simon-Says calibration of the synthetic world's performers, from conf/calibrate.yaml.

    python -m experiments.calibrate                                # every performer, as OS1 tracked them
    python -m experiments.calibrate performers=[performer00] tracked_by=OS2 calibration.reg=1e-2
    python -m experiments.calibrate flame_formats=[npz] report=false   # fewer files
    python -m experiments.calibrate experiment=quick               # the tests' tiny world

Per selected performer, :func:`flamejax.calibrate.calibrate_simon_says` on their Simon-Says take
as ``tracked_by`` saw it (canonical pose, the world's hold labels and Simon-Says masks, the control
set's combinations: exactly the "calibrated" variant of :mod:`flamejax.evaluate`). Writes into the
job folder, each file atomically, ``run.json`` last:

- ``<performer>/flame_calibrated.pkl`` and/or ``.npz`` (``flame_formats``, default both): the FLAME
  model with the calibrated expression basis (:func:`flamejax.io.save_flame` of
  :func:`flamejax.calibrate.calibrated_model`) in FLAME's own layout, a drop-in for a tracker's
  ``generic_model.pkl``: shapedirs (V, 3, 300 + E) float64 with the calibrated basis in columns
  300.., posedirs (V, 3, 36), J_regressor (5, V) (a SciPy ``csc_matrix`` in the pickle, dense in the
  npz), weights (V, 5), kintree_table (2, 5), f (F, 3) uint32; plain NumPy / SciPy objects (no
  chumpy), read with ``pickle.load(f, encoding="latin1")``, :func:`flamejax.load_flame`,
  ``smplx.FLAME``;
- ``<performer>/rig_calibrated.npz``: the semantic rig (basis (P, K), offset (P,), control names,
  n_expr, jaw_convention, has_neck; the generic one unless ``calibration.parameters`` is rig/both);
- ``<performer>/calibration.json``: iterations, objective before/after (mm^2), the final gradient
  norm, stalled, mean residual before/after (mm), per Simon-Says expression the residual
  before/after (mm), the combinations' largest drift (mm), the objective per iteration, seconds;
- ``<performer>/report/`` (``report``, default true): ``report.md`` and its figures, what to check
  before trusting the calibration (:mod:`experiments.calibration_report`: samples used and missing
  expressions, the solver's run, the residual table per expression, residual bars, the objective
  per iteration, rendered worst / most improved expressions with error maps, each control's motion
  before / after, ``control_change.csv``);
- ``calibration.csv``: one row per performer (the numbers of calibration.json but the lists);
- ``config.yaml`` (the resolved config) and ``run.json`` (world key, timings, device).

What the stage entry points share is in :mod:`experiments.stages`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import hydra
import jax
import numpy as np
from omegaconf import DictConfig

from experiments.calibration_report import CalibrationRun, write_report
from experiments.configs import CalibrateConfig, ConfigError
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.table1 import load_world
from experiments.stages import finish_job, performer_context, rig_arrays, run_stage, save_atomic, save_npz
from flamejax.calibrate import calibrate_simon_says, calibrated_model
from flamejax.evaluate import to_csv
from flamejax.io import save_flame

FLAME_FORMATS = ("pkl", "npz")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrateStageConfig(CalibrateConfig):
    """conf/calibrate.yaml: :class:`~experiments.configs.CalibrateConfig` (who is calibrated, on
    what) and what is written: flame_formats, the FLAME files (a non-empty list of "pkl", "npz":
    ``flame_calibrated.<ext>`` each); report, the per-performer report folder. Here, not in
    configs.py, because only this stage writes them (track/finetune derive from CalibrateConfig)."""

    flame_formats: tuple = FLAME_FORMATS
    report: bool = True

    def __post_init__(self):
        super().__post_init__()
        formats = self.flame_formats
        if not formats or any(f not in FLAME_FORMATS for f in formats) or len(set(formats)) != len(formats):
            raise ConfigError(f"flame_formats must be a non-empty list of distinct {list(FLAME_FORMATS)}, "
                              f"got {list(formats)}")
        if not isinstance(self.report, bool):
            raise ConfigError(f"report must be true or false, got {self.report!r}")

    @classmethod
    def _own(cls, d: dict) -> dict:
        d = super()._own(d)
        if "flame_formats" in d:
            value = d["flame_formats"]
            d["flame_formats"] = (value,) if isinstance(value, str) else tuple(value or ())
        return d


def calibration_numbers(state, data, expression_names) -> dict:
    """A calibration's numbers (JSON-able): iterations; objective before/after (mm^2); the final
    gradient norm (normalised units, compared with ``calibration.tol``); stalled; the samples' mean
    weighted RMS residual before/after (mm); per Simon-Says expression (by name) the RMS of its
    samples' residuals (mm; one sample per expression with frames="mean"); the combinations'
    largest RMS drift from the generic rig (mm); history: the objective after each iteration
    (entry 0: the generic rig)."""
    expression = np.asarray(data.expression)
    before, after = np.asarray(state.residual_before) * 1e3, np.asarray(state.residual_after) * 1e3
    per_expression = {}
    for e in np.unique(expression[expression >= 0]):
        rows = expression == e
        per_expression[expression_names[e]] = {"before_mm": float(np.sqrt(np.mean(before[rows] ** 2))),
                                               "after_mm": float(np.sqrt(np.mean(after[rows] ** 2)))}
    drift = np.asarray(state.combination_drift) * 1e3
    return {"iterations": int(state.iter_num), "objective_before": float(state.history[0]),
            "objective_after": float(state.value), "gradient_norm": float(state.error),
            "residual_before_mm": float(np.mean(before)), "residual_after_mm": float(np.mean(after)),
            "stalled": bool(state.stalled), "combination_drift_max_mm": float(drift.max(initial=0.0)),
            "per_expression": per_expression,
            "history": [float(v) for v in np.asarray(state.history) if np.isfinite(v)]}


def run(cfg: CalibrateStageConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Calibrate the selected performers and write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    model, cs = world.generic.model, world.control_set
    rows, numbers, done, paths = [], {}, {}, {}
    for performer in cfg.selected(world):
        ctx = performer_context(world, performer, cfg)
        start = time.perf_counter()
        result, state = calibrate_simon_says(model, world.generic.rig, ctx.beta, ctx.data, ctx.combinations,
                                             cfg.calibration)
        jax.block_until_ready(result)
        seconds = time.perf_counter() - start
        report = {"performer": performer, "tracked_by": ctx.tracker,
                  **calibration_numbers(state, ctx.data, cs.simon_says.expression_names), "seconds": seconds}
        progress(f"  {performer}: {report['iterations']} iterations in {seconds:.1f} s, objective "
                 f"{report['objective_before']:.4f} -> {report['objective_after']:.4f} mm^2, residual "
                 f"{report['residual_before_mm']:.3f} -> {report['residual_after_mm']:.3f} mm")
        rows.append({k: v for k, v in report.items() if k not in ("per_expression", "history")})
        numbers[performer], done[performer] = report, (ctx, result, state)
        logger.log_history(f"calibrated/{performer}/{ctx.tracker}/history", report["history"])
    check_finite(rows)   # nothing is written for a diverged calibration
    report_s = 0.0
    for performer, (ctx, result, state) in done.items():
        folder = out_dir / performer
        folder.mkdir(parents=True, exist_ok=True)
        calibrated = calibrated_model(model, result)
        names = [f"flame_calibrated.{ext}" for ext in cfg.flame_formats]
        for name in names:
            save_atomic(folder / name, lambda tmp: save_flame(calibrated, tmp))
        save_npz(folder / "rig_calibrated.npz", **rig_arrays(result.rig))
        write_atomic(folder / "calibration.json", json.dumps(numbers[performer], indent=1))
        for name in (*names, "rig_calibrated.npz", "calibration.json"):
            paths[f"{performer}/{name}"] = folder / name
        if cfg.report:
            start = time.perf_counter()
            written = write_report(folder / "report", CalibrationRun(
                performer, ctx.tracker, model, world.generic.rig, ctx.beta, ctx.data, np.asarray(ctx.simon_says.hold),
                result, numbers[performer], cs.simon_says.expression_names, cs.names,
                (np.asarray(state.residual_before), np.asarray(state.residual_after)), report_settings(cfg)))
            report_s += time.perf_counter() - start
            paths.update({f"{performer}/report/{p.name}": p for p in written.values()})
            logger.log_image(f"calibrated/{performer}/residuals", written["residuals"])
    if cfg.report:
        progress(f"  reports in {report_s:.1f} s")
    write_atomic(out_dir / "calibration.csv", to_csv(rows))
    paths["calibration.csv"] = out_dir / "calibration.csv"
    if rows:
        logger.log_table("calibration", list(rows[0]), [list(r.values()) for r in rows])
    logger.summary({f"{r['performer']}/residual_after_mm": r["residual_after_mm"] for r in rows})
    return finish_job(cfg, out_dir, text, paths, {"seconds": {"world": world_s, "calibration": sum(r["seconds"] for r in rows),
                                                              "report": report_s}})


def report_settings(cfg: CalibrateStageConfig) -> dict:
    """What the report shows of the run's settings (and reads: tol and maxiter decide whether the
    solver converged or stopped)."""
    c = cfg.calibration
    return {"parameters": c.parameters, "solver": c.solver, "reg": c.reg, "w_combo": c.w_combo, "tol": c.tol,
            "maxiter": c.maxiter, "use_masks": c.use_masks, "calibration_frames": cfg.calibration_frames}


@hydra.main(config_path="../conf", config_name="calibrate", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("calibrate", dcfg, CalibrateStageConfig, run)


if __name__ == "__main__":
    main()
