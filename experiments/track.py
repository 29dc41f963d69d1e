"""Tracking = rig inversion of one take per performer, from conf/track.yaml.

    python -m experiments.track                                    # pangram, calibrated rig, every performer
    python -m experiments.track take=rom1 rig=generic performers=[performer01] tracker.l1=1e-2
    python -m experiments.track rig=finetuned finetune=default max_frames=120

Per selected performer: the rig (``rig``: "generic"; "calibrated" on the Simon-Says take as
``tracked_by`` saw it, as experiments.calibrate; "finetuned": calibrated, then the finetune
group's stages), then :func:`flamejax.track.track_controls` on ``take`` as ``tracked_by`` saw it
(canonical pose; at most ``max_frames`` consecutive frames from the middle of the take) with the
tracker group's weights and solver. A frame is valid when the tracker did not lose it (always, on
the synthetic world) and its solution is finite; an invalid frame's controls are never written as
values. Writes into the job folder, each file atomically, ``run.json`` last
(:mod:`flamejax.io.animation` writes and reads the controls files):

- ``<performer>/controls.csv``: a ``frame`` column (the tracker's frame id; on the synthetic world
  the frame's index in the take), a ``valid`` column (1/0) only when some frame is invalid, then
  one column per control of the world's control set (its names, in the rig's column order), one
  row per tracked frame, values in [0, 1] (empty cells on invalid frames);
- ``<performer>/controls.npz``: ``controls`` (T, K) float32 (the same numbers; NaN on invalid
  frames), ``names`` (K,), ``frames`` (T,) int64, ``valid`` (T,) bool, ``fps`` (0-d, the take's
  frame rate); per frame ``residual_mm`` (T,) (weighted RMS vertex distance of the rig at the
  solution to the tracked mesh), ``iterations`` (T,), ``objective`` (T,) (mm^2), ``converged`` (T,);
- ``<performer>/live_link.csv``, when the world's control set is ARKit's: the same take as a Live
  Link Face recording (Unreal's LiveLinkFaceImporter reads it): the 52 blendshapes, the tracker's
  head rotation (global pose composed with the neck's) as HeadYaw/Pitch/Roll in radians, eyes 0;
  timecodes = frame id at the take's fps; invalid frames hold the last valid frame;
- ``track.csv``: one row per performer: frames, valid frames, mean residual (mm) and iterations
  and the share of converged frames (over the valid frames), sparsity and tweakers of the
  solution (:mod:`flamejax.metrics`), the rig's build and the tracking's seconds;
- ``config.yaml``, ``run.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, NamedTuple

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from experiments.configs import TrackConfig
from experiments.figures import take_window
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.table1 import load_world
from experiments.stages import build_rigs, finish_job, performer_context, run_stage, take_geometry
from flamejax.evaluate import Variant, VariantContext, to_csv
from flamejax.io.animation import write_controls_csv, write_controls_npz, write_live_link_csv
from flamejax.metrics import sparsity, tweaker_mean
from flamejax.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from flamejax.semantic.controls import ControlSet
from flamejax.synthetic.world import World, take_frame_ids, take_valid
from flamejax.track import inversion_problem, track_controls


class Tracked(NamedTuple):
    """One performer's tracked take: frames (T,) the tracker's frame ids (indices in the take on
    the synthetic world); controls (T, K); state: the tracker's per-frame InversionState (NumPy);
    seconds: the tracking's wall time; valid (T,) bool: the tracker kept the frame and the
    solution is finite; fps: the take's frame rate; head_pose (T, 3) axis-angle: the tracker's
    head rotation (global pose composed with the neck's)."""

    frames: np.ndarray
    controls: np.ndarray
    state: object
    seconds: float
    valid: np.ndarray
    fps: float
    head_pose: np.ndarray


def head_pose(global_pose, neck_pose) -> np.ndarray:
    """(T, 3) axis-angle of the head's rotation, R_global @ R_neck (the neck is the root's child)."""
    rotation = axis_angle_to_matrix(jnp.asarray(global_pose)) @ axis_angle_to_matrix(jnp.asarray(neck_pose))
    return np.asarray(matrix_to_axis_angle(rotation), np.float64)


def track_take(world: World, ctx: VariantContext, variant: Variant, cfg: TrackConfig) -> Tracked:
    """Invert ``cfg.take`` (at most ``cfg.max_frames`` consecutive frames from its middle) of the
    context's performer, as its tracker saw it, with ``variant``'s basis and rig."""
    geometry = take_geometry(world, ctx, cfg.take)
    window = take_window(len(geometry), cfg.max_frames)
    problem = inversion_problem(world.generic.model, variant.rig, ctx.beta, tweakers=ctx.tweakers,
                                exprdirs=variant.exprdirs)
    start = time.perf_counter()
    controls, state = track_controls(problem, geometry[window], cfg.tracker.weights, cfg.tracker.inversion)
    controls = np.asarray(jax.block_until_ready(controls))
    seconds = time.perf_counter() - start
    state = jax.tree_util.tree_map(np.asarray, state)
    valid = (take_valid(world, ctx.performer, cfg.take)[window] & np.isfinite(controls).all(1)
             & np.isfinite(state.residual))
    seen = world.tracked[ctx.tracker][ctx.performer][cfg.take]
    return Tracked(take_frame_ids(world, ctx.performer, cfg.take)[window], controls, state, seconds, valid,
                   float(world.sequences[ctx.performer][cfg.take].fps),
                   head_pose(np.asarray(seen.global_pose)[window], np.asarray(seen.neck_pose)[window]))


def write_controls(folder: Path, control_set: ControlSet, tracked: Tracked) -> dict:
    """``controls.csv``, ``controls.npz`` and, for the ARKit control set, ``live_link.csv`` (module
    doc) into ``folder`` -> {file name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    names, s, valid = control_set.names, tracked.state, tracked.valid
    controls = tracked.controls.astype(np.float32)
    # the valid column only when it says something: the synthetic world's takes stay frame + controls
    write_controls_csv(folder / "controls.csv", names, controls, frame_ids=tracked.frames,
                       valid=None if valid.all() else valid)
    write_controls_npz(folder / "controls.npz", names, controls, frame_ids=tracked.frames, valid=valid,
                       fps=tracked.fps, residual_mm=np.asarray(s.residual) * 1e3, iterations=np.asarray(s.iter_num),
                       objective=np.asarray(s.value), converged=np.asarray(s.converged))
    files = ["controls.csv", "controls.npz"]
    if control_set.name == "arkit":
        write_live_link_csv(folder / "live_link.csv", names, controls, fps=tracked.fps,
                            head_rotation=tracked.head_pose, valid=valid, frame_ids=tracked.frames)
        files.append("live_link.csv")
    return {name: folder / name for name in files}


def summary_row(performer: str, cfg: TrackConfig, tracked: Tracked, tweakers, rig_seconds: float) -> dict:
    """track.csv's row of one performer (module doc)."""
    s = tracked.state
    ok = tracked.valid if tracked.valid.any() else np.ones_like(tracked.valid)   # averages over valid frames
    return {"performer": performer, "tracked_by": cfg.tracked_by, "take": cfg.take, "rig": cfg.rig,
            "frames": len(tracked.frames), "valid_frames": int(tracked.valid.sum()),
            "residual_mm": float(np.mean(s.residual[ok])) * 1e3,
            "iterations": float(np.mean(s.iter_num[ok])), "converged": float(np.mean(s.converged[ok])),
            "sparsity": sparsity(tracked.controls[ok]), "tweakers": tweaker_mean(tracked.controls[ok], tweakers),
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
    paths, rows = {}, []
    for performer, tracked, row in track_performers(cfg, world, logger, progress):
        for name, path in write_controls(out_dir / performer, world.control_set, tracked).items():
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
