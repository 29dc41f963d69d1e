"""Retargeting a performance onto avatars, from conf/retarget.yaml (+ the conf/retarget/ group).

    python -m experiments.retarget                                 # pangram, calibrated rig, 2 random avatars
    python -m experiments.retarget retarget.n_avatars=4 retarget.seed=3 write_obj=true max_obj_frames=30
    python -m experiments.retarget rig=generic take=rom1 performers=[performer01] max_frames=90

Per selected performer: track ``take`` as experiments.track does (``rig``, default the performer's
calibrated rig; at most ``max_frames`` consecutive frames), then drive each avatar of the
``retarget`` group (random FLAME identities, experiments/figures.py's ``random_avatars``) with
the solved controls through the *generic* rig (:func:`flamejax.retarget.retarget`, canonical head
pose): the controls carry the performance, the avatar's identity and the generic rig make the
geometry. Writes into the job folder, each file atomically, ``run.json`` last:

- ``avatars.npz``: ``shapes`` (A, S) the avatars' FLAME identities (the same for every performer);
- ``<performer>/controls.csv``, ``<performer>/controls.npz``: the solved controls, as experiments.track;
- ``<performer>/avatarNN/meshes.npz``: ``vertices`` (T, V, 3) float32 metres, ``faces`` (F, 3)
  int32, ``frames`` (T,) the take's frame indices, ``shape`` (S,) the avatar's identity;
- with ``write_obj``: ``<performer>/avatarNN/obj/frame_XXXXX.obj`` (trimesh) for the first
  ``max_obj_frames`` frames (XXXXX: the frame's index in the take);
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
from experiments.stages import finish_job, load_world, run_stage, save_atomic, save_npz
from flamejax.evaluate import to_csv
from flamejax.retarget import retarget


def write_obj(folder: Path, vertices: np.ndarray, faces: np.ndarray, frames: np.ndarray) -> dict:
    """One OBJ per frame, ``folder/frame_XXXXX.obj`` -> {relative name: path}."""
    import trimesh   # only when OBJ files are asked for

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for v, f in zip(vertices, frames):
        path = folder / f"frame_{int(f):05d}.obj"
        save_atomic(path, lambda tmp, v=v: trimesh.Trimesh(v, faces, process=False).export(tmp))
        paths[path.name] = path
    return paths


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
        for name, path in write_controls(folder, world.control_set.names, tracked).items():
            paths[f"{performer}/{name}"] = path
        for i, shape in enumerate(avatars):
            avatar = folder / f"avatar{i:02d}"
            avatar.mkdir(parents=True, exist_ok=True)
            vertices = np.asarray(retarget(model, rig, tracked.controls, shape=shape), np.float32)
            save_npz(avatar / "meshes.npz", vertices=vertices, faces=faces, frames=tracked.frames, shape=shape)
            paths[f"{performer}/{avatar.name}/meshes.npz"] = avatar / "meshes.npz"
            if cfg.write_obj:
                n = cfg.max_obj_frames
                for name, path in write_obj(avatar / "obj", vertices[:n], faces, tracked.frames[:n]).items():
                    paths[f"{performer}/{avatar.name}/obj/{name}"] = path
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
