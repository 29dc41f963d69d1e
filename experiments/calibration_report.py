"""A calibration report per performer: what a researcher checks before trusting a Simon-Says
calibration. Written by :mod:`experiments.calibrate` (``report=true``) into ``<performer>/report/``:

- ``report.md``: the performer, the tracker, the Simon-Says samples used (and the expressions with
  no labelled hold frame, the unlabelled frames), the solver's run (objective before -> after,
  iterations, converged / stalled / stopped at maxiter), a table per Simon-Says expression of the
  residual before / after (mm) and the improvement, the figures below embedded by relative path;
- ``residuals.png``: (a) per expression the residual before and after, bars;
- ``objective.png``: (b) the objective (mm^2) per iteration;
- ``faces.png``: (c) the worst and the most improved expressions rendered: tracked geometry | the
  generic rig at the expression's controls | the calibrated rig | the error of each (mm, colour;
  grey: outside the expression's mask, which the residual ignores);
- ``control_change.png`` and ``control_change.csv``: (d) per control, how far it moves the face at
  full activation with the generic and the calibrated rig, and how much calibration changed that
  motion (peak over vertices, mm), sorted by the change (the figure: the most changed controls).

    paths = write_report(folder, CalibrationRun(performer, tracker, model, rig, beta, data, hold,
                                                calibrated, numbers, expression_names, control_names,
                                                sample_residuals, settings))

Every number in the table is the calibration's own (``calibration.json``, ``numbers``); the
figures' geometry is recomputed with :func:`flamejax.semantic.rig.rig_vertices_frames` (one
batched call per rig). Meshes are drawn with :mod:`flamejax.render` and laid out with
experiments/figures.py's helpers; every file is written atomically. Cheap: on the
``experiment=quick`` world about a second per performer after the first (which also compiles).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.figures import (AVATAR_COLOR, CONTROL_COLORS, PERFORMER_COLOR, difference_colors,  # noqa: E402
                                 save_figure)
from experiments.jobs import write_atomic  # noqa: E402
from flamejax import render as R  # noqa: E402
from flamejax.calibrate import CalibratedRig, SimonSaysData  # noqa: E402
from flamejax.flame import FlameModel  # noqa: E402
from flamejax.semantic.rig import SemanticRig, rig_vertices_frames  # noqa: E402

FILES = {"report": "report.md", "residuals": "residuals.png", "objective": "objective.png",
         "faces": "faces.png", "control_change": "control_change.png", "control_change_csv": "control_change.csv"}
RESIDUAL_HEADING = "## Residual per Simon-Says expression"
RESIDUAL_COLUMNS = ("expression", "samples", "before (mm)", "after (mm)", "improvement (mm)", "improvement (%)")
FACE_COLUMNS = ("tracked", "generic rig", "calibrated rig", "error: generic (mm)", "error: calibrated (mm)")
OUTSIDE_MASK = (0.86, 0.86, 0.86)   # vertices the expression's residual does not weigh


class CalibrationRun(NamedTuple):
    """One performer's calibration, as the report reads it.

    performer, tracker: names; model: the generic FlameModel (expression basis E0 (E, V, 3));
    rig: the generic SemanticRig; beta (S,) the performer's identity; data: the calibration
    samples (:class:`flamejax.calibrate.SimonSaysData`: controls (N, K), vertices (N, V, 3)
    metres, weights (N, V), expression (N,)); hold (T,) the Simon-Says take's hold labels
    (expression index, -1: not labelled); calibrated: the :class:`flamejax.calibrate.CalibratedRig`;
    numbers: calibration.json's dict (:func:`experiments.calibrate.calibration_numbers`);
    expression_names (E_ss,), control_names (K,); sample_residuals: (before, after) (N,) metres,
    each sample's weighted RMS (CalibrationState.residual_before / residual_after); settings:
    what to show of the run's settings (name -> value: solver, reg, tol, maxiter, frames ...)."""

    performer: str
    tracker: str
    model: FlameModel
    rig: SemanticRig
    beta: Any
    data: SimonSaysData
    hold: np.ndarray
    calibrated: CalibratedRig
    numbers: Mapping[str, Any]
    expression_names: Sequence[str]
    control_names: Sequence[str]
    sample_residuals: tuple
    settings: Mapping[str, Any]


