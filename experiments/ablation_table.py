"""The ablation table: what each part of the method buys, from Table 1 job folders.

    python -m experiments.ablation_table outputs/ablate/runs/<time>          # after experiments.ablate
    python -m experiments.ablation_table outputs/table1/multiruns/<time>     # after a multirun:
    #   python -m experiments.table1 -m finetune=none figures.enabled=false ablation=full,no_masks data.seed=0,1,2

A job folder is any folder under the given one with a ``run.json`` or a ``config.yaml`` of a Table 1
job (:mod:`experiments.jobs`; Hydra's ``.hydra`` and W&B's ``wandb`` folders are skipped), wherever
it lies: ``runs/<variant>/seed<s>/`` (:mod:`experiments.ablate`) and a multirun's
``ablation=<variant>,data.seed=<s>/`` are read alike. Each job is placed by its ``config.yaml``:
the variant is its ``ablation_name`` (set by ``conf/ablation/<variant>.yaml``; ``full`` when
absent), the seed its ``data.seed``; a job without a readable config (it failed composing) is
placed by its folder's name.

Each row reports one rig of its jobs' ``records.csv`` (:func:`reported_rig`): the calibrated rig
("Ours", records variant ``calibrated``) for the full method and every variant, except the
fine-tuning variants (``finetune*``), which report the fine-tuned rig (``finetuned``). The full
jobs' generic rig (``baseline``) is a reference row, "no calibration". Per (seed, performer,
tracker) a metric is the mean over the evaluated held-out takes (recognition: its value on the
Simon-Says training take, the only take where it is defined); the main table then averages the
trackers per performer, the per-tracker table keeps them apart (OS1 vs OS2). A cell is the mean ±
std (ddof 0) over the units (seed, performer): every performer of every seed counts once. Each
row other than ``full`` also shows its difference from ``full`` (difference of the two means; the
plot's error bar and ``diff_std`` in the CSV: the std of the per-unit paired differences), marked
▲ (higher) / ▼ (lower) and better / worse by the metric's direction (lower is better except
recognition).

Writes into the folder:

- ``ablation.md``: a header (seeds, the world config and each seed's world key, the evaluation
  settings and the full method's weights), the main table (full first, then the reference row,
  then the variants), the per-tracker table, and the jobs not done (failed, unfinished, empty);
- ``ablation.csv``: one row per (table, variant, tracker, metric): rig, mean, std, n, diff,
  diff_std, n_pairs, verdict, the seeds;
- ``ablation_units.csv``: every unit's value (variant, rig, seed, performer, tracker, metric);
- ``ablation.png``: per metric, each row's difference from ``full`` as a horizontal bar with the
  paired std as error bar, green when better, red when worse.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import yaml

from experiments.collect import flatten
from experiments.jobs import CONFIG_FILE, STATUS_FILE, read_status, write_atomic
from flamejax.evaluate import METRIC_LABELS, VARIANT_LABELS

FULL = "full"
REFERENCE = "no calibration"   # the full jobs' generic rig
METRICS = ("sparsity", "tweakers", "control_mae", "recognition", "fit_truth_mm", "retarget_mm", "intended_truth_mm")
HIGHER_IS_BETTER = frozenset({"recognition"})
DIGITS = {"sparsity": 3, "tweakers": 4, "control_mae": 4, "recognition": 3}   # others (mm): 3
# the conf/ablation/ variants in the order the table lists them (others follow, sorted)
ORDER = ("full", "no_masks", "no_combinations", "no_reg", "reg_1e-2", "reg_1e-1", "no_tweaker", "no_l1",
         "temporal", "calibrate_rig", "calibrate_both", "finetune_1", "finetune_2", "finetune_3", "finetune_4",
         "fewer_expressions", "fewer_frames", "landmarks_only")
ALL = "all"   # the tracker of the main table's rows (the trackers' mean)
# config keys whose differences are no ablation (bookkeeping, or the seed itself)
IGNORED = ("ablation_name", "task_name", "figures.", "logger.", "compilation_cache", "optimized_metric",
           "data.cache_dir", "data.seed", "model.seed")
FILES = ("ablation.md", "ablation.csv", "ablation_units.csv", "ablation.png")


def reported_rig(variant: str) -> str:
    """The records variant a row reports: ``finetuned`` for the fine-tuning variants (names
    starting with ``finetune``), ``calibrated`` ("Ours") for every other; the reference row
    :data:`REFERENCE` reports ``baseline``."""
    if variant == REFERENCE:
        return "baseline"
    return "finetuned" if variant.startswith("finetune") else "calibrated"


class AblationJob(NamedTuple):
    """One job folder: path (relative to the collected folder), variant and seed (None when
    unknown), status "done" | "failed" | "unfinished", error, config (the nested config.yaml, {}
    when missing) and records (records.csv rows, numbers as floats; [] unless done)."""

    path: str
    variant: Optional[str]
    seed: Optional[int]
    status: str
    error: Optional[str]
    config: dict
    records: list


def _from_path(rel: Path) -> tuple[Optional[str], Optional[int]]:
    """(variant, seed) from a folder's name: ``<variant>/seed<s>`` or Hydra's ``ablation=<v>,data.seed=<s>``."""
    variant = seed = None
    pairs = dict(p.split("=", 1) for part in rel.parts for p in part.split(",") if "=" in p)
    if "ablation" in pairs:
        variant = pairs["ablation"]
    if "data.seed" in pairs and re.fullmatch(r"-?\d+", pairs["data.seed"]):
        seed = int(pairs["data.seed"])
    parts = rel.parts
    if len(parts) >= 2 and (m := re.fullmatch(r"seed(-?\d+)", parts[-1])):
        seed = int(m.group(1)) if seed is None else seed
        variant = variant or parts[-2]
    return variant, seed


def read_records(path: Path) -> list[dict]:
    """records.csv rows with the numeric fields as floats ("True"/"False" of ``training`` as bools)."""
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            r = {}
            for k, v in row.items():
                if k == "training":
                    r[k] = v == "True"
                    continue
                try:
                    r[k] = float(v)
                except (TypeError, ValueError):
                    r[k] = v
            out.append(r)
    return out


def find_jobs(root: Path) -> list[AblationJob]:
    """Every Table 1 job folder under ``root`` (module doc), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (expected experiments.ablate's or a multirun's output folder)")
    dirs = {p.parent for name in (CONFIG_FILE, STATUS_FILE) for p in root.rglob(name)
            if p.parent != root and not {".hydra", "wandb"} & set(p.relative_to(root).parts)}
    jobs = []
    for d in sorted(dirs):
        rel = d.relative_to(root)
        status = read_status(d)
        config, error = {}, None
        if (d / CONFIG_FILE).exists():
            try:
                config = yaml.safe_load((d / CONFIG_FILE).read_text()) or {}
            except yaml.YAMLError as e:
                error = f"{CONFIG_FILE}: unreadable YAML ({e})"
        if config and "data" not in config:
            continue   # some other tool's config.yaml, not a Table 1 job
        state = "unfinished" if status is None else str(status.get("status"))
        error = error or (status or {}).get("error")
        records = []
        if state == "done":
            try:
                records = read_records(d / "records.csv")
            except OSError as e:
                state, error = "failed", f"records.csv: {e}"
        flat = flatten(config)
        variant, seed = _from_path(rel)
        variant = str(flat.get("ablation_name", FULL)) if config else variant
        seed = int(flat["data.seed"]) if isinstance(flat.get("data.seed"), int) else seed
        jobs.append(AblationJob(str(rel), variant, seed, state, error, config, records))
    return jobs


