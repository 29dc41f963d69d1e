"""Join a sweep's job directories into one table (Hydra multirun or the vectorised sweep alike).

    python -m experiments.collect outputs/table1/multiruns/<time>      # -> sweep.md, sweep.csv, ...

A job directory is any folder under the sweep holding a ``config.yaml`` or a ``run.json``
(:mod:`experiments.jobs`). The swept parameters are found, not declared: the config keys whose
values differ between the jobs. Per job the collector reads ``run.json`` (status; error when
failed; no file: unfinished) and ``metrics.json``, and writes into the sweep folder:

- ``sweep.csv`` / ``sweep.md``: one row per job: its name, status, the swept parameters and the
  headline metrics -- each ``<variant>/<metric>`` the mean over the held-out takes and trackers of
  the mean over performers (failed and unfinished jobs have empty cells and their error);
- ``sweep_long.csv``: every ``metrics.json`` entry of every finished job (job, key, value);
- ``sweep_plots.png`` and ``sweep_tradeoff.png`` (each metric against each parameter; geometry
  error against sparsity), when at least one job finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import yaml

from experiments.jobs import CONFIG_FILE, STATUS_FILE, read_status, write_atomic

HEADLINE = ("sparsity", "tweakers", "control_mae", "fit_tracked_mm", "fit_truth_mm", "retarget_mm")
VARIANTS = ("baseline", "calibrated", "finetuned")
# config keys that differ between jobs without being a swept setting
IGNORED = ("task_name", "logger.", "compilation_cache", "data.cache_dir")


class Job(NamedTuple):
    """One job directory: name (its path under the sweep), status "done" | "failed" | "unfinished",
    error (failed jobs), config (flattened ``{"a.b": value}``), metrics (``metrics.json``)."""

    name: str
    status: str
    error: Optional[str]
    config: dict
    metrics: dict


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under ``sweep_dir`` (sorted by name); Hydra's own ``.hydra`` folders
    and the sweep folder's own files are not jobs."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder (expected a sweep's output folder)")
    dirs = {p.parent for name in (CONFIG_FILE, STATUS_FILE) for p in sweep_dir.rglob(name)
            if ".hydra" not in p.parts and p.parent != sweep_dir}
    jobs = []
    for d in sorted(dirs):
        status = read_status(d)
        config = {}
        if (d / CONFIG_FILE).exists():
            try:
                config = flatten(yaml.safe_load((d / CONFIG_FILE).read_text()) or {})
            except yaml.YAMLError as e:
                status = {"status": "failed", "error": f"{d / CONFIG_FILE}: unreadable YAML ({e})"}
        metrics = {}
        if status is not None and status.get("status") == "done":
            try:
                metrics = json.loads((d / "metrics.json").read_text())
            except (OSError, ValueError) as e:
                status = {"status": "failed", "error": f"{d / 'metrics.json'}: {e}"}
        state = "unfinished" if status is None else str(status.get("status"))
        jobs.append(Job(str(d.relative_to(sweep_dir)), state, status.get("error") if status else None, config, metrics))
    return jobs


def swept_parameters(jobs: Sequence[Job]) -> list[str]:
    """Config keys whose values differ between the jobs (sorted), ignoring :data:`IGNORED`."""
    keys = sorted({k for j in jobs for k in j.config})
    out = []
    for k in keys:
        if any(k == i or (i.endswith(".") and k.startswith(i)) for i in IGNORED):
            continue
        values = {json.dumps(j.config.get(k), sort_keys=True, default=str) for j in jobs if j.config}
        if len(values) > 1:
            out.append(k)
    return out


def headline(metrics: Mapping[str, Any], metric_names: Sequence[str] = HEADLINE) -> dict:
    """``{"<variant>/<metric>": mean}`` over the held-out takes and trackers of a job's
    ``metrics.json`` (keys ``<take>/<tracker>/<variant>/<metric>/mean``; the Simon-Says training
    take is left out); None where no cell is defined."""
    cells: dict[str, list[float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 5 or parts[4] != "mean" or parts[0] == "simon_says" or parts[3] not in metric_names:
            continue
        if value is not None and math.isfinite(value):
            cells.setdefault(f"{parts[2]}/{parts[3]}", []).append(float(value))
    present = [v for v in VARIANTS if any(k.startswith(v + "/") for k in cells)]
    present += sorted({k.split("/")[0] for k in cells} - set(present))
    return {f"{v}/{m}": (sum(cells[f"{v}/{m}"]) / len(cells[f"{v}/{m}"]) if f"{v}/{m}" in cells else None)
            for v in present for m in metric_names}


def collect(sweep_dir: Path) -> tuple[list[dict], list[str], list[str]]:
    """-> (rows, parameters, metric columns): one row per job (module doc)."""
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job folders (with {CONFIG_FILE} or {STATUS_FILE}) under {sweep_dir}")
    params = swept_parameters(jobs)
    heads = {j.name: headline(j.metrics) for j in jobs}
    columns = list(dict.fromkeys(k for h in heads.values() for k in h))
    rows = []
    for j in jobs:
        row = {"job": j.name, "status": j.status}
        row.update({p: j.config.get(p) for p in params})
        row.update({c: heads[j.name].get(c) for c in columns})
        row["error"] = j.error or ""
        rows.append(row)
    return rows, params, columns


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(rows: Sequence[Mapping], params: Sequence[str], columns: Sequence[str], title: str) -> str:
    head = ["job", "status"] + list(params) + list(columns)
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * (2 + len(params)) + "---:|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(h)) for h in head) + " |")
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        lines += ["", "Not done:"] + [f"- `{r['job']}`: {r['status']}" + (f" ({r['error']})" if r["error"] else "")
                                     for r in failed]
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[Mapping]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def write_collection(sweep_dir: Path, rows, params, columns, plots: bool = True) -> dict[str, Path]:
    """Write the module docstring's files into ``sweep_dir`` -> {name: path}."""
    sweep_dir = Path(sweep_dir)
    paths = {"sweep.md": sweep_dir / "sweep.md", "sweep.csv": sweep_dir / "sweep.csv",
             "sweep_long.csv": sweep_dir / "sweep_long.csv"}
    done = sum(r["status"] == "done" for r in rows)
    write_atomic(paths["sweep.md"], to_markdown(rows, params, columns, f"Sweep {sweep_dir.name}: {done} of "
                                                f"{len(rows)} jobs done; metrics: mean over held-out takes and "
                                                "trackers of the mean over performers"))
    write_atomic(paths["sweep.csv"], _csv(rows))
    long = [{"job": j.name, "key": k, "value": v} for j in find_jobs(sweep_dir) for k, v in sorted(j.metrics.items())]
    write_atomic(paths["sweep_long.csv"], _csv(long))
    if plots and done and params:
        from experiments.figures import plot_sweep, plot_tradeoff   # matplotlib only when plotting
        numeric = [p for p in params if all(isinstance(r.get(p), (int, float)) for r in rows if r["status"] == "done")]
        if numeric:
            paths["sweep_plots.png"] = sweep_dir / "sweep_plots.png"
            plot_sweep(rows, numeric, list(columns), paths["sweep_plots.png"])
            x, y = "calibrated/sparsity", "calibrated/fit_tracked_mm"
            if x in columns and y in columns:
                paths["sweep_tradeoff.png"] = sweep_dir / "sweep_tradeoff.png"
                plot_tradeoff(rows, x, y, paths["sweep_tradeoff.png"], label_params=numeric)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun's or vectorised sweep's output folder")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        rows, params, columns = collect(args.sweep_dir)
    except FileNotFoundError as e:
        print(f"collect: {e}", file=sys.stderr)
        return 2
    paths = write_collection(args.sweep_dir, rows, params, columns, plots=not args.no_plots)
    print((args.sweep_dir / "sweep.md").read_text())
    for p in paths.values():
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
