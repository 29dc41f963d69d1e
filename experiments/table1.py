"""The paper's Table 1 on the embedded synthetic world (or a user's data), from conf/table1.yaml.

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

On a user's data (``data=folder data.root=... model=flame2020 model.path=...``, :mod:`flamejax.user_data`)
the same files are written: ``evaluation.takes`` name the user's takes (checked when the data is
read), Sparsity, Tweakers, ``fit_tracked_mm``, the timings and the Simon-Says take's recognition
are computed, every metric that needs the truth is NaN in records.csv (null in metrics.json, "–"
in table1.md; ``intended_tracked_mm`` is defined on the Simon-Says holds only), frames the tracker
lost are left out of every metric, and the figures (which draw the synthetic truth) are skipped
with a note. Any other NaN fails the job as on the synthetic world.

Most of a first run is XLA compiling; ``compilation_cache`` (default ``.flamejax_cache/jax``) keeps
the compiled programs, so a re-run or a sweep's next job starts from them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import hydra
import jax
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.configs import ConfigError, Table1Config, user_data
from experiments.jobs import check_finite, finished, read_status, write_atomic, write_done, write_failed
from experiments.loggers import Logger, NullLogger, make_logger
from flamejax.evaluate import (INTENDED_TABLE1, TABLE1_METRICS, TRUTH_METRICS, baseline_variant, calibrated_variant,
                               evaluate_world, finetuned_variant, has_truth, summarise, to_csv, to_markdown,
                               undefined_metrics)
from flamejax.synthetic.world import load_or_make_world
from flamejax.user_data import read_user_data

# what table1.md / table1.csv / metrics.json hold; timings stay in records.csv and run.json
TABLE_METRICS = TABLE1_METRICS + INTENDED_TABLE1 + TRUTH_METRICS
OUTPUTS = ("table1.md", "table1.csv", "records.csv", "metrics.json", "config.yaml", "run.json")


def flat_metrics(summary) -> dict:
    """Summary rows -> {"<take>/<tracker>/<variant>/<metric>/mean" (and /std): float or None}."""
    out = {}
    for r in summary:
        for stat in ("mean", "std"):
            value = getattr(r, stat)
            out[f"{r.take}/{r.tracker}/{r.variant}/{r.metric}/{stat}"] = None if math.isnan(value) else value
    return out


def load_world(cfg, progress: Callable[[str], None]):
    """The data of a Table 1 or stage config's ``data`` -> (world, seconds): the synthetic world
    (read from / cached in ``data.cache_dir``), or a user's folder read for the model group's FLAME model
    (:func:`flamejax.user_data.read_user_data`); checked against the config (a performer, tracker
    or take it lacks is a ConfigError)."""
    start = time.perf_counter()
    if user_data(cfg):
        world = read_user_data(cfg.data.world, cfg.model.build())
        what = (f"data folder {cfg.data.world.root} ({world.generic.model.n_vertices} vertices, tracker "
                f"{next(iter(world.tracked))}, {len(world.performers)} performers)")
    else:
        world = load_or_make_world(cfg.data.world, cfg.data.cache_dir)
        what = (f"world {cfg.data.world.key()} ({cfg.data.world.size}, {world.generic.model.n_vertices} vertices, "
                f"{len(world.performers)} performers)")
    cfg.check_world(world)
    seconds = time.perf_counter() - start
    progress(f"{what} in {seconds:.1f} s on {jax.devices()[0]}")
    return world, seconds


def logged_builder(builder, logger: Logger):
    """A variant builder that also logs its solver's per-iteration values (calibration objective,
    fine-tuning stage values) to ``logger``."""
    def build(ctx):
        variant = builder(ctx)
        for key in ("history", "stage_values"):
            if key in variant.info:
                logger.log_history(f"{variant.name}/{ctx.performer}/{ctx.tracker}/{key}", variant.info[key])
        return variant

    return build


def run(cfg: Table1Config, out_dir: Path, resolved_yaml: str, progress=print, logger: Logger = NullLogger(),
        bar: bool = False) -> dict:
    """Evaluate and write :data:`OUTPUTS` (and the figures) into ``out_dir`` (module doc);
    resolved_yaml: the config.yaml text; progress: gets a line of text per step; bar: show a tqdm
    progress bar (the lines then go through tqdm.write). Returns {"markdown": tables, "paths":
    {name: path}, "metrics": flat}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    world, world_s = load_world(cfg, progress)

    ev = cfg.evaluation
    builders = [baseline_variant, calibrated_variant] + ([finetuned_variant(cfg.finetune)] if cfg.finetune else [])
    n_takes = len(ev.takes) + bool(ev.training_take)
    n_steps = (len(ev.performers or world.performers) * len(ev.trackers or world.tracked) * len(builders)
               * (1 + n_takes))
    start = time.perf_counter()
    # a bar over the evaluation's steps (each variant built, each take inverted), the step lines above it
    with tqdm(total=n_steps, desc="table1", unit="step", disable=not bar, dynamic_ncols=True) as steps:
        def step(msg: str) -> None:
            (tqdm.write if bar else progress)("  " + msg)
            steps.update(1)

        records = evaluate_world(world, calibration=cfg.calibration, weights=cfg.tracker.weights,
                                 inversion=cfg.tracker.inversion, **ev.evaluate_kwargs(), progress=step,
                                 variants=[logged_builder(b, logger) for b in builders])
    eval_s = time.perf_counter() - start
    seconds = {"world": world_s, "evaluation": eval_s}
    figures = {}
    if cfg.figures.enabled and not has_truth(world):
        progress("figures: skipped on a user's data (the figures draw the synthetic world's truth); "
                 "figures.enabled=false silences this")
    elif cfg.figures.enabled:
        from experiments.figures import make_figures   # matplotlib and the renderer only when drawing

        start = time.perf_counter()
        f = cfg.figures
        figures = make_figures(world, calibration=cfg.calibration, weights=cfg.tracker.weights,
                               inversion=cfg.tracker.inversion, out_dir=out_dir / "figures", performer=f.performer,
                               tracker=f.tracker, take=f.take, max_frames=f.max_frames, seed=f.seed, cell=f.cell,
                               hold_frames_per_expression=f.hold_frames, progress=lambda msg: progress("  " + msg),
                               video_progress=bar)
        seconds["figures"] = time.perf_counter() - start
        for name, path in figures.items():
            if path.suffix == ".png":
                logger.log_image(f"figures/{name}", path)
            elif path.suffix == ".mp4":
                logger.log_video(f"figures/{name}", path)
    result = write_results(cfg, world, records, out_dir, resolved_yaml, seconds, logger)
    result["paths"].update({f"figures/{name}": path for name, path in figures.items()})
    return result


