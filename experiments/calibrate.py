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

This module also holds what the other stage entry points share (experiments/track.py,
finetune.py, retarget.py, evaluate.py): the job wrapper :func:`run_stage` (typed config, skip a
finished job, exit code 2 on a bad config, ``run.json`` failed on an error), the world, the
performer's calibration context and rigs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.configs import CalibrateConfig, ConfigError, StageConfig
from experiments.jobs import check_finite, finished, read_status, write_atomic, write_done, write_failed
from experiments.loggers import Logger, make_logger
from experiments.table1 import _logged, resolved_text, use_compilation_cache
from flamejax.calibrate import calibrate_simon_says, calibrated_model
from flamejax.evaluate import (TRAINING_TAKE, Variant, VariantContext, baseline_variant, calibrated_variant,
                               calibration_samples, finetuned_variant, to_csv)
from flamejax.io import save_flame
from flamejax.semantic.rig import SemanticRig
from flamejax.synthetic.world import World, load_or_make_world, tracked_geometry

# a stage's run: (typed config, job folder, config.yaml text, progress, logger) -> {name: path written}
StageRun = Callable[[StageConfig, Path, str, Callable[[str], None], Logger], dict]


# ---------------------------------------------------------------- what the stages share


def save_atomic(path: Path, save: Callable[[Path], None]) -> None:
    """Binary counterpart of :func:`experiments.jobs.write_atomic`: ``save(tmp)`` writes a temporary
    file next to ``path`` (same suffix, which :func:`flamejax.io.save_flame` and ``np.savez`` read
    the format from), then it is renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save(tmp)
    os.replace(tmp, path)


def save_npz(path: Path, **arrays) -> None:
    """``np.savez`` atomically."""
    save_atomic(path, lambda tmp: np.savez(tmp, **arrays))


def rig_arrays(rig: SemanticRig) -> dict:
    """A semantic rig as npz arrays: basis (P, K), offset (P,), controls (K,) names, and its static
    fields n_expr, jaw_convention, has_neck (0-d)."""
    return dict(basis=np.asarray(rig.basis), offset=np.asarray(rig.offset), controls=np.asarray(rig.controls, str),
                n_expr=np.asarray(rig.n_expr), jaw_convention=np.asarray(rig.jaw_convention),
                has_neck=np.asarray(rig.has_neck))


def load_world(cfg: StageConfig, progress: Callable[[str], None]) -> tuple[World, float]:
    """The world of ``cfg.data`` (read from / cached in ``data.cache_dir``), checked against the
    config (a performer or tracker it lacks is a ConfigError) -> (world, seconds). The one place
    that knows the data is the synthetic world: a user's data folder would be loaded here."""
    start = time.perf_counter()
    world = load_or_make_world(cfg.data.world, cfg.data.cache_dir)
    cfg.check_world(world)
    seconds = time.perf_counter() - start
    progress(f"world {cfg.data.world.key()} ({cfg.data.world.size}, {world.generic.model.n_vertices} vertices, "
             f"{len(world.performers)} performers) in {seconds:.1f} s on {jax.devices()[0]}")
    return world, seconds


def performer_context(world: World, performer: str, cfg: StageConfig) -> VariantContext:
    """What :mod:`flamejax.evaluate`'s variant builders see for (performer, ``cfg.tracked_by``):
    the Simon-Says take as that tracker saw it, its calibration samples, the combinations and
    the stage's settings; no variants built yet."""
    model, cs = world.generic.model, world.control_set
    seq, geometry, data = calibration_samples(world, performer, cfg.tracked_by, cfg.calibration_frames)
    beta = jnp.asarray(world.performers[performer].beta, model.dtype)
    combinations = jnp.asarray(cs.simon_says.combination_targets, model.dtype)
    return VariantContext(world, performer, cfg.tracked_by, beta, seq, geometry, data, combinations,
                          cfg.calibration, cfg.tracker.weights, cfg.tracker.inversion,
                          np.asarray(cs.tweaker_mask, bool), {})


