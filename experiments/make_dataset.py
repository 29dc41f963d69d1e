"""Generate the synthetic world and write it, in real formats, with a summary.

    python -m experiments.make_dataset                         # conf/data/synthetic.yaml
    python -m experiments.make_dataset data.n_performers=4 data.size=full

Writes to the run directory: ``world/`` (the cache layout of flamejax.synthetic.world),
``generic_flame.pkl`` + ``landmark_embedding.npy`` (the generic model, FLAME's layouts),
``face_calibration/`` (the fitted generic semantic basis, one identity folder per performer,
Simon-Says region masks: face-calibration's layout) and ``summary.json`` (per performer: signature
strength, tracker residuals, signature vs tracker noise on the Simon-Says holds; per control:
basis fit residual).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import flamejax as fj
from flamejax.io.face_calibration import FaceCalibrationData
from flamejax.synthetic.diagnostics import signature_report
from flamejax.synthetic.world import World, WorldConfig, load_or_make_world, save_world, simon_says_masks

def world_config(data: dict) -> tuple[WorldConfig, str]:
    """conf/data/synthetic.yaml -> (typed world config, cache dir)."""
    data = dict(data)
    if data.pop("kind", "synthetic") != "synthetic":
        raise ValueError("make_dataset generates the synthetic world (data=synthetic)")
    cache_dir = data.pop("cache_dir", None)
    return WorldConfig.from_dict(data), cache_dir


def signature_summary(world: World, performer: str, tracker: str) -> dict:
    """Medians over the Simon-Says expressions of flamejax.synthetic.diagnostics' measures (mm)."""
    report = signature_report(world, performer, tracker)
    return {f"{field}_median": round(float(np.median(getattr(report, field))), 4)
            for field in ("signature_mm", "noise_mm", "frame_noise_mm", "truth_mm", "motion_mm")}


def summarize(world: World) -> dict:
    names = world.control_set.names
    per_performer = {}
    for name, p in world.performers.items():
        per_performer[name] = {
            "gain_log_std": round(float(np.std(np.log(p.gains))), 4),
            "crosstalk_links": int(np.count_nonzero(p.crosstalk)),
            "residual_rms_mm": round(float(np.sqrt(np.mean(p.residuals ** 2))) * 1e3, 4),
            "tracker_residual_median_mm": {
                tracker: {take: round(float(np.median(seq.residual)) * 1e3, 4) for take, seq in takes[name].items()}
                for tracker, takes in world.tracked.items()},
            "frames": {take: int(len(seq.controls)) for take, seq in world.sequences[name].items()},
            "signature_vs_tracker_noise": {tracker: signature_summary(world, name, tracker)
                                           for tracker in world.tracked},
        }
    residual = np.asarray(world.generic.residual) * 1e3
    return {
        "config": world.config.to_dict(),
        "model": {"vertices": int(world.generic.model.n_vertices), "n_expr": int(world.generic.model.n_expr)},
        "performers": per_performer,
        "basis_fit_residual_mm": {n: round(float(r), 5) for n, r in zip(names, residual)},
        "basis_fit_residual_mm_median_max": [round(float(np.median(residual)), 5), round(float(residual.max()), 5)],
    }


def write_dataset(world: World, out_dir: Path) -> dict:
    save_world(world, out_dir / "world")
    fj.io.save_flame(world.generic.model, out_dir / "generic_flame.pkl")
    fj.io.save_deca_embedding(world.generic.model.landmarks, out_dir / "landmark_embedding.npy")
    rig = world.generic.rig
    masks = simon_says_masks(world)
    for name, performer in world.performers.items():
        fj.io.write_face_calibration(out_dir / "face_calibration", FaceCalibrationData(
            world.control_set.names, np.asarray(rig.basis, np.float32), np.asarray(rig.offset, np.float32),
            np.asarray(performer.beta, np.float32), masks, name))
    summary = summarize(world)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@hydra.main(config_path="../conf", config_name="make_dataset", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    cfg, cache_dir = world_config(OmegaConf.to_container(dcfg.data, resolve=True))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    world = load_or_make_world(cfg, cache_dir)
    summary = write_dataset(world, out_dir)
    lo, hi = summary["basis_fit_residual_mm_median_max"]
    print(f"world {cfg.key()} (seed {cfg.seed}, {summary['model']['vertices']} vertices, "
          f"{cfg.n_performers} performers); basis fit residual median {lo} mm, max {hi} mm")
    for name, p in summary["performers"].items():
        res = ", ".join(f"{t}: {np.median(list(v.values())):.3f} mm" for t, v in p["tracker_residual_median_mm"].items())
        sig = ", ".join(f"{t}: {v['signature_mm_median']:.2f} vs {v['noise_mm_median']:.2f} mm"
                        for t, v in p["signature_vs_tracker_noise"].items())
        print(f"  {name}: gain log-std {p['gain_log_std']}, {p['crosstalk_links']} cross-talk links, "
              f"tracker residuals {res}; signature vs tracker noise {sig}")
    print(f"wrote the world, generic FLAME, face-calibration folder and summary.json to {out_dir}")


if __name__ == "__main__":
    main()