def write_results(cfg: Table1Config, world, records, out_dir: Path, resolved_yaml: str, seconds: dict,
                  logger: Logger = NullLogger()) -> dict:
    """Records of one job -> its files (module doc; ``run.json`` last, marking the job done) and
    the logger's metrics, table and summary. Raises :class:`experiments.jobs.NonFiniteResult` (and
    writes nothing) when a number is NaN or infinite. seconds: {"world": s, "evaluation": s}."""
    check_finite(records, undefined_metrics(world))   # NaN only where undefined (a user's data: the truth's)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = cfg.evaluation
    summary = summarise(records, TABLE_METRICS)
    metrics = {**flat_metrics(summary), **{f"seconds/{k}": v for k, v in seconds.items()}}
    frames = {t: sorted({r["frames"] for r in records if r["take"] == t}) for t in dict.fromkeys(r["take"] for r in records)}

    cap = f"at most {ev.max_frames} evenly spaced frames per take" if ev.max_frames else "all frames"
    tables = to_markdown(summary)
    w = cfg.tracker.weights
    where = (f"the synthetic world {cfg.data.world.key()}" if has_truth(world) else
             f"the data folder {cfg.data.world.root} ({cfg.data.world.key()}; no truth: the truth-based "
             f"metrics are n/a, lost frames are left out)")
    header = (f"# Table 1 on {where}\n\n"
              f"{len(world.performers)} performers, trackers {', '.join(ev.trackers or world.tracked)}; {cap} "
              f"(evaluated: {frames}). Cells: mean ± std over performers. Calibration reg={cfg.calibration.reg}; "
              f"tracker weights l1={w.l1}, tweaker={w.tweaker}, smoothness={w.smoothness}. "
              f"Evaluation {seconds.get('evaluation', 0.0):.0f} s.\n\n")
    paths = {name: out_dir / name for name in OUTPUTS}
    write_atomic(paths["table1.md"], header + tables)
    write_atomic(paths["table1.csv"], to_csv(summary))
    write_atomic(paths["records.csv"], to_csv(records))
    write_atomic(paths["metrics.json"], json.dumps(metrics, indent=1, sort_keys=True))
    write_atomic(paths["config.yaml"], resolved_yaml)
    columns = list(summary[0]._fields) if summary else []
    logger.log_table("table1", columns, [list(r) for r in summary])
    logger.log_metrics(metrics)
    logger.summary(metrics)
    write_done(out_dir, {
        "world_key": cfg.data.world.key(), "frames": frames, "seconds": seconds, "device": str(jax.devices()[0]),
        "variant_seconds": {f"{r['performer']}/{r['tracker']}/{r['variant']}": r["variant_seconds"]
                            for r in records},
    })
    return {"markdown": tables, "paths": paths, "metrics": metrics}


