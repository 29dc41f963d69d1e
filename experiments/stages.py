"""What the stage entry points share (calibrate.py, track.py, finetune.py, retarget.py,
evaluate.py): the job wrapper :func:`run_stage` (typed config, skip a finished job, exit code 2 on
a bad config, ``run.json`` failed on an error), atomic binary writes, the world, a performer's
calibration context and rigs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.configs import ConfigError, StageConfig, user_data
from experiments.jobs import finished, read_status, write_atomic, write_done, write_failed
from experiments.loggers import Logger, make_logger
from experiments.table1 import logged_builder, resolved_text, use_compilation_cache
from flamejax.evaluate import (TRAINING_TAKE, Variant, VariantContext, baseline_variant, calibrated_variant,
                               calibration_samples, finetuned_variant)
from flamejax.semantic.rig import SemanticRig
from flamejax.synthetic.world import World, tracked_geometry

# a stage's run: (typed config, job folder, config.yaml text, progress, logger) -> {name: path written}
StageRun = Callable[[StageConfig, Path, str, Callable[[str], None], Logger], dict]


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


def performer_context(world: World, performer: str, cfg: StageConfig) -> VariantContext:
    """What :mod:`flamejax.evaluate`'s variant builders see for (performer, the config's tracker,
    :meth:`~experiments.configs.StageConfig.tracker_of`): the Simon-Says take as that tracker saw
    it, its calibration samples, the combinations and the stage's settings; no variants built yet."""
    model, cs = world.generic.model, world.control_set
    tracker = cfg.tracker_of(world)
    seq, geometry, data = calibration_samples(world, performer, tracker, cfg.calibration_frames)
    beta = jnp.asarray(world.performers[performer].beta, model.dtype)
    combinations = jnp.asarray(cs.simon_says.combination_targets, model.dtype)
    return VariantContext(world, performer, tracker, beta, seq, geometry, data, combinations,
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
        variant = logged_builder(builder, logger)(ctx._replace(variants=dict(built)))
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
        if user_data(cfg):   # a user's files may change under the same config: a finished job is
            # only current for the files it read
            text += f"# data files: {cfg.data.world.key()}\n"
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


def take_geometry(world: World, ctx: VariantContext, take: str) -> np.ndarray:
    """(T, V, 3) metres: ``take`` of the context's performer as its tracker saw it, canonical pose
    (the Simon-Says take: the context's own copy)."""
    if take == TRAINING_TAKE:
        return ctx.simon_says_geometry
    return tracked_geometry(world, ctx.tracker, ctx.performer, take)
