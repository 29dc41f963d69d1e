"""The method's evaluation on the synthetic world (or a user's data): baseline vs calibrated (vs further variants).

    records = evaluate_world(world, calibration=CalibrationConfig(), weights=InversionWeights())
    summary = summarise(records)                  # mean / std / min / max over performers
    print(to_markdown(summary))                   # the seed's Table 1 + the truth-based metrics
    to_csv(records, "records.csv")

A :class:`Variant` is what the tracker inverts: an expression basis (E, V, 3) and a semantic rig.
Per (performer, tracker) the variants are built by *builder* functions ``ctx -> Variant`` that
see a :class:`VariantContext` (the world, the performer's Simon-Says take as that tracker saw it,
the calibration data, the settings, and the variants built before them). The defaults:

- :func:`baseline_variant` ("baseline"): the generic model's expression basis and the generic rig;
- :func:`calibrated_variant` ("calibrated", the seed's "Ours"): :func:`flamejax.calibrate.
  calibrate_simon_says` on the performer's Simon-Says take as tracked by that tracker (canonical
  pose, the world's hold labels and Simon-Says masks, the control set's combinations).

Further variants (e.g. a rig fine-tuned through the tracker) are added with ``extra_variants``:
builders run in order, each one after the defaults, and can start from ``ctx.variants["calibrated"]``.

Every variant is then evaluated on every take: the tracked geometry (canonical pose) is inverted
with :func:`flamejax.track.track_controls` (the variant's basis and rig, the control set's
tweakers), and the solved controls are scored. One record per (performer, tracker, take,
variant); the Simon-Says take, which is the calibration data, is evaluated as take
``"simon_says"`` with ``training=True`` (expression recognition is only defined there).

Metrics of a record (lower is better except ``recognition``); geometry in millimetres, the mean
over frames of the per-frame RMS vertex distance over the *face region* (the vertices some
Simon-Says expression moves, :func:`flamejax.synthetic.world.simon_says_masks`; the skull and
neck, which no control moves, would only dilute the numbers):

- ``sparsity``, ``tweakers``: the seed's Table 1 (:mod:`flamejax.metrics`) of the solved controls;
  ``intended_sparsity``, ``intended_tweakers``: the same of the intended controls (the takes
  intend some tweakers: ROM's random single controls, speech's lips-together), the reference
  a solved value should be compared with (lower is not better below it);
- ``control_mae``, ``control_rmse``: solved vs intended (true) controls;
- ``recognition``: Simon-Says expression recognition on the labelled hold frames (NaN on other takes);
- ``fit_tracked_mm``: the variant's rig at the solved controls vs the tracked geometry (what the
  inversion minimises; its residual);
- ``fit_truth_mm``: the same rig output vs the performer's true geometry (canonical pose);
- ``retarget_mm``: the solved controls vs the intended ones, both retargeted onto another identity
  (``avatar_shape``, default the mean face beta = 0) with the generic rig;
- ``intended_tracked_mm``: the variant's rig at the *intended* controls vs the tracked geometry (on
  the Simon-Says take: the calibration residual, over all frames and the face region);
- ``intended_truth_mm``: the variant's rig at the intended controls vs the true geometry (how well
  the rig itself models the performer, independently of the inversion).

On a user's data (:mod:`flamejax.user_data`: no target rig, intended controls NaN but on the
Simon-Says holds, takes named by the user, lost frames marked in ``world.valid``;
:func:`has_truth` is False) the same records are written: ``sparsity``, ``tweakers``,
``fit_tracked_mm``, the timings and, on the Simon-Says take, ``recognition`` (its hold labels are
the user's) are computed; ``intended_tracked_mm`` is computed over the Simon-Says holds only (the
frames whose intended controls are known; NaN on other takes); every other metric, all of which
need the truth (:data:`NEEDS_TRUTH`), is NaN (:func:`undefined_metrics` lists what may be NaN).
The held-out takes are the user's (:func:`world_takes`). On every world a frame the tracker lost
(:func:`flamejax.synthetic.world.take_valid`) is never evaluated: ``max_frames`` spreads over the
valid frames, and a record's ``frames`` counts the evaluated ones.

Timing fields: ``variant_seconds`` (building the variant, e.g. calibration, compile included on a
first call), ``track_seconds`` and ``frames_per_second`` (the inversion of the take).

Ablation knobs (keywords of :func:`evaluate_world`, default off; the records gain no field, a
run's saved config says which were on):

- ``simon_says_exclude``: Simon-Says expressions left out of the calibration samples, by name
  ("Jaw Open") and/or by face region ("mouth": every expression of the region; an expression
  belongs to each region holding at least half of its prompted controls, :func:`expression_regions`,
  so MetaHuman's Cheek Puff is in both cheek and mouth, and Neutral, prompting nothing, in no
  region: only its name drops it). Unknown names fail with close matches.
- ``hold_frames``: at most this many frames of each expression's hold, the central ones
  (:func:`select_holds`): with ``calibration_frames="mean"`` each sample averages fewer frames
  (more tracker noise), with ``"all"`` there are fewer samples.
  Both reduce ``VariantContext.data`` (:func:`calibration_samples`), which every builder
  calibrates or fine-tunes on; the Simon-Says take is still *evaluated* on all its frames and
  expressions (recognition over every labelled hold frame).
- ``landmarks_only``: every variant tracks every take from the iBUG-68 landmarks of the tracked
  geometry (:func:`tracked_landmarks`, the generic model's landmark embedding) through
  :func:`flamejax.track.inversion_problem`'s ``landmarks_only=True`` mode, instead of from the
  whole mesh. The rigs are still calibrated (and fine-tuned) on the geometry, and every metric is
  computed as usual: ``fit_tracked_mm`` etc. are the rig's whole face region at the solved controls.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import math
import os
import time
from collections import defaultdict
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax import landmarks as lmk
from flamejax.calibrate import CalibrationConfig, SimonSaysData, calibrate_simon_says, simon_says_data
from flamejax.finetune import FinetuneConfig, FineTuning, finetune_problem
from flamejax.metrics import control_error, expression_recognition, geometry_error, sparsity, tweaker_mean
from flamejax.retarget import retarget
from flamejax.semantic.controls import REGIONS, ControlSet
from flamejax.semantic.rig import SemanticRig
from flamejax.synthetic.performers import performer_vertices
from flamejax.synthetic.world import TAKES, World, simon_says_masks, take_valid, tracked_geometry
from flamejax.track import InversionConfig, InversionWeights, inversion_problem, track_controls

TRAINING_TAKE = "simon_says"
DEFAULT_TAKES = ("rom1", "rom2", "pangram")

TABLE1_METRICS = ("sparsity", "tweakers")
INTENDED_TABLE1 = ("intended_sparsity", "intended_tweakers")   # the same of the true controls
TRUTH_METRICS = ("control_mae", "control_rmse", "recognition", "fit_tracked_mm", "fit_truth_mm",
                 "retarget_mm", "intended_tracked_mm", "intended_truth_mm")
TIMING = ("variant_seconds", "track_seconds", "frames_per_second")
METRICS = TABLE1_METRICS + INTENDED_TABLE1 + TRUTH_METRICS + TIMING
# what is NaN on a user's data (no truth): every metric but sparsity, tweakers, fit_tracked_mm,
# recognition (Simon-Says take) and intended_tracked_mm (Simon-Says take's holds), and the timings
NEEDS_TRUTH = INTENDED_TABLE1 + ("control_mae", "control_rmse", "fit_truth_mm", "retarget_mm", "intended_truth_mm")
KEYS = ("world", "performer", "tracker", "take", "variant", "training", "frames")

# Display names: the seed's table labels.
TAKE_LABELS = {"rom2": "ROM 2", "rom1": "ROM 1", "pangram": "Pangram 1", TRAINING_TAKE: "Simon-Says (training)"}
VARIANT_LABELS = {"baseline": "Baseline", "calibrated": "Ours", "finetuned": "Fine-tuned"}
METRIC_LABELS = {
    "sparsity": "Sparsity", "tweakers": "Tweakers", "control_mae": "control MAE",
    "control_rmse": "control RMSE", "recognition": "recognition",
    "fit_tracked_mm": "fit vs tracked (mm)", "fit_truth_mm": "fit vs truth (mm)",
    "retarget_mm": "retarget (mm)", "intended_tracked_mm": "rig(c*) vs tracked (mm)",
    "intended_truth_mm": "rig(c*) vs truth (mm)",
}


class Variant(NamedTuple):
    """What the tracker inverts: name, exprdirs (E, V, 3) the FLAME expression basis, rig the
    semantic rig (no neck rows); info: anything the builder wants to report (not evaluated)."""

    name: str
    exprdirs: jnp.ndarray
    rig: SemanticRig
    info: Mapping[str, Any] = {}


class VariantContext(NamedTuple):
    """What a variant builder sees, per (performer, tracker).

    world; performer, tracker: names; beta (S,) the performer's identity; simon_says: the
    Sequence of the Simon-Says take (intended controls, all its hold labels); simon_says_geometry
    (T, V, 3) that take as the tracker saw it (canonical pose, metres); data: the calibration
    samples (:func:`flamejax.calibrate.simon_says_data` of that geometry, the world's masks, the
    holds :func:`evaluate_world`'s ``simon_says_exclude`` and ``hold_frames`` keep); combinations
    (C, K); calibration, weights, inversion: the evaluation's settings; tweakers (K,) bool;
    variants: the variants built so far for this (performer, tracker), by name."""

    world: World
    performer: str
    tracker: str
    beta: jnp.ndarray
    simon_says: Any
    simon_says_geometry: np.ndarray
    data: SimonSaysData
    combinations: jnp.ndarray
    calibration: CalibrationConfig
    weights: InversionWeights
    inversion: InversionConfig
    tweakers: np.ndarray
    variants: Mapping[str, Variant]


VariantBuilder = Callable[[VariantContext], Variant]


def baseline_variant(ctx: VariantContext) -> Variant:
    """The uncalibrated rig: the generic model's expression basis and the generic semantic rig."""
    return Variant("baseline", ctx.world.generic.model.exprdirs, ctx.world.generic.rig)


def calibrated_variant(ctx: VariantContext) -> Variant:
    """Simon-Says calibration (the paper's Eq. 1) on this performer's take as this tracker saw it."""
    model, rig = ctx.world.generic.model, ctx.world.generic.rig
    result, state = calibrate_simon_says(model, rig, ctx.beta, ctx.data, ctx.combinations, ctx.calibration)
    jax.block_until_ready(result)
    info = {"iterations": int(state.iter_num), "objective_before": float(state.history[0]),
            "objective_after": float(state.value), "stalled": bool(state.stalled),
            "residual_before_mm": float(np.mean(state.residual_before)) * 1e3,
            "residual_after_mm": float(np.mean(state.residual_after)) * 1e3,
            "history": [float(v) for v in np.asarray(state.history) if np.isfinite(v)]}
    return Variant("calibrated", result.exprdirs, result.rig, info)


DEFAULT_VARIANTS: tuple[VariantBuilder, ...] = (baseline_variant, calibrated_variant)


def finetuned_variant(config: FinetuneConfig = FinetuneConfig(), start: str = "calibrated") -> VariantBuilder:
    """A builder of "finetuned": the tracker's rig fine-tuned through the tracker
    (:mod:`flamejax.finetune`) from variant ``start`` (theta_R, built before it) on the same
    Simon-Says samples, with the evaluation's tracker weights and solver settings (``config``'s
    own are replaced by them, so the rig is tuned for the tracker it is evaluated with). Its rig
    is the one the tracker inverts; the geometry metrics evaluate that rig at the solved controls."""

    def build(ctx: VariantContext) -> Variant:
        if start not in ctx.variants:
            raise ValueError(f"finetuned_variant starts from {start!r}, which is not built before it "
                             f"(built: {list(ctx.variants)})")
        ref = ctx.variants[start]
        cs = ctx.world.control_set
        problem = finetune_problem(ctx.world.generic.model, ref.rig, ctx.beta, primary=cs.primary_mask,
                                   tweakers=ctx.tweakers, exprdirs=ref.exprdirs)
        cfg = dataclasses.replace(config, weights=ctx.weights, inversion=ctx.inversion)
        theta, state = FineTuning(cfg).run(None, problem, ctx.data)
        info = {"stage_values": [round(float(v), 5) for v in state.stage_values],
                "iterations": int(state.iter_num), "accepted": [int(a) for a in state.accepted]}
        return Variant("finetuned", theta.exprdirs, dataclasses.replace(ref.rig, basis=theta.basis), info)

    return build


# ---------------------------------------------------------------- evaluation


def frame_subset(n_frames: int, max_frames: Optional[int]) -> np.ndarray:
    """Frame indices evaluated for a take of ``n_frames``: all, or ``max_frames`` evenly spaced over
    the whole take (so a capped ROM still visits every control; temporal smoothness, if used,
    then couples frames that are not adjacent in the take)."""
    if max_frames is None or max_frames >= n_frames:
        return np.arange(n_frames)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return np.unique(np.round(np.linspace(0, n_frames - 1, max_frames)).astype(int))


def face_region(world: World) -> np.ndarray:
    """(V,) float weights: 1 on the vertices some Simon-Says expression moves, else 0."""
    w = np.zeros(world.generic.model.n_vertices)
    for ids in simon_says_masks(world):
        w[ids] = 1.0
    return w


def _mm(vertices, reference, region) -> float:
    return float(np.mean(geometry_error(vertices, reference, region))) * 1e3


def _true_geometry(world: World, performer: str, controls) -> np.ndarray:
    """The performer's true meshes in the canonical head pose (zero global and neck rotation)."""
    zeros = np.zeros((len(controls), 3), np.float32)
    return np.asarray(performer_vertices(world.generic.model, world.generic.target, world.performers[performer],
                                         controls, zeros, zeros))


def has_truth(world: World) -> bool:
    """Whether the world knows the truth (the synthetic world: its target rig and intended
    controls); a user's data (:mod:`flamejax.user_data`) does not."""
    return world.generic.target is not None


def undefined_metrics(world: World) -> tuple[str, ...]:
    """The record fields that may be NaN on ``world`` by definition: recognition (off the
    Simon-Says take) and, on a user's data, :data:`NEEDS_TRUTH` and intended_tracked_mm (off the
    Simon-Says holds). Anything else NaN is a failure (:func:`experiments.jobs.check_finite`)."""
    return ("recognition",) + (() if has_truth(world) else NEEDS_TRUTH + ("intended_tracked_mm",))


class TakeReference(NamedTuple):
    """What a (performer, take)'s scores compare with, shared by trackers and variants: frames
    (F,) the evaluated frame indices (of the take's valid frames); intended (F, K) the intended
    controls (NaN where unknown: a user's data off the Simon-Says holds); truth (F, V, 3) the
    performer's true canonical-pose meshes (metres); truth_retarget (F, V, 3) the intended
    controls retargeted onto the avatar (both None without the truth, :func:`has_truth`); hold
    (F,) Simon-Says hold labels (-1 off a hold)."""

    frames: np.ndarray
    intended: np.ndarray
    truth: Optional[np.ndarray]
    truth_retarget: Optional[np.ndarray]
    hold: np.ndarray


class Scoring(NamedTuple):
    """The evaluation's constants (:func:`scoring`): region (V,) face-region weights, avatar (S,)
    the retargeting identity, tweakers (K,) bool, ss_targets the Simon-Says expressions' controls."""

    region: np.ndarray
    avatar: jnp.ndarray
    tweakers: np.ndarray
    ss_targets: np.ndarray


def scoring(world: World, avatar_shape=None) -> Scoring:
    model = world.generic.model
    avatar = jnp.zeros((model.n_shape,), model.dtype) if avatar_shape is None else jnp.asarray(avatar_shape)
    cs = world.control_set
    return Scoring(face_region(world), avatar, np.asarray(cs.tweaker_mask, bool), cs.simon_says.targets)


def take_references(world: World, performer: str, takes: Sequence[str], max_frames: Optional[int],
                    score: Scoring) -> dict[str, TakeReference]:
    """{take: TakeReference} of one performer (at most ``max_frames`` evenly spaced frames per
    take, of its valid frames: a frame the tracker lost, :func:`~flamejax.synthetic.world.take_valid`,
    is never evaluated). Without the truth (a user's data) truth and truth_retarget are None."""
    out = {}
    truth = has_truth(world)
    for take in takes:
        seq = world.sequences[performer][take]
        valid = np.flatnonzero(take_valid(world, performer, take))
        if len(valid) == 0:
            raise ValueError(f"performer {performer}'s take {take!r} has no valid frame (the tracker lost all)")
        frames = valid[frame_subset(len(valid), max_frames)]
        intended = seq.controls[frames]
        out[take] = TakeReference(
            frames, intended, _true_geometry(world, performer, intended) if truth else None,
            np.asarray(retarget(world.generic.model, world.generic.rig, intended, shape=score.avatar))
            if truth else None,
            seq.hold[frames])
    return out


def score_controls(world: World, variant: Variant, beta, solved, take: str, ref: TakeReference, tracked,
                   score: Scoring) -> dict:
    """The metrics of the module docstring (no keys, no timings) of ``solved`` (F, K), the controls
    the tracker found for ``tracked`` (F, V, 3) with ``variant``'s rig, on ``take``. Without the
    truth (``ref.truth`` None: a user's data) the truth-based metrics are NaN (:func:`_score_without_truth`)."""
    model = world.generic.model
    solved = np.asarray(solved)
    fit = np.asarray(retarget(model, variant.rig, solved, shape=beta, exprdirs=variant.exprdirs))
    recognition = (expression_recognition(solved, ref.hold, score.ss_targets).accuracy
                   if take == TRAINING_TAKE and np.any(ref.hold >= 0) else math.nan)
    if ref.truth is None:
        return _score_without_truth(model, variant, beta, solved, ref, tracked, score, fit, float(recognition))
    rig_intended = np.asarray(retarget(model, variant.rig, ref.intended, shape=beta, exprdirs=variant.exprdirs))
    solved_retarget = np.asarray(retarget(model, world.generic.rig, solved, shape=score.avatar))
    err = control_error(solved, ref.intended)
    return {
        "sparsity": sparsity(solved), "tweakers": tweaker_mean(solved, score.tweakers),
        "intended_sparsity": sparsity(ref.intended), "intended_tweakers": tweaker_mean(ref.intended, score.tweakers),
        "control_mae": err.mean, "control_rmse": err.rmse, "recognition": float(recognition),
        "fit_tracked_mm": _mm(fit, tracked, score.region), "fit_truth_mm": _mm(fit, ref.truth, score.region),
        "retarget_mm": _mm(solved_retarget, ref.truth_retarget, score.region),
        "intended_tracked_mm": _mm(rig_intended, tracked, score.region),
        "intended_truth_mm": _mm(rig_intended, ref.truth, score.region),
    }


def _score_without_truth(model, variant: Variant, beta, solved, ref: TakeReference, tracked, score: Scoring,
                         fit, recognition: float) -> dict:
    """score_controls on a user's data: sparsity, tweakers, fit_tracked_mm and recognition as
    usual; intended_tracked_mm over the frames whose intended controls are known (the Simon-Says
    holds, NaN on other takes); every other truth-based metric NaN."""
    known = np.flatnonzero(np.all(np.isfinite(ref.intended), axis=1))
    intended_tracked = math.nan
    if len(known):
        rig_intended = np.asarray(retarget(model, variant.rig, ref.intended[known], shape=beta,
                                           exprdirs=variant.exprdirs))
        intended_tracked = _mm(rig_intended, np.asarray(tracked)[known], score.region)
    nan = math.nan
    return {
        "sparsity": sparsity(solved), "tweakers": tweaker_mean(solved, score.tweakers),
        "intended_sparsity": nan, "intended_tweakers": nan, "control_mae": nan, "control_rmse": nan,
        "recognition": recognition, "fit_tracked_mm": _mm(fit, tracked, score.region), "fit_truth_mm": nan,
        "retarget_mm": nan, "intended_tracked_mm": intended_tracked, "intended_truth_mm": nan,
    }


def world_takes(world: World, performers: Optional[Sequence[str]] = None) -> list[str]:
    """The held-out takes an evaluation may choose: the synthetic world's :data:`TAKES` but the
    Simon-Says take; on a user's data, the takes every selected performer (default all) has."""
    if has_truth(world):
        return [t for t in TAKES if t != TRAINING_TAKE]
    names = list(world.performers) if performers is None else [p for p in performers if p in world.sequences]
    common = [t for t in world.sequences[names[0]] if t != TRAINING_TAKE] if names else []
    return [t for t in common if all(t in world.sequences[p] for p in names)]


def check_selection(world: World, takes: Sequence[str], training_take: bool, trackers, performers):
    """Validate an evaluation's selection -> (evaluated takes, trackers, performers) as lists.
    Held-out takes are checked against :func:`world_takes` (a user's data: the takes its
    performers have)."""
    trackers = list(world.tracked) if trackers is None else list(trackers)
    performers = list(world.performers) if performers is None else list(performers)
    for name, chosen, known in (("tracker", trackers, world.tracked), ("performer", performers, world.performers)):
        missing = [x for x in chosen if x not in known]
        if missing:
            raise ValueError(f"unknown {name}s {missing}; the world has {list(known)}")
    known_takes = world_takes(world, performers)
    unknown = [t for t in takes if t not in known_takes]
    if unknown:
        whose = "the world's takes are" if has_truth(world) else "the takes every selected performer has are"
        raise ValueError(f"unknown held-out takes {unknown}; {whose} {known_takes} "
                         f"({TRAINING_TAKE!r} is the calibration data: use training_take)")
    eval_takes = ((TRAINING_TAKE,) if training_take else ()) + tuple(takes)
    return list(eval_takes), trackers, performers


def expression_regions(control_set: ControlSet) -> tuple[tuple[str, ...], ...]:
    """Per Simon-Says expression (mask order), the face regions it belongs to: every region that
    holds at least half of its prompted controls (those its target sets non-zero), counted, in
    :data:`flamejax.semantic.controls.REGIONS` order. So an expression belongs to one region, or to
    two when its controls split evenly (MetaHuman's Cheek Puff: 2 cheek + 2 mouth controls, in
    both), and Neutral, which prompts no control, to none."""
    targets = control_set.simon_says.targets
    regions = np.asarray(control_set.regions)
    out = []
    for row in targets:
        prompted = regions[np.flatnonzero(row != 0)]
        out.append(tuple(r for r in REGIONS if len(prompted) and 2 * np.sum(prompted == r) >= len(prompted)))
    return tuple(out)


def excluded_expressions(control_set: ControlSet, exclude: Sequence[str]) -> np.ndarray:
    """Sorted int indices of the Simon-Says expressions that ``exclude`` names: each entry is an
    expression name (``control_set.simon_says.expression_names``, exact) or a region name
    (:data:`~flamejax.semantic.controls.REGIONS`: every expression of that region, by the rule of
    :func:`expression_regions`; Neutral belongs to no region, so only its name excludes it).
    Unknown names, or a region no expression belongs to, raise ValueError naming them (with close
    matches)."""
    exclude = () if exclude is None else (exclude,) if isinstance(exclude, str) else tuple(exclude)
    names = control_set.simon_says.expression_names
    member = expression_regions(control_set)
    used = [r for r in REGIONS if any(r in m for m in member)]
    chosen, unknown, empty = set(), [], []
    for entry in exclude:
        if not isinstance(entry, str):
            raise ValueError(f"simon_says_exclude takes expression or region names (strings), got {entry!r}")
        if entry in names:
            chosen.add(names.index(entry))
        elif entry in REGIONS:
            if entry not in used:
                empty.append(entry)
            chosen.update(i for i, m in enumerate(member) if entry in m)
        else:
            unknown.append(entry)
    if unknown:
        known = list(names) + used
        lower = {k.lower(): k for k in known}
        hints = []
        for u in unknown:
            close = [lower[c] for c in difflib.get_close_matches(u.lower(), list(lower), n=3, cutoff=0.5)]
            close += [k for k in known if u.lower() in k.lower() and k not in close][:max(0, 4 - len(close))]
            hints.append(f"{u!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
        raise ValueError(f"simon_says_exclude: unknown Simon-Says expression or region {', '.join(hints)}; "
                         f"the control set {control_set.name!r} has expressions {list(names)} and regions {used}")
    if empty:
        raise ValueError(f"simon_says_exclude: no Simon-Says expression of {control_set.name!r} belongs to region(s) "
                         f"{empty} (an expression belongs to the regions holding at least half of its prompted "
                         f"controls); regions with expressions: {used}")
    return np.asarray(sorted(chosen), np.int64)


def _check_hold_frames(hold_frames) -> Optional[int]:
    if hold_frames is None:
        return None
    if isinstance(hold_frames, bool) or not isinstance(hold_frames, (int, np.integer)) or hold_frames < 1:
        raise ValueError(f"hold_frames must be an integer >= 1 or None, got {hold_frames!r}")
    return int(hold_frames)


def select_holds(hold, exclude=(), hold_frames: Optional[int] = None) -> np.ndarray:
    """Hold labels (T,) with the left-out frames relabelled -1 (off a hold): the expressions
    ``exclude`` (indices) entirely, and of every other expression's hold frames all but the central
    ``hold_frames`` (of its n labelled frames in time order, those from (n - hold_frames) // 2 on;
    None: all; a hold no longer than that is kept whole)."""
    hold = np.array(hold, copy=True)
    hold_frames = _check_hold_frames(hold_frames)
    excluded = set(np.asarray(exclude, np.int64).tolist())
    for e in np.unique(hold[hold >= 0]):
        frames = np.flatnonzero(hold == e)
        if e in excluded:
            hold[frames] = -1
        elif hold_frames is not None and len(frames) > hold_frames:
            start = (len(frames) - hold_frames) // 2
            keep = frames[start:start + hold_frames]
            hold[np.setdiff1d(frames, keep)] = -1
    return hold


def calibration_samples(world: World, performer: str, tracker: str, calibration_frames: str = "mean", *,
                        simon_says_exclude: Sequence[str] = (), hold_frames: Optional[int] = None):
    """(Simon-Says Sequence, its tracked geometry (T, V, 3), SimonSaysData) of one (performer, tracker).

    simon_says_exclude: expression and/or region names whose hold frames are left out
    (:func:`excluded_expressions`); hold_frames: keep at most this many central frames of each
    hold (:func:`select_holds`). The Sequence returned is the take's own (all hold labels): only
    the samples are reduced."""
    seq = world.sequences[performer][TRAINING_TAKE]
    geometry = tracked_geometry(world, tracker, performer, TRAINING_TAKE)
    hold = select_holds(seq.hold, excluded_expressions(world.control_set, simon_says_exclude), hold_frames)
    if np.any(seq.hold >= 0) and not np.any(hold >= 0):
        raise ValueError(f"simon_says_exclude={list(simon_says_exclude)} leaves no Simon-Says expression "
                         "to calibrate on")
    return seq, geometry, simon_says_data(seq.controls, geometry, hold, simon_says_masks(world),
                                          frames=calibration_frames)


def _check_landmarks(model) -> None:
    if model.landmarks is None:
        raise ValueError("landmarks_only=True needs a landmark embedding on the world's generic model "
                         "(world.generic.model.landmarks is None)")


def tracked_landmarks(model, vertices) -> np.ndarray:
    """(T, 68, 3) metres: the iBUG-68 landmarks of canonical-pose meshes ``vertices`` (T, V, 3)
    (the model's landmark embedding, frontal contour bin: :func:`flamejax.landmarks.ibug68` at
    identity rotations), what landmark-only tracking inverts."""
    _check_landmarks(model)
    eye = jnp.eye(3, dtype=model.dtype)
    points = jax.vmap(lambda v: lmk.ibug68(v, model.faces, model.landmarks, eye, eye))
    return np.asarray(points(jnp.asarray(vertices, model.dtype)))


def check_ablation(world: World, simon_says_exclude: Sequence[str] = (), hold_frames: Optional[int] = None,
                   landmarks_only: bool = False) -> None:
    """Validate the ablation knobs of :func:`evaluate_world` against the world (ValueError)."""
    excluded_expressions(world.control_set, simon_says_exclude)
    _check_hold_frames(hold_frames)
    if landmarks_only:
        _check_landmarks(world.generic.model)


def evaluate_world(world: World, *, calibration: CalibrationConfig = CalibrationConfig(),
                   weights: InversionWeights = InversionWeights(), inversion: InversionConfig = InversionConfig(),
                   takes: Sequence[str] = DEFAULT_TAKES, training_take: bool = True,
                   trackers: Optional[Sequence[str]] = None, performers: Optional[Sequence[str]] = None,
                   max_frames: Optional[int] = None, calibration_frames: str = "mean",
                   simon_says_exclude: Sequence[str] = (), hold_frames: Optional[int] = None,
                   landmarks_only: bool = False,
                   avatar_shape=None, progress: Optional[Callable[[str], None]] = None,
                   variants: Sequence[VariantBuilder] = DEFAULT_VARIANTS,
                   extra_variants: Sequence[VariantBuilder] = ()) -> list[dict]:
    """Evaluate every variant on every (performer, tracker, take) -> flat records (module doc).

    takes: the held-out takes (default ROM 1, ROM 2, Pangram; a user's data: its own take names,
    :func:`world_takes`); training_take: also evaluate the
    Simon-Says take (``training=True`` in its records); trackers, performers: subsets (default
    all); max_frames: at most this many frames per evaluated take, evenly spaced (quick runs;
    calibration uses the Simon-Says take's hold frames whatever it is); calibration_frames: "mean" or "all"
    (:func:`flamejax.calibrate.simon_says_data`); avatar_shape: identity the controls are
    retargeted onto (default zeros); progress: called with a line of text per step;
    variants + extra_variants: builders ``VariantContext -> Variant``, run in order.

    Ablations of the calibration data and of the tracker's input (module doc, "Ablation knobs"):
    simon_says_exclude: Simon-Says expression names and/or region names whose hold frames are left
    out of the calibration samples ``ctx.data`` (so of calibration and fine-tuning alike;
    :func:`excluded_expressions`); hold_frames: at most this many central frames of each hold in
    those samples (:func:`select_holds`); landmarks_only: every variant inverts the iBUG-68
    landmarks of the tracked geometry instead of the geometry (rigs are still built from the
    geometry; the metrics are unchanged). The Simon-Says take's evaluation (recognition, its
    geometry errors) always scores every expression and every hold frame.
    """
    say = progress or (lambda _msg: None)
    eval_takes, trackers, performers = check_selection(world, takes, training_take, trackers, performers)
    builders = tuple(variants) + tuple(extra_variants)
    model = world.generic.model
    check_ablation(world, simon_says_exclude, hold_frames, landmarks_only)   # before any work
    combinations = jnp.asarray(world.control_set.simon_says.combination_targets, model.dtype)
    score = scoring(world, avatar_shape)
    world_key = world.config.key()

    records = []
    for performer in performers:
        beta = jnp.asarray(world.performers[performer].beta, model.dtype)
        refs = take_references(world, performer, eval_takes, max_frames, score)
        for tracker in trackers:
            seq, ss_geometry, data = calibration_samples(world, performer, tracker, calibration_frames,
                                                         simon_says_exclude=simon_says_exclude,
                                                         hold_frames=hold_frames)
            tracked = {t: (ss_geometry if t == TRAINING_TAKE else tracked_geometry(world, tracker, performer, t))
                       [refs[t].frames] for t in eval_takes}
            # what the tracker inverts: the geometry, or its landmarks (the scores use the geometry)
            targets = {t: tracked_landmarks(model, v) for t, v in tracked.items()} if landmarks_only else tracked
            built: dict[str, Variant] = {}
            for builder in builders:
                ctx = VariantContext(world, performer, tracker, beta, seq, ss_geometry, data, combinations,
                                     calibration, weights, inversion, score.tweakers, dict(built))
                start = time.perf_counter()
                variant = builder(ctx)
                jax.block_until_ready((variant.exprdirs, variant.rig))
                variant_seconds = time.perf_counter() - start
                if variant.name in built:
                    raise ValueError(f"two variants are named {variant.name!r}")
                built[variant.name] = variant
                say(f"{performer} {tracker} {variant.name}: built in {variant_seconds:.1f} s"
                    + (f" {shown}" if (shown := {k: v for k, v in variant.info.items() if k != "history"}) else ""))
                problem = inversion_problem(model, variant.rig, beta, tweakers=score.tweakers,
                                            exprdirs=variant.exprdirs, landmarks_only=landmarks_only)
                for take in eval_takes:
                    start = time.perf_counter()
                    solved, _ = track_controls(problem, targets[take], weights, inversion)
                    solved = np.asarray(jax.block_until_ready(solved))
                    track_seconds = time.perf_counter() - start
                    n = len(solved)
                    r = {"world": world_key, "performer": performer, "tracker": tracker, "take": take,
                         "variant": variant.name, "training": take == TRAINING_TAKE, "frames": n,
                         **score_controls(world, variant, beta, solved, take, refs[take], tracked[take], score),
                         "variant_seconds": variant_seconds, "track_seconds": track_seconds,
                         "frames_per_second": n / max(track_seconds, 1e-9)}
                    records.append(r)
                    say(f"{performer} {tracker} {variant.name} {take}: {n} frames in {track_seconds:.1f} s; "
                        f"sparsity {r['sparsity']:.3f}, tweakers {r['tweakers']:.4f}, "
                        + ("" if math.isnan(r["control_mae"]) else f"control MAE {r['control_mae']:.4f}, ")
                        + f"fit {r['fit_tracked_mm']:.3f} mm")
    return records


# ---------------------------------------------------------------- summaries


class SummaryRow(NamedTuple):
    """One (tracker, take, variant, metric) over performers: mean, std (population, ddof 0),
    min, max, n (performers; NaN values are left out, n counts the others)."""

    tracker: str
    take: str
    variant: str
    metric: str
    mean: float
    std: float
    min: float
    max: float
    n: int


def summarise(records: Sequence[Mapping[str, Any]], metrics: Optional[Sequence[str]] = None) -> list[SummaryRow]:
    """Mean and spread over performers per (tracker, take, variant, metric), in first-seen order.
    metrics: default every numeric field that is not a key (:data:`METRICS` and any extra ones)."""
    if metrics is None:
        metrics = [k for k in (records[0] if records else {}) if k not in KEYS]
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in records:
        groups[(r["tracker"], r["take"], r["variant"])].append(r)
    rows = []
    for (tracker, take, variant), group in groups.items():
        for metric in metrics:
            values = np.array([float(r[metric]) for r in group], np.float64)
            values = values[~np.isnan(values)]
            if len(values) == 0:
                rows.append(SummaryRow(tracker, take, variant, metric, math.nan, math.nan, math.nan, math.nan, 0))
                continue
            rows.append(SummaryRow(tracker, take, variant, metric, float(values.mean()), float(values.std()),
                                   float(values.min()), float(values.max()), len(values)))
    return rows


def _ordered(values, preferred):
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + [v for v in values if v not in preferred]


def _cell(row: Optional[SummaryRow], digits: int) -> str:
    if row is None or row.n == 0 or math.isnan(row.mean):
        return "–"
    if row.n == 1:
        return f"{row.mean:.{digits}f}"
    return f"{row.mean:.{digits}f} ± {row.std:.{digits}f}"


def to_markdown(summary: Sequence[SummaryRow], *, digits: int = 3,
                truth_metrics: Sequence[str] = TRUTH_METRICS) -> str:
    """Two Markdown tables of a :func:`summarise` result (cells: mean ± std over performers).

    Table 1 (the seed's layout): rows ROM 2 / ROM 1 / Pangram 1 (then any other held-out take)
    x tracker, columns Sparsity and Tweakers for each variant (Baseline | Ours | ...) and of the
    intended controls (Truth). Table 2:
    rows take x tracker x variant (the Simon-Says training take included), columns the
    truth-based metrics."""
    index = {(r.tracker, r.take, r.variant, r.metric): r for r in summary}
    trackers = _ordered([r.tracker for r in summary], ["OS1", "OS2"])
    variants = _ordered([r.variant for r in summary], list(VARIANT_LABELS))
    takes = _ordered([r.take for r in summary], ["rom2", "rom1", "pangram", TRAINING_TAKE])
    held_out = [t for t in takes if t != TRAINING_TAKE]
    vlabel = lambda v: VARIANT_LABELS.get(v, v)  # noqa: E731
    tlabel = lambda t: TAKE_LABELS.get(t, t)  # noqa: E731

    # (metric, variant) columns, then the intended controls' value ("Truth") where recorded
    columns = []
    for m, truth in zip(TABLE1_METRICS, INTENDED_TABLE1):
        columns += [(m, v, f"{METRIC_LABELS[m]}: {vlabel(v)}") for v in variants]
        if any(r.metric == truth for r in summary):
            columns.append((truth, variants[0], f"{METRIC_LABELS[m]}: Truth"))
    head = ["Sequence", "Tracker"] + [c[2] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for take in held_out:
        for tracker in trackers:
            if not any((tracker, take, v, "sparsity") in index for v in variants):
                continue
            cells = [_cell(index.get((tracker, take, v, m)), digits) for m, v, _ in columns]
            lines.append("| " + " | ".join([tlabel(take), tracker] + cells) + " |")
    table1 = "\n".join(lines)

    metrics = [m for m in truth_metrics if any(r.metric == m for r in summary)]
    head = ["Sequence", "Tracker", "Variant"] + [METRIC_LABELS.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(metrics)]
    for take in takes:
        for tracker in trackers:
            for v in variants:
                if (tracker, take, v, metrics[0] if metrics else "sparsity") not in index:
                    continue
                cells = [_cell(index.get((tracker, take, v, m)), digits) for m in metrics]
                lines.append("| " + " | ".join([tlabel(take), tracker, vlabel(v)] + cells) + " |")
    table2 = "\n".join(lines)
    return table1 + "\n\n" + table2 + "\n"


def to_csv(rows: Sequence, path: Optional[os.PathLike] = None) -> str:
    """Records (dicts) or summary rows (NamedTuples) as CSV text (header from the first row);
    written to ``path`` too when given."""
    dicts = [r._asdict() if hasattr(r, "_asdict") else dict(r) for r in rows]
    out = io.StringIO()
    if dicts:
        writer = csv.DictWriter(out, fieldnames=list(dicts[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
    text = out.getvalue()
    if path is not None:
        with open(path, "w", newline="") as fh:
            fh.write(text)
    return text


def settings_dict(calibration: CalibrationConfig, weights: InversionWeights, inversion: InversionConfig) -> dict:
    """The evaluation's settings as plain JSON-able values."""
    return {"calibration": dataclasses.asdict(calibration),
            "weights": {k: float(v) for k, v in weights._asdict().items()},
            "inversion": dataclasses.asdict(inversion)}
