"""Tracking = rig inversion of one take per performer, from conf/track.yaml.

    python -m experiments.track                                    # pangram, calibrated rig, every performer
    python -m experiments.track take=rom1 rig=generic performers=[performer01] tracker.l1=1e-2
    python -m experiments.track rig=finetuned finetune=default max_frames=120

Per selected performer: the rig (``rig``: "generic"; "calibrated" on the Simon-Says take as
``tracked_by`` saw it, as experiments.calibrate; "finetuned": calibrated, then the finetune
group's stages), then :func:`flamejax.track.track_controls` on ``take`` as ``tracked_by`` saw it
(canonical pose; at most ``max_frames`` consecutive frames from the middle of the take) with the
tracker group's weights and solver. Writes into the job folder, each file atomically, ``run.json``
last:

- ``<performer>/controls.csv``: a ``frame`` column (the frame's index in the take) then one
  column per control of the world's control set (its names, in the rig's column order), one row
  per tracked frame, values in [0, 1];
- ``<performer>/controls.npz``: ``controls`` (T, K) float32 (the same numbers), ``names`` (K,),
  ``frames`` (T,) int; per frame ``residual_mm`` (T,) (weighted RMS vertex distance of the rig at
  the solution to the tracked mesh), ``iterations`` (T,), ``objective`` (T,) (mm^2), ``converged`` (T,);
- ``track.csv``: one row per performer: frames, mean residual (mm) and iterations, the share of
  converged frames, sparsity and tweakers of the solution (:mod:`flamejax.metrics`), the rig's
  build and the tracking's seconds;
- ``config.yaml``, ``run.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, NamedTuple

import hydra
import jax
import numpy as np
from omegaconf import DictConfig

from experiments.configs import TrackConfig
from experiments.figures import take_window
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.stages import (build_rigs, finish_job, load_world, performer_context, run_stage, save_npz,
                                take_geometry)
from flamejax.evaluate import Variant, VariantContext, to_csv
from flamejax.metrics import sparsity, tweaker_mean
from flamejax.synthetic.world import World
from flamejax.track import inversion_problem, track_controls


class Tracked(NamedTuple):
    """One performer's tracked take: frames (T,) indices in the take; controls (T, K); state: the
    tracker's per-frame InversionState (NumPy); seconds: the tracking's wall time."""

    frames: np.ndarray
    controls: np.ndarray
    state: object
    seconds: float


def track_take(world: World, ctx: VariantContext, variant: Variant, cfg: TrackConfig) -> Tracked:
    """Invert ``cfg.take`` (at most ``cfg.max_frames`` consecutive frames from its middle) of the
    context's performer, as its tracker saw it, with ``variant``'s basis and rig."""
    geometry = take_geometry(world, ctx, cfg.take)
    frames = take_window(len(geometry), cfg.max_frames)
    problem = inversion_problem(world.generic.model, variant.rig, ctx.beta, tweakers=ctx.tweakers,
                                exprdirs=variant.exprdirs)
    start = time.perf_counter()
    controls, state = track_controls(problem, geometry[frames], cfg.tracker.weights, cfg.tracker.inversion)
    controls = np.asarray(jax.block_until_ready(controls))
    return Tracked(frames, controls, jax.tree_util.tree_map(np.asarray, state), time.perf_counter() - start)


def write_controls(folder: Path, names, tracked: Tracked) -> dict:
    """``controls.csv`` and ``controls.npz`` (module doc) into ``folder`` -> {file name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ",".join(["frame", *names])
    lines = [header] + [",".join([str(int(f))] + [repr(float(v)) for v in row])
                        for f, row in zip(tracked.frames, tracked.controls.astype(np.float32))]
    write_atomic(folder / "controls.csv", "\n".join(lines) + "\n")
    s = tracked.state
    save_npz(folder / "controls.npz", controls=tracked.controls.astype(np.float32), names=np.asarray(names, str),
             frames=np.asarray(tracked.frames, np.int64), residual_mm=np.asarray(s.residual) * 1e3,
             iterations=np.asarray(s.iter_num), objective=np.asarray(s.value), converged=np.asarray(s.converged))
    return {name: folder / name for name in ("controls.csv", "controls.npz")}


def summary_row(performer: str, cfg: TrackConfig, tracked: Tracked, tweakers, rig_seconds: float) -> dict:
    """track.csv's row of one performer (module doc)."""
    s = tracked.state
    return {"performer": performer, "tracked_by": cfg.tracked_by, "take": cfg.take, "rig": cfg.rig,
            "frames": len(tracked.frames), "residual_mm": float(np.mean(s.residual)) * 1e3,
            "iterations": float(np.mean(s.iter_num)), "converged": float(np.mean(s.converged)),
            "sparsity": sparsity(tracked.controls), "tweakers": tweaker_mean(tracked.controls, tweakers),
            "rig_seconds": rig_seconds, "track_seconds": tracked.seconds}


def track_performers(cfg: TrackConfig, world: World, logger: Logger, progress: Callable[[str], None]):
    """Build the rig and track the take of every selected performer -> [(performer, Tracked,
    track.csv row)]."""
    out = []
    for performer in cfg.selected(world):
        ctx = performer_context(world, performer, cfg)
        start = time.perf_counter()
        variant = list(build_rigs(ctx, cfg.rig, cfg, logger, progress).values())[-1]
        rig_seconds = time.perf_counter() - start
        tracked = track_take(world, ctx, variant, cfg)
        row = summary_row(performer, cfg, tracked, ctx.tweakers, rig_seconds)
        progress(f"  {performer}: {cfg.take} ({row['frames']} frames) tracked in {tracked.seconds:.1f} s, residual "
                 f"{row['residual_mm']:.3f} mm, {row['iterations']:.1f} iterations, sparsity {row['sparsity']:.3f}")
        out.append((performer, tracked, row))
    check_finite([row for _, _, row in out])
    return out


def run(cfg: TrackConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Track the selected performers and write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    names = world.control_set.names
    paths, rows = {}, []
    for performer, tracked, row in track_performers(cfg, world, logger, progress):
        for name, path in write_controls(out_dir / performer, names, tracked).items():
            paths[f"{performer}/{name}"] = path
        rows.append(row)
    write_atomic(out_dir / "track.csv", to_csv(rows))
    paths["track.csv"] = out_dir / "track.csv"
    logger.log_table("track", list(rows[0]), [list(r.values()) for r in rows])
    logger.summary({f"{r['performer']}/{k}": r[k] for r in rows for k in ("residual_mm", "sparsity", "tweakers")})
    return finish_job(cfg, out_dir, text, paths, {"seconds": {"world": world_s},
                                                  "frames": {r["performer"]: r["frames"] for r in rows}})


@hydra.main(config_path="../conf", config_name="track", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("track", dcfg, TrackConfig, run)


if __name__ == "__main__":
    main()