def build_rigs(ctx: VariantContext, rig: str, cfg: StageConfig, logger: Logger,
               progress: Callable[[str], None]) -> dict[str, Variant]:
    """The variants up to ``rig`` ("generic": baseline; "calibrated"; "finetuned": calibrated, then
    fine-tuned with ``cfg.finetune``), built in order as :func:`flamejax.evaluate.evaluate_world`
    builds them -> {variant name: Variant}; the last one is ``rig``'s. Solver histories go to
    ``logger``."""
    chain = {"generic": [baseline_variant], "calibrated": [calibrated_variant],
             "finetuned": [calibrated_variant, finetuned_variant(cfg.finetune)]}[rig]
    built: dict[str, Variant] = {}
    for builder in chain:
        start = time.perf_counter()
        variant = _logged(builder, logger)(ctx._replace(variants=dict(built)))
        jax.block_until_ready((variant.exprdirs, variant.rig))
        built[variant.name] = variant
        shown = {k: v for k, v in variant.info.items() if k != "history"}
        progress(f"  {ctx.performer} {ctx.tracker}: {variant.name} rig in {time.perf_counter() - start:.1f} s"
                 + (f" {shown}" if shown else ""))
    return built


def run_stage(name: str, dcfg: DictConfig, config_cls: type, run: StageRun) -> None:
    """The body of a stage's ``main``: Hydra's config -> ``config_cls.from_dict`` -> ``run`` in the
    job folder (HydraConfig's output_dir), skipped when the folder already holds this config's
    finished job. A failure is recorded in ``run.json`` (status failed, with the config); exit
    code 2 for a bad config (:class:`ConfigError`, the key named), 1 for any other error; in a
    multirun the sweep goes on with its next job."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    text = None
    try:
        text = resolved_text(dcfg)
        config = yaml.safe_load(text)
        cfg = config_cls.from_dict(config)
        if finished(out_dir, text):
            print(f"{name}: {out_dir} already holds this job's results (status done); skipped")
            return
        if (out_dir / "run.json").exists():
            print(f"{name}: re-running {out_dir} (was {(read_status(out_dir) or {}).get('status', 'unreadable')})")
        use_compilation_cache(cfg.compilation_cache)
        out_dir.mkdir(parents=True, exist_ok=True)
        with make_logger(cfg.logger, out_dir, config, job_name=f"{cfg.task_name}/{out_dir.name}") as logger:
            paths = run(cfg, out_dir, text, lambda msg: print(msg, flush=True), logger)
    except Exception as e:  # noqa: BLE001 -- any failure is recorded in the job directory
        write_failed(out_dir, e, text)
        kind = "bad config" if isinstance(e, ConfigError) else "failed"
        print(f"{name}: {kind}: {e}\n  recorded in {out_dir / 'run.json'}", file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            return
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    print(f"wrote to {out_dir}:")
    for path in paths.values():
        print(f"  {path}")


def finish_job(cfg: StageConfig, out_dir: Path, text: str, paths: dict, info: dict) -> dict:
    """Write ``config.yaml`` and then ``run.json`` (status done, the world key, device and
    ``info``) -> ``paths`` with both added."""
    write_atomic(out_dir / "config.yaml", text)
    write_done(out_dir, {"world_key": cfg.data.world.key(), "device": str(jax.devices()[0]), **info})
    return {**paths, "config.yaml": out_dir / "config.yaml", "run.json": out_dir / "run.json"}


# ---------------------------------------------------------------- calibration


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


def take_geometry(world: World, ctx: VariantContext, take: str) -> np.ndarray:
    """(T, V, 3) metres: ``take`` of the context's performer as its tracker saw it, canonical pose
    (the Simon-Says take: the context's own copy)."""
    if take == TRAINING_TAKE:
        return ctx.simon_says_geometry
    return tracked_geometry(world, ctx.tracker, ctx.performer, take)


@hydra.main(config_path="../conf", config_name="calibrate", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("calibrate", dcfg, CalibrateConfig, run)


if __name__ == "__main__":
    main()