# ---------------------------------------------------------------- numbers


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def job_units(records: Sequence[Mapping[str, Any]], rig: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(performer, tracker): {metric: value}} of one job's ``rig``: each metric the mean over the
    held-out takes' records; recognition the training take's (NaN where it was not evaluated)."""
    groups: dict[tuple[str, str], list] = {}
    for r in records:
        if r["variant"] == rig:
            groups.setdefault((str(r["performer"]), str(r["tracker"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        held = [r for r in rs if not r["training"]]
        training = [r for r in rs if r["training"]]
        out[key] = {m: _nanmean([float(r[m]) for r in (training if m == "recognition" else held)]) for m in METRICS}
    return out


class Cell(NamedTuple):
    """One (row, tracker, metric): mean, std (ddof 0) and n over the units (NaN-free values); diff
    = mean - the full row's mean; diff_std over the n_pairs units both rows have; verdict
    "better" | "worse" | "same" | "" (no full row, or the full row itself)."""

    mean: float
    std: float
    n: int
    diff: float
    diff_std: float
    n_pairs: int
    verdict: str


class Row(NamedTuple):
    variant: str
    rig: str
    seeds: tuple
    units: dict          # {tracker or ALL: {(seed, performer): {metric: value}}}
    cells: dict          # {(tracker or ALL, metric): Cell}
    changes: str


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if not math.isnan(x)], np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), len(v)


def verdict(metric: str, diff: float, digits: Optional[int] = None) -> str:
    """better / worse by the metric's direction; "same" when the difference is 0 (at ``digits``
    decimals when given)."""
    if math.isnan(diff):
        return ""
    if diff == 0 or (digits is not None and round(diff, digits) == 0):
        return "same"
    return "better" if (diff > 0) == (metric in HIGHER_IS_BETTER) else "worse"


def _units(jobs: Sequence[AblationJob], rig: str) -> dict:
    """{tracker or ALL: {(seed, performer): {metric: value}}} of one row's done jobs."""
    per: dict[str, dict] = {}
    for j in jobs:
        for (performer, tracker), values in job_units(j.records, rig).items():
            per.setdefault(tracker, {})[(j.seed, performer)] = values
    trackers = sorted(per, key=lambda t: (t not in ("OS1", "OS2"), t))
    keys = list(dict.fromkeys(k for t in trackers for k in per[t]))
    mean = {k: {m: _nanmean([per[t][k][m] for t in trackers if k in per[t]]) for m in METRICS} for k in keys}
    return {ALL: mean, **{t: per[t] for t in trackers}}


