"""The paper's Table 1 on the embedded synthetic world, from conf/table1.yaml.

    python -m experiments.table1                                  # default world, a few minutes
    python -m experiments.table1 experiment=quick                 # tiny world, seconds after compiling
    python -m experiments.table1 tracker.l1=1e-2 finetune=none evaluation.max_frames=null
    python -m experiments.table1 -m tracker.l1=1e-4,1e-3,1e-2     # one job directory per value

Runs :func:`flamejax.evaluate.evaluate_world` (Baseline, Ours = calibrated, and the fine-tuned rig
unless finetune=none) on the world of ``data`` (cached under ``data.cache_dir``) and writes into
the job directory, each file atomically:

- ``table1.md``: Table 1 (rows ROM 2 / ROM 1 / Pangram 1 x tracker; Sparsity and Tweakers per
  variant and of the intended controls; mean ± std over performers) and the truth-based metrics;
- ``table1.csv``: the same numbers, one row per (tracker, take, variant, metric) with mean, std,
  min, max and n over performers (:func:`flamejax.evaluate.summarise`);
- ``records.csv``: one row per (performer, tracker, take, variant), every metric and timing;
- ``metrics.json``: flat ``{"<take>/<tracker>/<variant>/<metric>/<mean|std>": value}`` of
  table1.csv (null where undefined) plus ``seconds/world`` and ``seconds/evaluation``;
- ``config.yaml``: the resolved config (``Table1Config.from_dict`` of it is this run's config);
- ``run.json``: the world's key, frames evaluated per take, variant build times, timings, device.

Most of a first run is XLA compiling; ``compilation_cache`` (default ``.flamejax_cache/jax``) keeps
the compiled programs, so a re-run or a sweep's next job starts from them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.configs import ConfigError, Table1Config
from flamejax.evaluate import (INTENDED_TABLE1, TABLE1_METRICS, TRUTH_METRICS, evaluate_world, finetuned_variant,
                               summarise, to_csv, to_markdown)
from flamejax.synthetic.world import load_or_make_world

# what table1.md / table1.csv / metrics.json hold; timings stay in records.csv and run.json
TABLE_METRICS = TABLE1_METRICS + INTENDED_TABLE1 + TRUTH_METRICS
OUTPUTS = ("table1.md", "table1.csv", "records.csv", "metrics.json", "config.yaml", "run.json")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``: a reader
    (or a re-run sweep) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def flat_metrics(summary) -> dict:
    """Summary rows -> {"<take>/<tracker>/<variant>/<metric>/mean" (and /std): float or None}."""
    out = {}
    for r in summary:
        for stat in ("mean", "std"):
            value = getattr(r, stat)
            out[f"{r.take}/{r.tracker}/{r.variant}/{r.metric}/{stat}"] = None if math.isnan(value) else value
    return out


def run(cfg: Table1Config, out_dir: Path, resolved_yaml: str, progress=print) -> dict:
    """Evaluate and write :data:`OUTPUTS` into ``out_dir`` (module doc); resolved_yaml: the
    config.yaml text. Returns {"markdown": tables, "paths": {name: path}, "metrics": flat}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    world = load_or_make_world(cfg.data.world, cfg.data.cache_dir)
    cfg.check_world(world)
    world_s = time.perf_counter() - start
    progress(f"world {cfg.data.world.key()} ({cfg.data.world.size}, {world.generic.model.n_vertices} vertices, "
             f"{len(world.performers)} performers) in {world_s:.1f} s on {jax.devices()[0]}")

    ev = cfg.evaluation

    def say(msg: str) -> None:
        progress("  " + msg)

    builders = (finetuned_variant(cfg.finetune),) if cfg.finetune is not None else ()
    start = time.perf_counter()
    records = evaluate_world(world, calibration=cfg.calibration, weights=cfg.tracker.weights,
                             inversion=cfg.tracker.inversion, takes=ev.takes, training_take=ev.training_take,
                             trackers=ev.trackers, performers=ev.performers, max_frames=ev.max_frames,
                             calibration_frames=ev.calibration_frames, progress=say, extra_variants=builders)
    eval_s = time.perf_counter() - start
    summary = summarise(records, TABLE_METRICS)
    metrics = {**flat_metrics(summary), "seconds/world": world_s, "seconds/evaluation": eval_s}
    frames = {t: sorted({r["frames"] for r in records if r["take"] == t}) for t in dict.fromkeys(r["take"] for r in records)}

    cap = f"at most {ev.max_frames} evenly spaced frames per take" if ev.max_frames else "all frames"
    tables = to_markdown(summary)
    header = (f"# Table 1 on the synthetic world {cfg.data.world.key()}\n\n"
              f"{len(world.performers)} performers, trackers {', '.join(ev.trackers or world.tracked)}; {cap} "
              f"(evaluated: {frames}). Cells: mean ± std over performers. Tracker weights "
              f"l1={cfg.tracker.weights.l1}, tweaker={cfg.tracker.weights.tweaker}, "
              f"smoothness={cfg.tracker.weights.smoothness}. Evaluation {eval_s:.0f} s.\n\n")
    paths = {name: out_dir / name for name in OUTPUTS}
    write_atomic(paths["table1.md"], header + tables)
    write_atomic(paths["table1.csv"], to_csv(summary))
    write_atomic(paths["records.csv"], to_csv(records))
    write_atomic(paths["metrics.json"], json.dumps(metrics, indent=1, sort_keys=True))
    write_atomic(paths["config.yaml"], resolved_yaml)
    write_atomic(paths["run.json"], json.dumps({
        "world_key": cfg.data.world.key(), "frames": frames, "world_seconds": world_s,
        "evaluation_seconds": eval_s, "device": str(jax.devices()[0]),
        "variant_seconds": {f"{r['performer']}/{r['tracker']}/{r['variant']}": r["variant_seconds"]
                            for r in records},
    }, indent=1, sort_keys=True))
    return {"markdown": tables, "paths": paths, "metrics": metrics}


def resolved(dcfg: DictConfig) -> tuple[Table1Config, str]:
    """Hydra's config -> (typed config, the resolved YAML without the hydra node, which only
    resolves inside a running job)."""
    container = OmegaConf.to_container(dcfg, resolve=False)
    container.pop("hydra", None)
    conf = OmegaConf.create(container)
    return Table1Config.from_dict(OmegaConf.to_container(conf, resolve=True)), OmegaConf.to_yaml(conf, resolve=True)


@hydra.main(config_path="../conf", config_name="table1", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    try:
        cfg, text = resolved(dcfg)
    except ConfigError as e:
        print(f"table1: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    if cfg.compilation_cache:
        # most of a run's time is XLA compiling (the tracker compiles per pool size, fine-tuning
        # its value-and-gradient); a re-run or a sweep's next job reads the programs back
        jax.config.update("jax_compilation_cache_dir", cfg.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    result = run(cfg, out_dir, text, progress=lambda msg: print(msg, flush=True))
    print()
    print(result["markdown"])
    print(f"wrote to {out_dir}:")
    for path in result["paths"].values():
        print(f"  {path}")


if __name__ == "__main__":
    main()