# ---------------------------------------------------------------- numbers


def coverage(hold, expression, expression_names: Sequence[str]) -> dict:
    """What the take gave the calibration: hold (T,) labels of the take (-1: not labelled);
    expression (N,) the samples' expression index -> {frames, labelled, unlabelled, samples,
    expressions (names with samples, in Simon-Says order), missing (names without a labelled hold
    frame)}."""
    hold, expression = np.asarray(hold), np.asarray(expression)
    present = sorted({int(e) for e in expression if e >= 0})
    return {"frames": int(len(hold)), "labelled": int(np.sum(hold >= 0)), "unlabelled": int(np.sum(hold < 0)),
            "samples": int(np.sum(expression >= 0)),
            "expressions": [expression_names[e] for e in present],
            "missing": [n for i, n in enumerate(expression_names) if i not in present]}


def expression_rows(numbers: Mapping[str, Any], expression, expression_names: Sequence[str]) -> list[dict]:
    """The residual table: one row per Simon-Says expression with samples, in Simon-Says order:
    expression, samples, before_mm, after_mm (calibration.json's ``per_expression``),
    improvement_mm (before - after), improvement_pct (of before; 0 where before is 0)."""
    expression = np.asarray(expression)
    rows = []
    for i, name in enumerate(expression_names):
        if name not in numbers["per_expression"]:
            continue
        r = numbers["per_expression"][name]
        before, after = float(r["before_mm"]), float(r["after_mm"])
        rows.append({"expression": name, "samples": int(np.sum(expression == i)), "before_mm": before,
                     "after_mm": after, "improvement_mm": before - after,
                     "improvement_pct": 100.0 * (before - after) / before if before > 0 else 0.0})
    return rows


def without_coefficients(rig: SemanticRig, controls, expression, expression_names: Sequence[str],
                         rel: float = 1e-3) -> list[str]:
    """The expressions whose samples' controls (N, K) set (almost) no FLAME expression coefficient:
    max |psi| below ``rel`` of the largest sample's, psi = (B c + g)[:n_expr] (the neutral face,
    pure jaw rotations). Calibrating the expression basis alone cannot change how the rig fits
    them (it changes what psi multiplies)."""
    theta = np.asarray(controls, np.float64) @ np.asarray(rig.basis, np.float64).T + np.asarray(rig.offset, np.float64)
    psi = np.abs(theta[:, :rig.n_expr]).max(-1) if rig.n_expr else np.zeros(len(theta))
    expression = np.asarray(expression)
    small = rel * psi.max(initial=0.0)
    return [n for i, n in enumerate(expression_names) if np.any(expression == i) and psi[expression == i].max() <= small]


def solver_status(numbers: Mapping[str, Any], tol: float, maxiter: int) -> str:
    """"stalled" (two failed steps in a row: L-BFGS stopped at its last good iterate), "converged"
    (gradient norm <= tol), or "stopped at maxiter" (neither: more iterations might lower f)."""
    if numbers["stalled"]:
        return "stalled"
    if numbers.get("gradient_norm", np.inf) <= tol:
        return "converged"
    return "stopped at maxiter" if numbers["iterations"] >= maxiter else "stopped"