def _cells(units: dict, full_units: Optional[dict]) -> dict:
    cells = {}
    for tracker, by_unit in units.items():
        for m in METRICS:
            mean, std, n = _stats([v[m] for v in by_unit.values()])
            diff = diff_std = math.nan
            pairs = 0
            if full_units is not None and tracker in full_units:
                ref = full_units[tracker]
                fmean = _stats([v[m] for v in ref.values()])[0]
                diff = mean - fmean
                paired = [by_unit[k][m] - ref[k][m] for k in by_unit if k in ref]
                _, diff_std, pairs = _stats(paired)
            cells[(tracker, m)] = Cell(mean, std, n, diff, diff_std, pairs, verdict(m, diff))
    return cells


def _value(config: Mapping, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _finetune_text(config: Mapping) -> str:
    ft = config.get("finetune") or {}
    if not ft.get("enabled", True):
        return "finetune: none"
    stages = [name for name, st in (ft.get("stages") or {}).items() if st is not None]
    return "finetune stages: " + ", ".join(stages)


def changes(config: Mapping, full_config: Optional[Mapping]) -> str:
    """The config keys in which a variant's job differs from the full method's (module doc's
    :data:`IGNORED` left out; a changed finetune block as its stages)."""
    if not config or not full_config:
        return "?"
    a, b = flatten(config), flatten(full_config)
    keys = sorted(k for k in set(a) | set(b)
                  if not any(k == i or (i.endswith(".") and k.startswith(i)) for i in IGNORED)
                  and json.dumps(a.get(k), sort_keys=True, default=str) != json.dumps(b.get(k), sort_keys=True, default=str))
    parts = [f"{k}={json.dumps(a.get(k), default=str)}" for k in keys if not k.startswith("finetune.")]
    if any(k.startswith("finetune.") for k in keys):
        parts.append(_finetune_text(config))
    return "; ".join(parts) if parts else "(none)"


def _order(name: str):
    return (ORDER.index(name), "") if name in ORDER else (len(ORDER), name)


class Collection(NamedTuple):
    """What :func:`collect` found: rows (full first, then the reference, then variants in
    :data:`ORDER`), jobs (all of them), not_done (jobs left out: failed, unfinished, duplicates,
    without records of the reported rig), seeds (of the rows' done jobs), world ({seed: key}),
    header (Markdown lines)."""

    rows: list
    jobs: list
    not_done: list
    seeds: list
    world: dict
    header: list


def collect(root: Path) -> Collection:
    """Read every job under ``root`` and compute the tables' numbers (module doc)."""
    jobs = find_jobs(root)
    if not jobs:
        raise FileNotFoundError(f"no job folders (with {CONFIG_FILE} or {STATUS_FILE}) under {root}")
    not_done: list[tuple[str, str]] = []
    chosen: dict[tuple[str, int], AblationJob] = {}
    for j in jobs:
        if j.status != "done":
            error = (j.error or "").strip().splitlines()[0] if j.error else ""   # the first line; run.json has it all
            not_done.append((j.path, f"{j.variant or '?'} seed {j.seed}: {j.status}" + (f" ({error})" if error else "")))
        elif j.variant is None or j.seed is None:
            not_done.append((j.path, "done, but neither its config nor its folder name says its variant and seed"))
        elif (j.variant, j.seed) in chosen:
            not_done.append((j.path, f"{j.variant} seed {j.seed}: duplicate of {chosen[(j.variant, j.seed)].path}, ignored"))
        elif not any(r["variant"] == reported_rig(j.variant) for r in j.records):
            not_done.append((j.path, f"{j.variant} seed {j.seed}: no {reported_rig(j.variant)!r} records "
                             f"(finetune=none for a fine-tuning variant?)"))
        else:
            chosen[(j.variant, j.seed)] = j
    by_variant: dict[str, list[AblationJob]] = {}
    for (variant, _), j in sorted(chosen.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1])):
        by_variant.setdefault(variant, []).append(j)
    full_jobs = by_variant.get(FULL, [])
    full_configs = {j.seed: j.config for j in full_jobs}
    full_units = _units(full_jobs, "calibrated") if full_jobs else None

    rows = []
    if full_jobs:
        rows.append(Row(FULL, "calibrated", tuple(j.seed for j in full_jobs), full_units, _cells(full_units, None),
                        "— (the full method)"))
        base = _units(full_jobs, "baseline")
        if any(base.get(ALL)):
            rows.append(Row(REFERENCE, "baseline", tuple(j.seed for j in full_jobs), base, _cells(base, full_units),
                            "generic rig: calibration off"))
    for variant, vjobs in by_variant.items():
        if variant == FULL:
            continue
        rig = reported_rig(variant)
        units = _units(vjobs, rig)
        ref_config = full_configs.get(vjobs[0].seed) or next(iter(full_configs.values()), None)
        rows.append(Row(variant, rig, tuple(j.seed for j in vjobs), units, _cells(units, full_units),
                        changes(vjobs[0].config, ref_config)))
    seeds = sorted({s for r in rows for s in r.seeds})
    world = {}
    for j in chosen.values():
        for r in j.records:
            world.setdefault(j.seed, set()).add(str(r["world"]))
    world = {s: ", ".join(sorted(world[s])) for s in sorted(world)}
    return Collection(rows, jobs, not_done, seeds, world, _header(jobs, chosen, full_jobs, seeds, world))


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()


