"""The vectorised sweep: a grid of weights in vmapped programs, one job folder per grid point.

    python -m experiments.sweep                                              # conf/sweep.yaml's 3 x 3 grid
    python -m experiments.sweep 'grid={calibration.reg: [1e-3, 1e-1], tracker.l1: [1e-4, 1e-3, 1e-2]}'
    python -m experiments.sweep experiment=quick hydra.run.dir=outputs/my_sweep   # re-run: skips done points

The same grid as a Hydra multirun of the Table 1 job (one process per point),

    python -m experiments.table1 -m finetune=none calibration.reg=1e-3,1e-2,1e-1 tracker.l1=1e-4,1e-3,1e-2

gives the same numbers (to float32 tolerance) in the same layout: a folder per grid point named
like Hydra's (``calibration.reg=0.001,tracker.l1=0.0001``) holding table1's files (its
``config.yaml`` is the table1 config of that point), then the joined table of
:mod:`experiments.collect` in the sweep folder. Here every performer's calibrations are one vmapped
solve and every take's inversions under all rigs and weights one program
(:func:`flamejax.sweep.evaluate_grid`), the world is loaded and the programs compiled once.

Only numeric weights can be vectorised: :data:`VECTORISED` (others: use the multirun). A grid
value that is not a valid setting is recorded as failed (its folder's run.json) and the rest of
the grid goes on; so is a point whose numbers come out NaN.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from pathlib import Path

import hydra
import jax
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments import collect
from experiments.configs import ConfigError, Table1Config
from experiments.jobs import NonFiniteResult, finished, write_failed
from experiments.table1 import use_compilation_cache, write_results
from flamejax.sweep import evaluate_grid
from flamejax.synthetic.world import load_or_make_world

VECTORISED = {"calibration": ("reg", "w_combo", "tol", "length"), "tracker": ("l1", "tweaker", "smoothness")}


def grid_points(grid: dict) -> list[dict]:
    """{key: [values]} -> the Cartesian product as [{key: value}] (keys sorted, like Hydra's
    override_dirname), after checking every key can be vectorised."""
    if not grid:
        raise ConfigError("grid is empty: give it at least one key, e.g. grid='{tracker.l1: [1e-4, 1e-3]}'")
    for key, values in grid.items():
        group, _, name = key.partition(".")
        if name not in VECTORISED.get(group, ()):
            allowed = ", ".join(f"{g}.{n}" for g, names in VECTORISED.items() for n in names)
            raise ConfigError(f"grid key {key!r} cannot be vectorised (allowed: {allowed}); sweep it with a "
                              "multirun: python -m experiments.table1 -m ...")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key} must be a non-empty list of numbers, got {values!r}")
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def job_name(point: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def point_config(base: DictConfig, point: dict) -> str:
    """The resolved table1 config YAML of one grid point (what its config.yaml holds)."""
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    for key, value in point.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))


def run_sweep(dcfg: DictConfig, out_dir: Path, progress=print, bar: bool = False) -> dict:
    """Evaluate the grid's unfinished points into ``out_dir``/<point> and collect the sweep.
    progress: gets a line per step; bar: a tqdm progress bar (lines then go through tqdm.write)."""
    base = OmegaConf.create(OmegaConf.to_container(dcfg, resolve=False))
    base.pop("hydra", None)
    grid = OmegaConf.to_container(base.pop("grid"), resolve=True)
    points = grid_points(grid)
    configs, failed = {}, []
    for point in points:
        name = job_name(point)
        text = point_config(base, point)
        try:
            configs[name] = Table1Config.from_dict(yaml.safe_load(text)), text
        except (ConfigError, ValueError) as e:
            write_failed(out_dir / name, e, text)
            failed.append(name)
            progress(f"{name}: bad setting, recorded as failed: {e}")
    if not configs:
        raise ConfigError("no grid point is a valid setting (see their run.json)")
    first = next(iter(configs.values()))[0]
    if first.finetune is not None:
        raise ConfigError("the vectorised sweep evaluates Baseline and Ours only: set finetune=none "
                          "(a fine-tuned column per grid point: use the multirun)")
    todo = {n: c for n, c in configs.items() if not finished(out_dir / n, c[1])}
    progress(f"{len(points)} grid points: {len(configs) - len(todo)} already done, {len(failed)} bad, "
             f"{len(todo)} to run")
    if todo:
        use_compilation_cache(first.compilation_cache)
        start = time.perf_counter()
        world = load_or_make_world(first.data.world, first.data.cache_dir)
        first.check_world(world)
        world_s = time.perf_counter() - start
        # the grid's calibration and weight settings that some unfinished point needs (a product again)
        by_cal = {dataclasses.astuple(c.calibration): c.calibration for c, _ in todo.values()}
        by_w = {tuple(c.tracker.weights): c.tracker.weights for c, _ in todo.values()}
        cal_keys, w_keys = sorted(by_cal), sorted(by_w)
        ev = first.evaluation
        n_steps = (len(ev.performers or world.performers) * len(ev.trackers or world.tracked)
                   * (1 + len(ev.takes) + bool(ev.training_take)))
        start = time.perf_counter()
        # a bar over the grid evaluation's steps (calibrations, then each take), the lines above it
        with tqdm(total=n_steps, desc="sweep", unit="step", disable=not bar, dynamic_ncols=True) as steps:
            def step(msg: str) -> None:
                (tqdm.write if bar else progress)("  " + msg)
                steps.update(1)

            records = evaluate_grid(world, [by_cal[k] for k in cal_keys], [by_w[k] for k in w_keys],
                                    inversion=first.tracker.inversion, **ev.evaluate_kwargs(), progress=step)
        eval_s = time.perf_counter() - start
        progress(f"evaluated {len(cal_keys)} calibration x {len(w_keys)} weight settings in {eval_s:.1f} s")
        for name, (cfg, text) in todo.items():
            ci = cal_keys.index(dataclasses.astuple(cfg.calibration))
            wi = w_keys.index(tuple(cfg.tracker.weights))
            mine = [{k: v for k, v in r.items() if k not in ("calibration_index", "weights_index")}
                    for r in records if r["calibration_index"] == ci and r["weights_index"] == wi]
            try:
                write_results(cfg, world, mine, out_dir / name, text,
                              {"world": world_s, "evaluation": eval_s / len(todo), "grid_evaluation": eval_s})
            except NonFiniteResult as e:
                write_failed(out_dir / name, e, text)
                progress(f"{name}: failed: {e}")
    rows, params, columns = collect.collect(out_dir)
    paths = collect.write_collection(out_dir, rows, params, columns)
    return {"rows": rows, "params": params, "columns": columns, "paths": paths}


@hydra.main(config_path="../conf", config_name="sweep", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_sweep(dcfg, out_dir, progress=lambda m: print(m, flush=True), bar=sys.stderr.isatty())
    except ConfigError as e:
        print(f"sweep: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    print()
    print((out_dir / "sweep.md").read_text())
    print(f"device {jax.devices()[0]}; wrote to {out_dir}:")
    for path in result["paths"].values():
        print(f"  {path}")


if __name__ == "__main__":
    main()