def pick_faces(rows: Sequence[dict], n: int) -> list[int]:
    """Indices into ``rows`` for the face figure: the ``n`` worst (largest residual after
    calibration), then the ``n`` most improved of the rest; all rows (worst first) when there are
    at most 2n."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["after_mm"])
    if len(rows) <= 2 * n:
        return order
    worst = order[:n]
    rest = sorted(order[n:], key=lambda i: -rows[i]["improvement_mm"])
    return worst + rest[:n]


def typical_sample(expression, residual, e: int) -> int:
    """The sample of expression ``e`` whose residual is closest to the expression's RMS (one
    sample per expression with frames="mean"; with "all" a typical hold frame, not the worst)."""
    members = np.flatnonzero(np.asarray(expression) == e)
    r = np.asarray(residual)[members]
    return int(members[np.argmin(np.abs(r - np.sqrt(np.mean(r ** 2))))])


def rig_meshes(model: FlameModel, rig: SemanticRig, exprdirs, beta, controls) -> np.ndarray:
    """(T, V, 3) metres: the rig (with expression basis ``exprdirs`` (E, V, 3)) at controls (T, K),
    identity ``beta``, canonical pose. Generic and calibrated calls share one compiled program."""
    return np.asarray(rig_vertices_frames(model, rig, jnp.asarray(controls, model.dtype),
                                          shape=jnp.asarray(beta, model.dtype),
                                          exprdirs=jnp.asarray(exprdirs, model.dtype)))


def control_change(neutral: tuple, full: tuple) -> dict:
    """Per control, from meshes of (generic, calibrated): ``neutral`` each (V, 3) at zero controls,
    ``full`` each (K, V, 3) with one control at 1. -> {peak_before_mm, peak_after_mm (K,): max over
    vertices of the control's displacement from neutral; peak_change_mm, rms_change_mm (K,): max and
    RMS over vertices of the change of that displacement (the control's column in vertex space)}."""
    before = full[0] - neutral[0][None]
    after = full[1] - neutral[1][None]
    change = np.linalg.norm(after - before, axis=-1) * 1e3
    return {"peak_before_mm": np.linalg.norm(before, axis=-1).max(-1) * 1e3,
            "peak_after_mm": np.linalg.norm(after, axis=-1).max(-1) * 1e3,
            "peak_change_mm": change.max(-1), "rms_change_mm": np.sqrt(np.mean(change ** 2, -1))}


# ---------------------------------------------------------------- figures


def plot_residuals(rows: Sequence[dict], path: os.PathLike, *, title: str = "") -> Path:
    """(a) per expression the residual before / after calibration (mm), horizontal bars in the
    table's order. Writes a PNG -> its path."""
    n = len(rows)
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.3 * n), constrained_layout=True)
    ax.barh(y + 0.2, [r["before_mm"] for r in rows], height=0.4, color=CONTROL_COLORS["baseline"], label="generic rig")
    ax.barh(y - 0.2, [r["after_mm"] for r in rows], height=0.4, color=CONTROL_COLORS["calibrated"],
            label="calibrated rig")
    ax.set_yticks(y)
    ax.set_yticklabels([r["expression"] for r in rows], fontsize=8)
    ax.set_xlabel("residual: weighted RMS over the expression's mask (mm)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "residual per Simon-Says expression", fontsize=10)
    return save_figure(fig, path)


def plot_objective(history: Sequence[float], path: os.PathLike, *, status: str = "", title: str = "") -> Path:
    """(b) left: the objective (mm^2) after each iteration (0: the generic rig); right: its distance
    to the final value, log axis (the convergence rate: CG's is linear, a stall is a flat tail).
    Writes a PNG -> its path."""
    h = np.asarray(history, float)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4), constrained_layout=True)
    color = CONTROL_COLORS["calibrated"]
    axes[0].plot(np.arange(len(h)), h, marker="o", markersize=3, color=color)
    axes[0].set_ylabel("objective (mm$^2$)")
    if len(h):
        axes[0].annotate(f"{h[-1]:.4g}" + (f" ({status})" if status else ""), (len(h) - 1, h[-1]),
                         textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=8)
    gap = h[:-1] - h[-1] if len(h) > 1 else np.zeros(0)
    keep = gap > 0
    if keep.any():
        axes[1].semilogy(np.flatnonzero(keep), gap[keep], marker="o", markersize=3, color=color)
    else:
        axes[1].text(0.5, 0.5, "no decrease", ha="center", va="center", transform=axes[1].transAxes)
    axes[1].set_ylabel("objective - final (mm$^2$)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "objective per iteration", fontsize=10)
    return save_figure(fig, path)


def face_region(model: FlameModel, weights) -> np.ndarray:
    """(V,) bool, what the face figure frames: FLAME's "face" mask when the model has one, else the
    union of the samples' masks (weights (N, V)) that cover less than half the head (a mask of
    everything, e.g. the neutral expression's, would frame the scalp and the neck too)."""
    n_v = model.n_vertices
    region = np.zeros(n_v, bool)
    if "face" in model.masks:
        region[np.asarray(model.masks["face"])] = True
        return region
    inside = np.asarray(weights) > 0
    local = inside[inside.sum(1) < n_v / 2]
    return local.any(0) if local.any() else np.ones(n_v, bool)


def face_panels(tracked, generic, calibrated, weights, faces, *, region=None, cell: int = 192, yaw: float = 0.35,
                supersample: int = 1) -> tuple[list[list[np.ndarray]], float, np.ndarray]:
    """(c)'s images: tracked, generic, calibrated (R, V, 3) metres, weights (R, V) the samples'
    mask weights, faces (F, 3) -> (rows of :data:`FACE_COLUMNS` panels (cell, cell, 3) uint8, the
    colour scale's top vmax_mm, (R, 2) RMS error in the mask of generic / calibrated, mm). One
    camera frames every mesh, so the panels compare; one colour scale for every heat map (the 99th
    percentile of the in-mask errors, so one spike does not wash out the rest); the camera frames
    ``region`` (V,) bool (default: the vertices inside any shown mask)."""
    tracked, generic, calibrated = (np.asarray(a, np.float64) for a in (tracked, generic, calibrated))
    inside = np.asarray(weights) > 0
    errors = [np.linalg.norm(m - tracked, axis=-1) * 1e3 for m in (generic, calibrated)]       # 2 x (R, V)
    in_mask = np.concatenate([e[inside] for e in errors])
    vmax = max(float(np.percentile(in_mask, 99)) if in_mask.size else 0.0, 0.05)
    if region is None:
        region = inside.any(0)
    region = np.asarray(region, bool)
    if not region.any():
        region = np.ones(tracked.shape[1], bool)
    camera = R.fit_camera([m[:, region].reshape(-1, 3) for m in (tracked, generic, calibrated)], cell, margin=0.06,
                          rotation=R.yaw_rotation(yaw))
    rows, rms = [], np.zeros((len(tracked), 2))
    for r in range(len(tracked)):
        panels = [R.render(tracked[r], faces, camera, color=PERFORMER_COLOR, supersample=supersample),
                  R.render(generic[r], faces, camera, color=AVATAR_COLOR, supersample=supersample),
                  R.render(calibrated[r], faces, camera, color=AVATAR_COLOR, supersample=supersample)]
        for k, (mesh, err) in enumerate(zip((generic, calibrated), errors)):
            colors = difference_colors(err[r], vmax)
            colors[~inside[r]] = OUTSIDE_MASK
            panels.append(R.render(mesh[r], faces, camera, color=colors, ambient=0.55, supersample=supersample))
            w = np.asarray(weights[r], float)
            rms[r, k] = np.sqrt(np.sum(w * err[r] ** 2) / max(w.sum(), 1e-30))
        rows.append(panels)
    return rows, vmax, rms


def plot_faces(grid, labels: Sequence[str], vmax_mm: float, path: os.PathLike, *, title: str = "") -> Path:
    """(c) the face grid of :func:`face_panels` with a row label each and one colour bar. The
    panels are joined into one image shown in one axes (a grid of axes costs matplotlib's layout
    a second). Writes a PNG -> its path."""
    n_rows, n_cols = len(grid), len(FACE_COLUMNS)
    image = np.concatenate([R.side_by_side(row) for row in grid], 0)
    h, w = grid[0][0].shape[:2]
    height = 1.9 * n_rows + 0.6
    fig = plt.figure(figsize=(1.9 * n_cols + 2.4, height))
    ax = fig.add_axes((0.13, 0.02, 0.74, 1 - 0.6 / height))
    ax.imshow(image)
    ax.set_axis_off()
    for c, name in enumerate(FACE_COLUMNS):
        ax.text((c + 0.5) * w, -0.03 * h, name, ha="center", va="bottom", fontsize=8)
    for r, label in enumerate(labels):
        ax.text(-0.04 * w, (r + 0.5) * h, label, ha="right", va="center", fontsize=8)
    cax = fig.add_axes((0.9, 0.25, 0.015, 0.5))
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, vmax_mm), cmap="magma_r")
    fig.colorbar(mappable, cax=cax, label="|rig - tracked| (mm)")
    fig.suptitle(title or "worst and most improved expressions", fontsize=10)
    return save_figure(fig, path)