def _header(jobs, chosen, full_jobs, seeds, world) -> list[str]:
    ref = (full_jobs or list(chosen.values()) or [j for j in jobs if j.config] or [None])[0]
    lines = []
    n_done = len(chosen)
    lines.append(f"{n_done} of {len(jobs)} jobs used; seeds {', '.join(map(str, seeds)) or '–'}.")
    if ref is None or not ref.config:
        return lines
    cfg = ref.config
    data = {k: v for k, v in (cfg.get("data") or {}).items() if k not in ("seed", "cache_dir")}
    lines.append(f"World (`data`, the same for every seed but its seed): `{_flow(data)}`.")
    lines.append("World key per seed: " + ", ".join(f"seed {s} → `{k}`" for s, k in world.items()) + ".")
    others = sorted({j.path for j in chosen.values()
                     if {k: v for k, v in (j.config.get("data") or {}).items() if k not in ("seed", "cache_dir")} != data})
    if others:
        lines.append(f"**Warning**: {len(others)} job(s) used another world config: {', '.join(others)}.")
    lines.append(f"Evaluation (the full method's; a row's own changes are in its *changes* column): "
                 f"`{_flow(cfg.get('evaluation') or {})}`.")
    cal, tr = cfg.get("calibration") or {}, cfg.get("tracker") or {}
    lines.append("Full method: calibration " + ", ".join(f"{k}={cal.get(k)}" for k in ("parameters", "reg", "w_combo", "use_masks"))
                 + "; tracker " + ", ".join(f"{k}={tr.get(k)}" for k in ("l1", "tweaker", "smoothness"))
                 + f"; {_finetune_text(cfg)} (the full row reports the calibrated rig).")
    intended = {m: _nanmean([float(r[m]) for j in full_jobs for r in j.records
                             if r["variant"] == "calibrated" and not r["training"] and m in r])
                for m in ("intended_sparsity", "intended_tweakers")}
    if not any(math.isnan(v) for v in intended.values()):
        lines.append(f"The intended (true) controls of the held-out takes: sparsity {intended['intended_sparsity']:.3f}, "
                     f"tweakers {intended['intended_tweakers']:.4f} (a solved value far below these is not better: "
                     "it misses controls).")
    return lines