def resolved_text(dcfg: DictConfig) -> str:
    """Hydra's config -> the resolved YAML without the hydra node (which only resolves inside a
    running job): what the job's config.yaml holds."""
    container = OmegaConf.to_container(dcfg, resolve=False)
    container.pop("hydra", None)
    return OmegaConf.to_yaml(OmegaConf.create(container), resolve=True)


def resolved(dcfg: DictConfig) -> tuple[Table1Config, str]:
    """Hydra's config -> (typed config, :func:`resolved_text`)."""
    text = resolved_text(dcfg)
    return Table1Config.from_dict(yaml.safe_load(text)), text


def use_compilation_cache(folder: Optional[str]) -> None:
    """Turn on JAX's persistent compilation cache in ``folder`` (None: leave it off). Most of a
    run's time is XLA compiling (the tracker per pool size, fine-tuning its value and gradient);
    a re-run or a sweep's next job reads the programs back."""
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def objective_value(cfg: Table1Config, metrics: dict) -> Optional[float]:
    """What the job returns to Hydra's sweeper: metrics[cfg.optimized_metric], or None when no
    metric is optimised. An undefined metric raises: a search (hparams_search/) records the trial
    as failed and goes on, where a NaN result would stop it."""
    if cfg.optimized_metric is None:
        return None
    if cfg.optimized_metric not in metrics:
        raise ConfigError(f"optimized_metric={cfg.optimized_metric!r} is not one of this job's metrics "
                          f"(metrics.json keys, e.g. {next(iter(metrics), '')!r})")
    value = metrics[cfg.optimized_metric]
    if value is None or not math.isfinite(value):
        raise ValueError(f"optimized_metric {cfg.optimized_metric!r} is undefined for this job ({value})")
    return float(value)


@hydra.main(config_path="../conf", config_name="table1", version_base="1.3")
def main(dcfg: DictConfig) -> Optional[float]:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    text = cfg = None
    try:
        text = resolved_text(dcfg)
        cfg = Table1Config.from_dict(yaml.safe_load(text))
        if finished(out_dir, text):
            # a re-run sweep (same hydra.sweep.dir) skips the jobs it already finished
            print(f"table1: {out_dir} already holds this job's results (status done); skipped")
            return objective_value(cfg, json.loads((out_dir / "metrics.json").read_text()))
        if (out_dir / "run.json").exists():
            print(f"table1: re-running {out_dir} (was {(read_status(out_dir) or {}).get('status', 'unreadable')})")
        use_compilation_cache(cfg.compilation_cache)
        with make_logger(cfg.logger, out_dir, yaml.safe_load(text), job_name=f"{cfg.task_name}/{out_dir.name}") as logger:
            result = run(cfg, out_dir, text, progress=lambda msg: print(msg, flush=True), logger=logger,
                         bar=sys.stderr.isatty())
        value = objective_value(cfg, result["metrics"])
    except Exception as e:  # noqa: BLE001 -- any failure is recorded in the job directory
        write_failed(out_dir, e, text)
        kind = "bad config" if isinstance(e, ConfigError) else "failed"
        print(f"table1: {kind}: {e}\n  recorded in {out_dir / 'run.json'}", file=sys.stderr)
        if multirun and (cfg is None or cfg.optimized_metric is None):
            return None     # the sweep goes on with its next job
        if multirun:
            raise           # a search's sweeper records the trial as failed and goes on
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    print()
    print(result["markdown"])
    print(f"wrote to {out_dir}:")
    for path in result["paths"].values():
        print(f"  {path}")
    return value


if __name__ == "__main__":
    main()
