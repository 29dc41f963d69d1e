"""Hydra callbacks of the experiments (registered in conf/hydra/default.yaml)."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CollectSweep(Callback):
    """At the end of a multirun, join its job folders into one table (:mod:`experiments.collect`):
    ``sweep.md``, ``sweep.csv``, ``sweep_long.csv`` and the sweep plots in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from experiments import collect   # matplotlib and friends only once the jobs are done

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows, params, columns = collect.collect(sweep_dir)
        except FileNotFoundError as e:
            print(f"collect: {e}")
            return
        paths = collect.write_collection(sweep_dir, rows, params, columns)
        print()
        print(paths["sweep.md"].read_text())
        for path in paths.values():
            print(f"  {path}")
