"""Main job (for now): build the model, run the FLAME forward pass on a batch, write the results.

    python -m experiments.forward                       # embedded synthetic model
    python -m experiments.forward model=file model.path=/data/generic_model.pkl batch_size=256

Writes <run dir>/meshes/frame_XXX.obj, landmarks.npy (batch, 68, 3), params.npz and summary.json,
and prints where they went.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import trimesh
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import flamejax as fj
from experiments.configs import ConfigError, ForwardConfig


def sample_frames(key: jax.Array, model: fj.FlameModel, batch: int, expression_scale: float) -> fj.FlameParams:
    """A batch of plausible random frames: identity and expression ~ N(0, 1) (times the scale),
    jaw opening 0..0.35 rad, small head, neck and eye rotations, a few cm of translation."""
    k = jax.random.split(key, 7)
    jaw = jnp.stack([jax.random.uniform(k[2], (batch,), maxval=0.35),
                     0.03 * jax.random.normal(k[3], (batch,)), jnp.zeros(batch)], -1)
    return fj.FlameParams(
        shape=jax.random.normal(k[0], (batch, model.n_shape)),
        expression=expression_scale * jax.random.normal(k[1], (batch, model.n_expr)),
        global_pose=0.2 * jax.random.normal(k[4], (batch, 3)),
        neck_pose=0.1 * jax.random.normal(k[5], (batch, 3)),
        jaw_pose=jaw,
        eye_pose=0.15 * jax.random.normal(k[6], (batch, 6)),
        translation=0.02 * jax.random.normal(jax.random.fold_in(key, 1), (batch, 3)),
    )


def run(cfg: ForwardConfig, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    model = cfg.model.build()
    jax.block_until_ready(model)
    build_s = time.perf_counter() - t0

    params = sample_frames(jax.random.key(cfg.seed), model, cfg.batch_size, cfg.expression_scale)
    forward = jax.jit(jax.vmap(fj.flame_forward, in_axes=(None, 0)))
    t0 = time.perf_counter()
    out = jax.block_until_ready(forward(model, params))
    first_call_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(cfg.benchmark_repeats):
        jax.block_until_ready(forward(model, params))
    per_batch_s = (time.perf_counter() - t0) / max(cfg.benchmark_repeats, 1)

    (out_dir / "meshes").mkdir(parents=True, exist_ok=True)
    vertices = np.asarray(out.vertices)
    faces = np.asarray(model.faces)
    mesh_paths = []
    for i in range(min(cfg.n_meshes, cfg.batch_size)):
        path = out_dir / "meshes" / f"frame_{i:03d}.obj"
        trimesh.Trimesh(vertices[i], faces, process=False).export(path)
        mesh_paths.append(str(path))
    np.save(out_dir / "landmarks.npy", np.asarray(out.landmarks))
    np.savez(out_dir / "params.npz", **{k: np.asarray(v) for k, v in params._asdict().items()})

    summary = {
        "model": {"kind": cfg.model.kind, "vertices": int(model.n_vertices), "faces": int(faces.shape[0]),
                  "n_shape": int(model.n_shape), "n_expr": int(model.n_expr), "build_seconds": round(build_s, 3)},
        "batch_size": cfg.batch_size,
        "first_call_seconds": round(first_call_s, 3),
        "frames_per_second": round(cfg.batch_size / per_batch_s, 1),
        "device": str(jax.devices()[0]),
        "vertex_extent_m": np.ptp(vertices.reshape(-1, 3), axis=0).round(4).tolist(),
        "meshes": mesh_paths,
        "landmarks": str(out_dir / "landmarks.npy"),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@hydra.main(config_path="../conf", config_name="forward", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    try:
        cfg = ForwardConfig.from_dict(OmegaConf.to_container(dcfg, resolve=True))
    except (ConfigError, TypeError) as e:   # TypeError: a key the typed config does not have
        print(f"forward: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run(cfg, out_dir)
    print(f"{summary['model']['vertices']} vertices, batch {cfg.batch_size}: "
          f"{summary['frames_per_second']:.0f} frames/s on {summary['device']}")
    print(f"wrote {len(summary['meshes'])} meshes, landmarks and summary.json to {out_dir}")


if __name__ == "__main__":
    main()
