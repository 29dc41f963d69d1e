"""Fine-tuning the tracker's rig through the tracker, per performer, from conf/finetune_rig.yaml.

    python -m experiments.finetune                                  # finetune=short: one stage, a few iterations
    python -m experiments.finetune finetune=default                 # the authors' four stages (tens of minutes)
    python -m experiments.finetune performers=[performer00] tracked_by=OS2 finetune.w_reg=1e-1

(The primary config is ``finetune_rig.yaml``: ``conf/finetune/`` is the group of stage schedules.)
Per selected performer: the calibrated rig theta_R (as experiments.calibrate), then
:class:`flamejax.finetune.FineTuning` of theta_T from it on the same Simon-Says samples, with the
tracker group's weights and solver (the rig is tuned for that tracker) -- the "finetuned" variant
of :mod:`flamejax.evaluate` (:func:`flamejax.evaluate.finetuned_variant`). Writes into the job
folder, each file atomically, ``run.json`` last:

- ``<performer>/flame_finetuned.npz``: the FLAME model with theta_T's expression basis
  (:func:`flamejax.io.save_flame`); ``<performer>/rig_finetuned.npz``: theta_T's semantic rig
  (basis (P, K), offset (P,), control names, n_expr, jaw_convention, has_neck): track with both;
- ``<performer>/flame_calibrated.npz``, ``<performer>/rig_calibrated.npz``: theta_R, the rig
  that makes geometry from controls (retargeting, the fine-tuning's geometry term);
- ``<performer>/finetune.json``: the stages (name and settings), the loss before the first stage
  and after each (``stage_values``), L-BFGS iterations, accepted tweaker columns, the calibration's
  numbers, seconds;
- ``finetune.csv``: one row per performer (loss before / after, iterations, seconds);
- ``config.yaml``, ``run.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from experiments.configs import FinetuneRigConfig
from experiments.jobs import check_finite, write_atomic
from experiments.loggers import Logger
from experiments.table1 import load_world
from experiments.stages import (build_rigs, finish_job, performer_context, rig_arrays, run_stage,
                                save_atomic, save_npz)
from flamejax.calibrate import CalibratedRig, calibrated_model
from flamejax.evaluate import to_csv
from flamejax.io import save_flame


def run(cfg: FinetuneRigConfig, out_dir: Path, text: str, progress: Callable[[str], None], logger: Logger) -> dict:
    """Calibrate and fine-tune the selected performers; write the module doc's files -> {name: path}."""
    world, world_s = load_world(cfg, progress)
    model = world.generic.model
    stages = [dataclasses.asdict(s) for s in cfg.finetune.stages]
    results, rows = {}, []
    for performer in cfg.selected(world):
        ctx = performer_context(world, performer, cfg)
        start = time.perf_counter()
        built = build_rigs(ctx, "finetuned", cfg, logger, progress)
        seconds = time.perf_counter() - start
        calibrated, tuned = built["calibrated"], built["finetuned"]
        info = tuned.info
        report = {"performer": performer, "tracked_by": ctx.tracker, "stages": stages,
                  "stage_values": info["stage_values"], "iterations": info["iterations"],
                  "accepted": info["accepted"],
                  "calibration": {k: v for k, v in calibrated.info.items() if k != "history"}, "seconds": seconds}
        results[performer] = (calibrated, tuned, report)
        rows.append({"performer": performer, "tracked_by": ctx.tracker, "loss_before": info["stage_values"][0],
                     "loss_after": info["stage_values"][-1], "iterations": info["iterations"], "seconds": seconds})
    check_finite(rows)   # nothing is written for a diverged fine-tuning
    paths = {}
    for performer, (calibrated, tuned, report) in results.items():
        folder = out_dir / performer
        folder.mkdir(parents=True, exist_ok=True)
        for tag, variant in (("calibrated", calibrated), ("finetuned", tuned)):
            flame = calibrated_model(model, CalibratedRig(variant.exprdirs, variant.rig))
            save_atomic(folder / f"flame_{tag}.npz", lambda tmp, flame=flame: save_flame(flame, tmp))
            save_npz(folder / f"rig_{tag}.npz", **rig_arrays(variant.rig))
        write_atomic(folder / "finetune.json", json.dumps(report, indent=1))
        for name in ("flame_finetuned.npz", "rig_finetuned.npz", "flame_calibrated.npz", "rig_calibrated.npz",
                     "finetune.json"):
            paths[f"{performer}/{name}"] = folder / name
    write_atomic(out_dir / "finetune.csv", to_csv(rows))
    paths["finetune.csv"] = out_dir / "finetune.csv"
    logger.log_table("finetune", list(rows[0]), [list(r.values()) for r in rows])
    logger.summary({f"{r['performer']}/loss_after": r["loss_after"] for r in rows})
    return finish_job(cfg, out_dir, text, paths, {"seconds": {"world": world_s, "finetune": sum(r["seconds"] for r in rows)}})


@hydra.main(config_path="../conf", config_name="finetune_rig", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    run_stage("finetune", dcfg, FinetuneRigConfig, run)


if __name__ == "__main__":
    main()
