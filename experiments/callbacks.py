"""Hydra callbacks of the experiments (registered in conf/hydra/default.yaml)."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CollectSweep(Callback):
    """At the end of a multirun, join its job folders into one table (:mod:`experiments.collect`):
    ``sweep.md``, ``sweep.csv``, ``sweep_long.csv`` and the sweep plots in the sweep folder; when
    the jobs are ablation variants (``ablation=full,no_masks,...``), also the ablation table
    (:mod:`experiments.ablation_table`: ``ablation.md`` ...)."""

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
        self._ablation(sweep_dir)

    @staticmethod
    def _ablation(sweep_dir: Path) -> None:
        from experiments import ablation_table

        jobs = ablation_table.find_jobs(sweep_dir)
        if len({j.variant for j in jobs if j.variant is not None}) < 2:
            return   # not an ablation: one variant (or none) in every job
        paths = ablation_table.write(sweep_dir, ablation_table.collect(sweep_dir))
        print()
        print(paths["ablation.md"].read_text())
        for path in paths.values():
            print(f"  {path}")