def plot_control_change(names: Sequence[str], change: Mapping[str, np.ndarray], path: os.PathLike, *,
                        top: int = 30, title: str = "") -> Path:
    """(d) the ``top`` controls calibration changed most (peak change, mm), sorted: left, how far
    each moves the face at full activation with the generic and the calibrated rig (peak, mm);
    right, the peak change of its motion. Writes a PNG -> its path."""
    order = np.argsort(-change["peak_change_mm"], kind="stable")[:top]
    n = len(order)
    y = np.arange(n)[::-1]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(9.5, 1.3 + 0.26 * n), constrained_layout=True,
                             gridspec_kw={"width_ratios": [3, 2]})
    axes[0].barh(y + 0.2, change["peak_before_mm"][order], height=0.4, color=CONTROL_COLORS["baseline"],
                 label="generic rig")
    axes[0].barh(y - 0.2, change["peak_after_mm"][order], height=0.4, color=CONTROL_COLORS["calibrated"],
                 label="calibrated rig")
    axes[0].set_xlabel("peak displacement at full activation (mm)")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].barh(y, change["peak_change_mm"][order], height=0.6, color="#2166ac")
    axes[1].set_xlabel("peak change of the control's motion (mm)")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([names[i] for i in order], fontsize=7)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"the {n} controls calibration changed most", fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------- Markdown


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(run: CalibrationRun, rows: Sequence[dict], cover: dict, status: str, change: Mapping[str, np.ndarray],
             shown: Sequence[str], figures: Mapping[str, str], seconds: float) -> str:
    """The report's Markdown (figures: key -> file name relative to the report)."""
    fixed = []
    if run.settings.get("parameters", "exprdirs") == "exprdirs":
        fixed = without_coefficients(run.rig, run.data.controls, run.data.expression, run.expression_names)
    num, s = run.numbers, run.settings
    frames = s.get("calibration_frames", "mean")
    per = "one per expression: the mean of its hold frames" if frames == "mean" else "every labelled hold frame"
    obj0, obj1 = num["objective_before"], num["objective_after"]
    drop = 100 * (obj0 - obj1) / obj0 if obj0 > 0 else 0.0
    grad = num.get("gradient_norm")
    summary = [
        ("performer", run.performer),
        ("tracker", f"{run.tracker} (its tracking of the Simon-Says take is the calibration data)"),
        ("Simon-Says samples used", f"{cover['samples']} ({per}) of {len(cover['expressions'])} expressions"),
        ("labelled hold frames", f"{cover['labelled']} of {cover['frames']} frames ({cover['unlabelled']} unlabelled: "
                                 "ramps and rests, not used)"),
        ("expressions missing", ", ".join(cover["missing"]) + " (no labelled hold frame)" if cover["missing"] else "none"),
        ("settings", ", ".join(f"{k} {v}" for k, v in s.items())),
        ("objective (mm²)", f"{obj0:.4f} → {obj1:.4f} ({drop:.1f} % lower) in {num['iterations']} iterations: "
                            f"**{status}**" + (f" (gradient norm {grad:.2g})" if grad is not None else "")),
        ("mean residual (mm)", f"{num['residual_before_mm']:.4f} → {num['residual_after_mm']:.4f}"),
    ]
    if "combination_drift_max_mm" in num:
        summary.append(("combinations' drift (mm)", f"at most {num['combination_drift_max_mm']:.4f} RMS between the "
                                                    "calibrated and the generic rig at the combination targets"))
    summary.append(("time", f"calibration {num.get('seconds', float('nan')):.1f} s, this report {seconds:.1f} s"))

    table = _table(RESIDUAL_COLUMNS, [(r["expression"], r["samples"], f"{r['before_mm']:.4f}", f"{r['after_mm']:.4f}",
                                       f"{r['improvement_mm']:.4f}", f"{r['improvement_pct']:.1f}") for r in rows],
                   "lrrrrr")
    order = np.argsort(-change["peak_change_mm"], kind="stable")[:10]
    names = run.control_names
    controls = _table(("control", "peak before (mm)", "peak after (mm)", "peak change (mm)", "RMS change (mm)"),
                      [(names[i], f"{change['peak_before_mm'][i]:.3f}", f"{change['peak_after_mm'][i]:.3f}",
                        f"{change['peak_change_mm'][i]:.3f}", f"{change['rms_change_mm'][i]:.3f}") for i in order],
                      "lrrrr")
    worse = [r["expression"] for r in rows if r["improvement_mm"] < 0]
    text = [
        f"# Calibration report: {run.performer} ({run.tracker})", "",
        "What to check before trusting this calibration: that it used the expressions you expect, that the "
        "solver converged, which expressions it still does not fit, and which controls it changed.", "",
        *(f"- **{key}**: {value}" for key, value in summary), "",
        RESIDUAL_HEADING, "",
        "The rig at each expression's intended controls against the tracked geometry: the weighted RMS distance over "
        "the expression's mask (mm; the RMS over its samples), before (the generic rig) and after calibration."
        + (f" Worse after calibration: {', '.join(worse)}." if worse else "")
        + (f" Out of this calibration's reach: {', '.join(fixed)} (their controls set almost no FLAME "
           "expression coefficient: neutral, pure jaw rotations; calibrating the expression basis cannot change them, "
           "calibration.parameters=rig or both also calibrates the rig's B and g)." if fixed else ""), "",
        table, "",
        f"![residual per expression]({figures['residuals']})", "",
        "## Objective per iteration", "",
        f"![objective per iteration]({figures['objective']})", "",
        "## Worst and most improved expressions", "",
        f"Rows: {', '.join(shown)}. Columns: the tracked geometry, the generic and the calibrated rig at the "
        "expression's intended controls (the performer's identity, canonical pose), and each rig's distance to the "
        "tracked geometry (one colour scale; grey: outside the expression's mask, not part of the residual).", "",
        f"![faces]({figures['faces']})", "",
        "## How much each control moves the face", "",
        "Per control at full activation (the others at 0), the peak displacement from the neutral face (max over "
        "vertices, mm) with the generic and the calibrated rig, and the change calibration made to that motion; "
        f"the most changed first. Every control: [{FILES['control_change_csv']}]({FILES['control_change_csv']}).", "",
        f"![control change]({figures['control_change']})", "",
        controls, "",
    ]
    return "\n".join(text)


