"""Retargeting a performance onto avatars, from conf/retarget.yaml (+ the conf/retarget/ group).

    python -m experiments.retarget                                 # pangram, calibrated rig, 2 random avatars
    python -m experiments.retarget retarget.n_avatars=4 retarget.seed=3 write_obj=true max_obj_frames=30
    python -m experiments.retarget write_obj=true mesh_format=ply          # PLY files instead of OBJ
    python -m experiments.retarget rig=generic take=rom1 performers=[performer01] max_frames=90

Per selected performer: track ``take`` as experiments.track does (``rig``, default the performer's
calibrated rig; at most ``max_frames`` consecutive frames), then drive each avatar of the
``retarget`` group (random FLAME identities, experiments/figures.py's ``random_avatars``) with
the solved controls through the *generic* rig (:func:`flamejax.retarget.retarget`, canonical head
pose): the controls carry the performance, the avatar's identity and the generic rig make the
geometry. Writes into the job folder, each file atomically, ``run.json`` last:

- ``avatars.npz``: ``shapes`` (A, S) the avatars' FLAME identities (the same for every performer);
- ``<performer>/controls.csv``, ``<performer>/controls.npz`` (and ``live_link.csv`` for the ARKit
  control set): the solved controls, as experiments.track;
- ``<performer>/avatarNN/meshes.npz``: ``vertices`` (T, V, 3) float32 metres (NaN on invalid
  frames), ``faces`` (F, 3) int32, ``frames`` (T,) the tracker's frame ids (the take's frame
  indices on the synthetic world), ``valid`` (T,) bool, ``shape`` (S,) the avatar's identity;
- with ``write_obj``: ``<performer>/avatarNN/<mesh_format>/frame_XXXXX.<mesh_format>`` (``obj`` or
  ``ply``, :func:`flamejax.io.write_mesh_sequence`: vertex order kept, written atomically) for the
  first ``max_obj_frames`` valid frames (XXXXX: the frame id);
- ``retarget.csv``: one row per performer (the tracking's numbers, as track.csv);
- ``config.yaml``, ``run.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import hydra
import numpy as np
from omegaconf import DictConfig

from experiments.configs import RetargetConfig
from experiments.figures import random_avatars
from experiments.jobs import write_atomic
from experiments.loggers import Logger
from experiments.track import track_performers, write_controls
from experiments.table1 import load_world
from experiments.stages import finish_job, run_stage, save_npz
from flamejax.evaluate import to_csv
from flamejax.io.meshes import write_mesh_sequence
from flamejax.retarget import retarget


def run(cfg: RetargetConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Track and retarget the selected performers; write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    model, rig = world.generic.model, world.generic.rig
    faces = np.asarray(model.faces, np.int32)
    a = cfg.retarget
    avatars = random_avatars(model.n_shape, a.n_avatars, seed=a.seed, n_coefficients=a.n_coefficients, scale=a.scale)
    tracked_all = track_performers(cfg, world, logger, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz(out_dir / "avatars.npz", shapes=avatars)
    paths, rows = {"avatars.npz": out_dir / "avatars.npz"}, []
    for performer, tracked, row in tracked_all:
        folder = out_dir / performer
        for name, path in write_controls(folder, world.control_set, tracked).items():
            paths[f"{performer}/{name}"] = path
        shown = np.flatnonzero(tracked.valid)[:cfg.max_obj_frames]   # mesh files: the first valid frames
        for i, shape in enumerate(avatars):
            avatar = folder / f"avatar{i:02d}"
            avatar.mkdir(parents=True, exist_ok=True)
            vertices = np.array(retarget(model, rig, tracked.controls, shape=shape), np.float32)   # a writable copy
            vertices[~tracked.valid] = np.nan   # a lost frame's mesh must not look like a real one
            save_npz(avatar / "meshes.npz", vertices=vertices, faces=faces, frames=tracked.frames,
                     valid=tracked.valid, shape=shape)
            paths[f"{performer}/{avatar.name}/meshes.npz"] = avatar / "meshes.npz"
            if cfg.write_obj:
                fmt = cfg.mesh_format
                for path in write_mesh_sequence(avatar / fmt, vertices[shown], faces, frame_ids=tracked.frames[shown],
                                                format=fmt):
                    paths[f"{performer}/{avatar.name}/{fmt}/{path.name}"] = path
        progress(f"  {performer}: {len(tracked.frames)} frames retargeted onto {len(avatars)} avatars")
        rows.append(row)
    write_atomic(out_dir / "retarget.csv", to_csv(rows))
    paths["retarget.csv"] = out_dir / "retarget.csv"
    logger.log_table("retarget", list(rows[0]), [list(r.values()) for r in rows])
    return finish_job(cfg, out_dir, text, paths, {"seconds": {"world": world_s}, "avatars": len(avatars),
                                                  "frames": {r["performer"]: r["frames"] for r in rows}})


@hydra.main(config_path="../conf", config_name="retarget", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("retarget", dcfg, RetargetConfig, run)


if __name__ == "__main__":
    main()
