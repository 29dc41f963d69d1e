"""Ablations from configs: every variant of ``conf/ablation/`` x every world seed, then one table.

    python -m experiments.ablate                                        # conf/ablate.yaml: all variants, seeds 0, 1, 2
    python -m experiments.ablate experiment=quick 'variants=[full,no_masks,no_l1]' 'seeds=[0,1]'
    python -m experiments.ablate hydra.run.dir=outputs/ablate/runs/<time>    # resume: finished jobs are skipped

Each (variant, seed) is a Table 1 job (:func:`experiments.table1.run`) run in this process, one
after another: its config is composed with Hydra's compose API from ``conf/table1.yaml`` with the
command line's own overrides (``experiment=quick``, ``tracker.l1=...``: they change the full
method and every variant alike) plus ``ablation=<variant> data.seed=<seed>
figures.enabled=false`` and, for every variant but the fine-tuning ones (``finetune*``, whose
configs select ``finetune=default``), ``finetune=none`` (the rows report the calibrated rig, so a
fine-tuned one would only cost time; a ``finetune=...`` on the command line is kept instead).
A job writes into ``<run dir>/runs/<variant>/seed<seed>/`` with the job-folder rules of
:mod:`experiments.jobs`: a folder already done with the same resolved config is skipped, a job
that fails (a config that does not compose or validate, a solver error, NaN results) is recorded
in its ``run.json`` and the next one runs. The jobs share the process, hence JAX's compiled
programs: the weights are pytree leaves, so weight-only variants (reg, l1, tweaker, smoothness)
reuse the full method's programs; the persistent ``compilation_cache`` serves a re-run. (The
weight variants are not vectorised into one program here: ``experiments.sweep`` does that for
a grid of weights.)

On a user's data (``data=folder data.root=... model=... evaluation.takes=[<take>]``) there is no
world seed: ``seeds`` is ignored (a note says so when it lists several), each variant runs once
into ``runs/<variant>/seed0/`` without a ``data.seed`` override, and the table's truth-based
columns are "–" (undefined without the truth; :mod:`experiments.table1`).

At the end :mod:`experiments.ablation_table` collects the run folder into ``ablation.md`` (printed),
``ablation.csv``, ``ablation_units.csv`` and ``ablation.png``. The same table from a Hydra
multirun: ``python -m experiments.table1 -m finetune=none figures.enabled=false
ablation=full,no_masks data.seed=0,1,2`` then ``python -m experiments.ablation_table <sweep dir>``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import hydra
import jax
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from experiments import ablation_table
from experiments.configs import ConfigError, Table1Config
from experiments.jobs import finished, read_status, write_failed
from experiments.loggers import make_logger
from experiments.table1 import resolved_text, run as run_table1, use_compilation_cache

OWN_KEYS = ("variants", "seeds", "task_name")   # conf/ablate.yaml's own keys: not passed to the jobs
REFUSED = {
    "ablation": "the variants are chosen with variants=[...]",
    "ablation_name": "each conf/ablation/ config sets it",
    "data.seed": "the world seeds are chosen with seeds=[...]",
    "hparams_search": "a search is a multirun of experiments.table1",
}


def folder_data(user: Sequence[str]) -> bool:
    """Whether the user's overrides choose a user's data folder (``data=folder``): it has no world
    seed, so each variant runs once (:data:`FOLDER_SEED`)."""
    return any(o.key_or_group == "data" and str(o.value()) == "folder"
               for o in OverridesParser.create().parse_overrides(list(user)))


# data=folder: one job per variant, in runs/<variant>/seed0 (the collector places a job without a
# data.seed by its folder's name; the table's "seed 0" is the data itself)
FOLDER_SEED = 0


def job_overrides(user: Sequence[str], variant: str, seed: Optional[int]) -> list[str]:
    """The compose overrides of one job: the user's (minus :data:`OWN_KEYS`) + the job's own
    (module doc; seed None: no ``data.seed``, a user's data folder). Raises ConfigError on an
    override the driver sets itself (:data:`REFUSED`)."""
    passed, finetune_group = [], False
    for o in OverridesParser.create().parse_overrides(list(user)):
        key = o.key_or_group
        if key in OWN_KEYS:
            continue
        if key in REFUSED:
            raise ConfigError(f"{o.input_line}: not an ablate override ({REFUSED[key]})")
        finetune_group |= key == "finetune"
        passed.append((key, o.input_line))
    finetuned = ablation_table.reported_rig(variant) == "finetuned"
    drop_finetune = not finetuned and not finetune_group   # finetune=none below: its settings are moot
    out = [line for key, line in passed if not (drop_finetune and key.startswith("finetune."))]
    out += [f"ablation={variant}"] + ([] if seed is None else [f"data.seed={seed}"]) + ["figures.enabled=false"]
    if drop_finetune:
        out.append("finetune=none")
    return out


def run_job(job_dir: Path, overrides: Sequence[str], progress: Callable[[str], None] = print) -> str:
    """Compose, check and run one Table 1 job into ``job_dir`` -> "done" | "skipped" | "failed"
    (a failure is recorded in ``job_dir/run.json`` with the config it failed with, when known).
    Needs Hydra's global state (inside a Hydra app, or ``hydra.initialize_config_dir``)."""
    text = None
    try:
        dcfg = compose(config_name="table1", overrides=list(overrides))
        text = resolved_text(dcfg)
        cfg = Table1Config.from_dict(yaml.safe_load(text))
        if finished(job_dir, text):
            progress(f"  {job_dir}: already done with this config; skipped")
            return "skipped"
        if (job_dir / "run.json").exists():
            progress(f"  re-running {job_dir} (was {(read_status(job_dir) or {}).get('status', 'unreadable')})")
        use_compilation_cache(cfg.compilation_cache)
        with make_logger(cfg.logger, job_dir, yaml.safe_load(text), job_name=f"ablate/{job_dir.parent.name}/{job_dir.name}") as logger:
            run_table1(cfg, job_dir, text, progress=lambda msg: progress("  " + msg), logger=logger)
        return "done"
    except Exception as e:  # noqa: BLE001 -- recorded in the job folder; the next job runs
        write_failed(job_dir, e, text)
        progress(f"  FAILED: {type(e).__name__}: {e}\n  recorded in {job_dir / 'run.json'}")
        return "failed"


def run_ablation(variants: Sequence[str], seeds: Sequence[int], user_overrides: Sequence[str], out_dir: Path,
                 progress: Callable[[str], None] = print, plots: bool = True) -> dict:
    """Every (variant, seed) job into ``out_dir/runs/<variant>/seed<seed>`` (seeds outermost, so
    consecutive jobs share a world), then the ablation table in ``out_dir`` ->
    {"status": {(variant, seed): status}, "collection": Collection, "paths": {name: path}}."""
    variants, seeds = [str(v) for v in variants], [int(s) for s in seeds]
    folder = folder_data(user_overrides)
    if folder:
        if len(seeds) != 1:
            progress(f"ablate: data=folder has no world seeds: each variant runs once (seeds={seeds} ignored)")
        seeds = [FOLDER_SEED]
    if not variants or not seeds:
        raise ConfigError("variants and seeds must be non-empty lists")
    if len(set(variants)) != len(variants) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"variants and seeds must not repeat, got variants={variants} seeds={seeds}")
    known = {p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "ablation").glob("*.yaml")}
    unknown = [v for v in variants if v not in known]
    if unknown:   # recorded as failed when their turn comes; said now so that a typo is seen early
        progress(f"ablate: no conf/ablation/ config named {unknown} (known: {sorted(known)}); these jobs will fail")
    plans = {(v, s): job_overrides(user_overrides, v, None if folder else s) for s in seeds for v in variants}
    if "full" not in variants:
        progress("ablate: 'full' is not among the variants: the table will show no differences")
    status = {}
    start = time.perf_counter()
    for i, ((variant, seed), overrides) in enumerate(plans.items(), 1):
        job_dir = out_dir / "runs" / variant / f"seed{seed}"
        progress(f"[{i}/{len(plans)}] {variant}, seed {seed} ({time.perf_counter() - start:.0f} s): "
                 f"{' '.join(overrides)}")
        status[(variant, seed)] = run_job(job_dir, overrides, progress)
    counts = {k: sum(v == k for v in status.values()) for k in ("done", "skipped", "failed")}
    progress(f"ablate: {len(status)} jobs in {time.perf_counter() - start:.0f} s: {counts['done']} run, "
             f"{counts['skipped']} already done, {counts['failed']} failed; device {jax.devices()[0]}")
    collection = ablation_table.collect(out_dir)
    paths = ablation_table.write(out_dir, collection, plots=plots)
    return {"status": status, "collection": collection, "paths": paths}


def _list(value, name: str) -> list:
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    return value


@hydra.main(config_path="../conf", config_name="ablate", version_base="1.3")
def main(dcfg: DictConfig) -> Optional[int]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    user = list(HydraConfig.get().overrides.task)
    try:
        seeds = _list(dcfg.seeds, "seeds")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"seeds must be a list of integers, got {seeds!r}")
        result = run_ablation(_list(dcfg.variants, "variants"), seeds, user, out_dir,
                              progress=lambda msg: print(msg, flush=True))
    except ConfigError as e:
        print(f"ablate: bad config: {e}", file=sys.stderr)
        sys.exit(2)
    print()
    print(result["paths"]["ablation.md"].read_text())
    print(f"wrote to {out_dir}:")
    for path in result["paths"].values():
        print(f"  {path}")
    return None


if __name__ == "__main__":
    main()