def parse_residual_table(text: str) -> list[dict]:
    """The residual table of a report.md back as rows {expression, samples, before_mm, after_mm,
    improvement_mm, improvement_pct} (for tests and tools): the first table after
    :data:`RESIDUAL_HEADING`."""
    lines = text.splitlines()
    rest = lines[lines.index(RESIDUAL_HEADING) + 1:]
    first = next(i for i, ln in enumerate(rest) if ln.startswith("|"))
    table = []
    for ln in rest[first:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    header = [c.strip() for c in table[0].strip()[1:-1].split(" | ")]
    if tuple(header) != RESIDUAL_COLUMNS:
        raise ValueError(f"the residual table's columns are {header}, expected {list(RESIDUAL_COLUMNS)}")
    rows = []
    for ln in table[2:]:
        cells = [c.strip().replace("\\|", "|") for c in ln.strip()[1:-1].split(" | ")]
        rows.append({"expression": cells[0], "samples": int(cells[1]), "before_mm": float(cells[2]),
                     "after_mm": float(cells[3]), "improvement_mm": float(cells[4]), "improvement_pct": float(cells[5])})
    return rows


# ---------------------------------------------------------------- everything


def write_report(folder: os.PathLike, run: CalibrationRun, *, faces: int = 3, cell: int = 192, top: int = 30) -> dict[str, Path]:
    """Write the module doc's files into ``folder`` -> {key of :data:`FILES`: path}. faces: how many
    worst and most improved expressions the face figure shows (2 x faces rows at most); cell:
    pixels per face panel; top: controls in the control-change figure."""
    start = time.perf_counter()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data, num = run.data, run.numbers
    expression = np.asarray(data.expression)
    rows = expression_rows(num, expression, run.expression_names)
    cover = coverage(run.hold, expression, run.expression_names)
    status = solver_status(num, float(run.settings.get("tol", 0.0)), int(run.settings.get("maxiter", 0)))

    # one batched call per rig: neutral, each control alone at 1, the shown expressions' samples
    picked = pick_faces(rows, faces)
    index = {n: i for i, n in enumerate(run.expression_names)}
    samples = [typical_sample(expression, run.sample_residuals[1], index[rows[i]["expression"]]) for i in picked]
    k = run.rig.n_controls
    controls = np.concatenate([np.zeros((1, k)), np.eye(k), np.asarray(data.controls)[samples]])
    generic = rig_meshes(run.model, run.rig, run.model.exprdirs, run.beta, controls)
    calibrated = rig_meshes(run.model, run.calibrated.rig, run.calibrated.exprdirs, run.beta, controls)
    change = control_change((generic[0], calibrated[0]), (generic[1:k + 1], calibrated[1:k + 1]))

    paths = {}
    who = f"{run.performer} ({run.tracker})"
    paths["residuals"] = plot_residuals(rows, out / FILES["residuals"],
                                        title=f"{who}: residual per Simon-Says expression, before and after calibration")
    paths["objective"] = plot_objective(num["history"], out / FILES["objective"], status=status,
                                        title=f"{who}: calibration objective, {num['iterations']} iterations ({status})")
    grid, vmax, rms = face_panels(np.asarray(data.vertices)[samples], generic[k + 1:], calibrated[k + 1:],
                                  np.asarray(data.weights)[samples], np.asarray(run.model.faces), cell=cell,
                                  region=face_region(run.model, data.weights))
    labels = [f"{rows[i]['expression']}\n{rms[j, 0]:.3f} → {rms[j, 1]:.3f} mm" for j, i in enumerate(picked)]
    paths["faces"] = plot_faces(grid, labels, vmax, out / FILES["faces"],
                                title=f"{who}: the worst and the most improved expressions")
    paths["control_change"] = plot_control_change(run.control_names, change, out / FILES["control_change"], top=top,
                                                  title=f"{who}: the controls calibration changed most")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = ("peak_before_mm", "peak_after_mm", "peak_change_mm", "rms_change_mm")
    writer.writerow(("control", *keys))
    for i in np.argsort(-change["peak_change_mm"], kind="stable"):
        writer.writerow((run.control_names[i], *(f"{float(change[key][i]):.6g}" for key in keys)))
    write_atomic(out / FILES["control_change_csv"], buf.getvalue())
    paths["control_change_csv"] = out / FILES["control_change_csv"]
    seconds = time.perf_counter() - start
    text = markdown(run, rows, cover, status, change, [rows[i]["expression"] for i in picked],
                    {key: FILES[key] for key in ("residuals", "objective", "faces", "control_change")}, seconds)
    write_atomic(out / FILES["report"], text)
    paths["report"] = out / FILES["report"]
    return paths