# ---------------------------------------------------------------- tables and files


def _digits(metric: str) -> int:
    return DIGITS.get(metric, 3)


def _arrow(metric: str) -> str:
    return "↑" if metric in HIGHER_IS_BETTER else "↓"


def format_cell(cell: Optional[Cell], metric: str, reference: bool = False) -> str:
    """"mean ± std" (full row), or "mean ± std (+diff ▲ worse)" (the difference vs full)."""
    if cell is None or cell.n == 0:
        return "–"
    d = _digits(metric)
    text = f"{cell.mean:.{d}f}" + (f" ± {cell.std:.{d}f}" if cell.n > 1 else "")
    if reference or math.isnan(cell.diff):
        return text
    v = verdict(metric, cell.diff, d)
    if v == "same":
        return text + f" ({0:.{d}f} same)"
    return text + f" ({cell.diff:+.{d}f} {'▲' if cell.diff > 0 else '▼'} {v})"


def _label(row: Row) -> str:
    return f"**{row.variant}**" if row.variant == FULL else row.variant


def _rig_label(rig: str) -> str:
    return VARIANT_LABELS.get(rig, rig)


def tables(col: Collection) -> tuple[str, str]:
    """(main table, per-tracker table) as Markdown."""
    head = ["variant", "rig", "changes", "n"] + [f"{METRIC_LABELS.get(m, m)} {_arrow(m)}" for m in METRICS]
    sep = "|" + "---|" * 3 + "---:|" * (1 + len(METRICS))
    main = ["| " + " | ".join(head) + " |", sep]
    for row in col.rows:
        n = row.cells.get((ALL, METRICS[0]))
        cells = [format_cell(row.cells.get((ALL, m)), m, row.variant == FULL) for m in METRICS]
        main.append("| " + " | ".join([_label(row), _rig_label(row.rig), row.changes, str(n.n if n else 0)] + cells) + " |")
    trackers = list(dict.fromkeys(t for row in col.rows for t in row.units if t != ALL))
    head = ["tracker", "variant", "rig", "n"] + [f"{METRIC_LABELS.get(m, m)} {_arrow(m)}" for m in METRICS]
    per = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (1 + len(METRICS))]
    for t in trackers:
        for row in col.rows:
            if t not in row.units:
                continue
            n = row.cells.get((t, METRICS[0]))
            cells = [format_cell(row.cells.get((t, m)), m, row.variant == FULL) for m in METRICS]
            per.append("| " + " | ".join([t, _label(row), _rig_label(row.rig), str(n.n if n else 0)] + cells) + " |")
    return "\n".join(main), "\n".join(per)


def to_markdown(col: Collection, title: str = "Ablation") -> str:
    main, per = tables(col)
    n_perf = {len({p for (_, p) in row.units.get(ALL, {})}) for row in col.rows}
    lines = [f"# {title}: what each part of the method buys", ""] + col.header + [
        "",
        "Cells: mean ± std (ddof 0) over n = seeds × performers; each performer's value is the mean over the "
        "held-out takes (and, in the first table, over the trackers); recognition is on the Simon-Says "
        "training take. In brackets: the difference from **full** (▲ higher / ▼ lower; better / worse by the "
        "metric's direction, ↓ lower is better, ↑ higher is better). *rig*: which rig the row reports "
        "(Ours = calibrated, Fine-tuned, Baseline = the generic rig of the full jobs).",
        "",
    ]
    if not any(r.variant == FULL for r in col.rows):
        lines += ["**No finished `full` job: differences are left out.**", ""]
    lines += [main, "", "## Per tracker (OS1 vs OS2; differences vs full on the same tracker)", "", per, ""]
    if len(n_perf) > 1:
        lines += ["Rows differ in their number of performers; compare n.", ""]
    if col.not_done:
        lines += ["## Jobs not in the table", ""] + [f"- `{path}`: {why}" for path, why in col.not_done] + [""]
    return "\n".join(lines)


def _csv_text(rows: Sequence[Mapping]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def long_rows(col: Collection) -> list[dict]:
    """ablation.csv's rows (module doc)."""
    out = []
    for row in col.rows:
        for (tracker, metric), c in row.cells.items():
            out.append({"table": "mean over trackers" if tracker == ALL else "per tracker", "variant": row.variant,
                        "rig": row.rig, "tracker": tracker, "metric": metric, "mean": c.mean, "std": c.std, "n": c.n,
                        "diff": c.diff, "diff_std": c.diff_std, "n_pairs": c.n_pairs, "verdict": c.verdict,
                        "seeds": " ".join(map(str, row.seeds)), "changes": row.changes})
    return out


def unit_rows(col: Collection) -> list[dict]:
    return [{"variant": row.variant, "rig": row.rig, "seed": seed, "performer": performer, "tracker": tracker,
             "metric": m, "value": values[m]}
            for row in col.rows for tracker, by_unit in row.units.items()
            for (seed, performer), values in by_unit.items() for m in METRICS]


def plot(col: Collection, path: Path) -> Optional[Path]:
    """ablation.png (module doc); None when there is no full row to compare with."""
    rows = [r for r in col.rows if r.variant != FULL]
    if not rows or not any(r.variant == FULL for r in col.rows):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = 4
    nrows = math.ceil(len(METRICS) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(4.0 * ncols, 0.9 + 0.32 * len(rows) * nrows + 1.2 * nrows),
                             constrained_layout=True)
    labels = [f"{r.variant} ({_rig_label(r.rig)})" for r in rows]
    y = np.arange(len(rows))[::-1]
    for i, m in enumerate(METRICS):
        ax = axes[i // ncols, i % ncols]
        cells = [r.cells.get((ALL, m)) for r in rows]
        diff = np.array([c.diff if c else math.nan for c in cells])
        err = np.array([c.diff_std if c and not math.isnan(c.diff_std) else 0.0 for c in cells])
        colours = [{"better": "tab:green", "worse": "tab:red"}.get(verdict(m, d, _digits(m) + 1), "tab:gray") for d in diff]
        ax.barh(y, np.nan_to_num(diff), xerr=err, color=colours, alpha=0.8, ecolor="black", capsize=2)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(labels if i % ncols == 0 else [], fontsize=7)
        full = next(r for r in col.rows if r.variant == FULL).cells.get((ALL, m))
        ax.set_title(f"{METRIC_LABELS.get(m, m)} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)\n"
                     f"full = {full.mean:.{_digits(m)}f}" if full and full.n else METRIC_LABELS.get(m, m), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.xaxis.get_offset_text().set_fontsize(7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for j in range(len(METRICS), nrows * ncols):
        axes[j // ncols, j % ncols].axis("off")
    fig.suptitle(f"difference from the full method (mean over {{seeds {', '.join(map(str, col.seeds))}}} × performers; "
                 "error bars: std of the paired differences)", fontsize=9)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write(root: Path, col: Collection, plots: bool = True) -> dict[str, Path]:
    """Write :data:`FILES` into ``root`` -> {name: path}."""
    root = Path(root)
    paths = {name: root / name for name in FILES[:3]}
    write_atomic(paths["ablation.md"], to_markdown(col, f"Ablation ({root.name})"))
    write_atomic(paths["ablation.csv"], _csv_text(long_rows(col)))
    write_atomic(paths["ablation_units.csv"], _csv_text(unit_rows(col)))
    if plots and (png := plot(col, root / "ablation.png")) is not None:
        paths["ablation.png"] = png
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="experiments.ablate's output folder, or a multirun's")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        col = collect(args.folder)
    except FileNotFoundError as e:
        print(f"ablation_table: {e}", file=sys.stderr)
        return 2
    paths = write(args.folder, col, plots=not args.no_plots)
    print(paths["ablation.md"].read_text())
    for p in paths.values():
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
