"""Proposing the hold frames of a tracked Simon-Says take: "the peak of motion of each prompt".

    proposal = propose_holds(seq.expression, seq.jaw_pose, seq.valid, controls.simon_says)
    proposal.hold              # (T,) int32: expression index on proposed hold frames, else -1
    proposal.peak, proposal.n_frames    # per expression: how sure to be of it

A Simon-Says take shows the prompted expressions in order, each ramped in, held, released, with
rests between. Calibration (:func:`flamejax.calibrate.simon_says_data`) needs the *held* frames
of each. This module proposes them from the tracker's parameters so a person only has to check
them (:mod:`flamejax.io.labels` writes and reads them as a labels file). Plain NumPy/SciPy: this
is data preparation, outside jit.

The method, and why:

1. **Motion signal** (:func:`motion_signal`). Per frame, the distance of the face from a
   neutral estimate. The frame is the vector (expression coefficients, jaw axis-angle), or,
   given them, its canonical-pose vertices. By default each dimension is *whitened*: divided
   by the std of the tracker's frame-to-frame noise in it, so the distance is in noise stds,
   jaw and expression need no exchange rate, and the coefficients a tracker only jitters in
   (a regressor's, or those that absorb head-pose errors) weigh little; ``metric="plain"``
   gives coefficient units (jaw times ``jaw_scale``, 10 per radian: a 0.1 rad, ~1 cm at the
   chin, jaw opening counts as one unit) or RMS millimetres for vertices. The vectors are
   smoothed in time (a Gaussian of ``smooth_s`` seconds) *before* the distance, and the
   expected norm of the noise left is subtracted: the norm of noise does not average out,
   the noise does, and its bias would drown small expressions (Eyes Wide). The neutral
   estimate is the median of the quietest tenth of the frames, iterated from the median of
   all frames (a Simon-Says take rests between prompts). Head pose is left out on purpose:
   performers sway while holding an expression.
2. **Episodes.** Every local maximum that stands out from its surroundings (prominence at least
   ``min_prominence`` of its height above the resting floor: a noise bump in a valley or on a
   plateau does not) and is high enough (``min_activity`` of the median such peak) is an
   episode, spanning the frames above half its prominence; episodes closer than ``min_gap_s``
   are merged (a performer who relaxes for an instant mid-hold still does one prompt). The
   moving prompts take the largest episodes, in time order. Fewer episodes than prompts, or
   extra ones nearly as large as the prompts' (``extra_ratio``), is an error saying how many
   were found for how many prompts and which parameter to change; smaller extras (a
   scratch of the nose, a swallow) are dropped with a warning.
3. **Holds.** In each episode the plateau is the median motion over its span; the hold is the
   run of frames around the peak whose motion stays at or above ``plateau_fraction`` of the
   plateau (over the floor), less the end frames still changing at more than ``ramp_slope``
   of the ramp's top speed (an ease-in ramp's last frames are nearly at the plateau, but not
   held yet). An expression whose target
   moves nothing (Neutral) gets a window as long as the median hold, centred in the longest
   quiet stretch between its neighbouring prompts (before the first prompt, for Neutral
   first): any rest frame is neutral, the middle is furthest from the ramps.
4. Invalid (lost) frames never get a label; the signal is interpolated across them so they
   neither split nor join episodes.

Measured on synthetic Simon-Says takes as OS1 and OS2 tracked them (2 performers; every
expression found in each): on the tests' tiny world (0.2 s ramps, 0.1 s rests, harder than a
real take) all proposed frames lie in the true hold of their expression, covering 79-84 % of
the true hold frames on average (tests/test_holds.py); with the default timing (0.4 s ramps
and rests) 96-99 % of them do (the worst expression 83 %), covering 95-98 %.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks, peak_prominences, peak_widths


class HoldProposal(NamedTuple):
    """Proposed hold frames of a Simon-Says take and how much to trust each.

    hold: (T,) int32 expression index on proposed hold frames, -1 elsewhere (never on invalid
      frames). peak: (E,) float the highest motion in each expression's proposed range (NaN
      when not proposed). plateau: (E,) float the median motion over the episode's span (for a
      no-motion expression such as Neutral: over its window, ~the floor). n_frames: (E,) int
      valid frames proposed. n_invalid: (E,) int invalid frames inside the proposed range, left
      out. first, last: (E,) int the proposed range's first and last frame index (-1 when not
      proposed). episode: (E, 2) int the episode's span (frame indices, inclusive; the quiet
      stretch for a no-motion expression). motion: (T,) float the motion signal
      (:func:`motion_signal`); floor: its resting level (median of its quietest fifth);
      noise: the norm of the white noise removed from it. units: "noise stds" (metric
      "whitened"), "coefficient units" or "mm" (metric "plain"). Motion values are in units.
    """

    hold: np.ndarray
    peak: np.ndarray
    plateau: np.ndarray
    n_frames: np.ndarray
    n_invalid: np.ndarray
    first: np.ndarray
    last: np.ndarray
    episode: np.ndarray
    motion: np.ndarray
    floor: float
    noise: float
    units: str


class HoldProposalError(ValueError):
    """The take's motion does not split into the prompted expressions (the message says how many
    episodes were found for how many prompts and which parameter to change)."""


# The quietest fraction of valid frames taken as the resting face (the neutral estimate).
_QUIET_QUANTILE = 0.1
# The fraction of valid frames whose median motion is the resting level (the floor).
_REST_QUANTILE = 0.2
# Whitening: a dimension's noise variance counts as at least this fraction of the median one's.
_WHITEN_FLOOR = 0.1


class Motion(NamedTuple):
    """motion (T,) the noise-debiased distance of each (smoothed) frame from the neutral
    estimate; neutral (D,) the estimate, in the signal's space; noise: the norm of the white
    noise removed (what a resting frame would read without the correction); units; valid (T,)
    bool the frames that were valid and finite (the others' motion is interpolated)."""

    motion: np.ndarray
    neutral: np.ndarray
    noise: float
    units: str
    valid: np.ndarray


METRICS = ("whitened", "plain")


def motion_signal(expression=None, jaw_pose=None, valid=None, *, vertices=None, metric: str = "whitened",
                  jaw_scale: float = 10.0, sigma: float = 3.0, n_iter: int = 3) -> Motion:
    """Per-frame distance of the face from a neutral estimate (module doc, step 1).

    expression (T, E), jaw_pose (T, 3) radians: the frame's vector is (psi, jaw_scale * jaw);
    or vertices (T, V, 3) metres in a canonical head pose: the frame's vector is the vertices
    in mm / sqrt(V) (so that, with metric="plain", the distance is the RMS vertex displacement
    in mm). valid (T,) bool (default all): invalid frames are linearly interpolated from their
    valid neighbours (so they neither split nor join episodes) and never shape the neutral.

    metric: "whitened" (default) divides each dimension by the std of the tracker's
    frame-to-frame noise in it (robust: 1.4826 MAD of consecutive differences / sqrt 2, floored
    at ``_WHITEN_FLOOR`` of the median variance so a near-noiseless dimension cannot
    dominate): units are *noise stds*, jaw and expression comparable without a scale, and a
    coefficient that only carries jitter weighs little. "plain": coefficient units (jaw_scale
    per radian) or mm. sigma: std (frames) of the Gaussian applied to the per-frame vectors
    *before* the distance: the jitter averages out, its norm would not. The white noise left
    after smoothing (its expected squared norm: the per-dimension variances times the filter's
    noise gain) is subtracted, so a resting face reads ~0 and a small expression is not drowned
    in the bias of the noise's norm.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if vertices is not None:
        v = np.asarray(vertices, np.float64)
        if v.ndim != 3 or v.shape[2] != 3:
            raise ValueError(f"vertices must be (T, V, 3), got shape {v.shape}")
        x, units = v.reshape(v.shape[0], -1) * (1e3 / np.sqrt(v.shape[1])), "mm"
    else:
        if expression is None or jaw_pose is None:
            raise ValueError("give expression (T, E) and jaw_pose (T, 3), or vertices (T, V, 3)")
        psi, jaw = np.asarray(expression, np.float64), np.asarray(jaw_pose, np.float64)
        if psi.ndim != 2 or jaw.shape != (psi.shape[0], 3):
            raise ValueError(f"expression must be (T, E) and jaw_pose (T, 3), got {psi.shape} and {jaw.shape}")
        x, units = np.concatenate([psi, jaw_scale * jaw], 1), "coefficient units"
    t = x.shape[0]
    valid = np.ones(t, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != (t,):
        raise ValueError(f"valid must be ({t},) booleans, got shape {valid.shape}")
    good = valid & np.isfinite(x).all(1)
    if good.sum() < 2:
        raise HoldProposalError(f"only {int(good.sum())} valid frame(s) of {t}: nothing to propose")
    x = x.copy()
    if not good.all():
        idx = np.arange(t)
        for k in range(x.shape[1]):
            x[~good, k] = np.interp(idx[~good], idx[good], x[good, k])
    # Per-dimension white-noise variance from consecutive valid frames; the median ignores the
    # ramps' few large steps.
    pairs = good[1:] & good[:-1]
    diff = np.diff(x, axis=0)[pairs] if pairs.sum() >= 2 else np.zeros((1, x.shape[1]))
    white = (1.4826 * np.median(np.abs(diff - np.median(diff, 0)), 0)) ** 2 / 2
    if metric == "whitened":
        positive = white[white > 0]
        floor = _WHITEN_FLOOR * float(np.median(positive)) if positive.size else 1.0
        scale = 1.0 / np.sqrt(np.maximum(white, floor))
        x, white, units = x * scale, white * scale ** 2, "noise stds"
    gain = 1.0
    if sigma > 0:
        x = gaussian_filter1d(x, sigma, axis=0, mode="nearest")
        delta = np.zeros(2 * int(4 * sigma) + 1)
        delta[len(delta) // 2] = 1.0
        gain = float(np.sum(gaussian_filter1d(delta, sigma, mode="constant") ** 2))
    bias = float(white.sum() * gain)
    neutral = np.median(x[good], 0)
    for _ in range(n_iter):
        # Re-centre on the quietest frames: the median of all frames is pulled by the
        # expressions; the quietest tenth around it is the resting face.
        d = np.linalg.norm(x[good] - neutral, axis=1)
        neutral = np.median(x[good][d <= np.quantile(d, _QUIET_QUANTILE)], 0)
    d2 = np.sum((x - neutral) ** 2, axis=1)
    return Motion(np.sqrt(np.maximum(d2 - bias, 0.0)), neutral, float(np.sqrt(bias)), units, good)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last)] of the runs of True in a 1-D bool array (inclusive)."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _episodes(s: np.ndarray, floor: float, min_activity: float, min_prominence: float,
              min_gap: int) -> list[list[int]]:
    """Activity episodes of the smoothed signal s: [[start, end, peak frame]] in time order."""
    peaks, _ = find_peaks(s)
    if len(peaks) == 0:
        return []
    height = s[peaks] - floor
    prom = peak_prominences(s, peaks)[0]
    keep = (height > 0) & (prom >= min_prominence * height)
    if keep.any():
        # "High enough" relative to the typical episode: the median of the standing-out peaks.
        keep &= height >= min_activity * np.median(height[keep])
    peaks = peaks[keep]
    if len(peaks) == 0:
        return []
    _, _, left, right = peak_widths(s, peaks, rel_height=0.5)
    spans = sorted([int(np.floor(a)), int(np.ceil(b)), int(p)] for a, b, p in zip(left, right, peaks))
    merged = [spans[0]]
    for start, end, peak in spans[1:]:
        last = merged[-1]
        if start - last[1] - 1 < min_gap:     # overlapping or too close: one episode
            last[1] = max(last[1], end)
            if s[peak] > s[last[2]]:
                last[2] = peak
        else:
            merged.append([start, end, peak])
    return merged


def propose_holds(expression=None, jaw_pose=None, valid=None, simon_says=None, *, vertices=None,
                  order: Optional[Sequence[int]] = None, fps: float = 30.0, metric: str = "whitened",
                  jaw_scale: float = 10.0,
                  smooth_s: float = 0.1, min_gap_s: float = 0.15, min_activity: float = 0.1,
                  min_prominence: float = 0.5, plateau_fraction: float = 0.85, ramp_slope: float = 0.3,
                  quiet_fraction: float = 0.1,
                  extra_ratio: float = 0.5) -> HoldProposal:
    """Propose hold frames for each Simon-Says expression of a tracked take (module doc: method).

    expression (T, E), jaw_pose (T, 3) radians, valid (T,) bool (default all valid): the
    tracker's per-frame parameters (:class:`flamejax.io.TrackedSequence` fields); or
    vertices (T, V, 3) metres, canonical head pose, instead of the parameters.
    simon_says: a :class:`~flamejax.semantic.controls.SimonSays` or
    :class:`~flamejax.semantic.controls.ControlSet`; an expression whose target is all zero
    (Neutral) is a rest prompt, every other one must show as an episode of motion.
    order: the expression indices in the order they were prompted (default: index order, as
    the face-calibration protocol prompts them); expressions left out get no hold.

    Parameters (times in seconds at ``fps`` frames per second): metric, jaw_scale: the
    distance (:func:`motion_signal`: "whitened", in noise stds, or "plain", in coefficient
    units with jaw_scale per radian, or mm for vertices); smooth_s: Gaussian smoothing std;
    min_gap_s: episodes closer than this are one; min_activity: an episode's peak must reach
    this fraction of the median episode peak (over the floor); min_prominence: and stand out
    from its surroundings by this fraction of its height; plateau_fraction: the hold keeps
    frames at or above this fraction of the plateau; ramp_slope: and drops its end frames while
    the motion still changes faster than this fraction of the ramp's top speed;
    quiet_fraction: a no-motion expression's window lies where the motion is under this
    fraction of the median plateau; extra_ratio: with more episodes than prompts, the extra
    (smallest) ones are dropped with a warning only if their peaks are below this fraction of
    the smallest kept peak, else it is an error (a dropped genuine prompt would shift every
    later label by one).

    Raises :class:`HoldProposalError` when the motion does not split into one episode per
    moving prompt. Returns a :class:`HoldProposal`.
    """
    if simon_says is None:
        raise ValueError("give the Simon-Says set (simon_says=ControlSet or SimonSays)")
    ss = getattr(simon_says, "simon_says", simon_says)
    names = ss.expression_names
    n_expr = len(names)
    order = list(range(n_expr)) if order is None else [int(e) for e in order]
    if sorted(set(order)) != sorted(order) or any(not 0 <= e < n_expr for e in order):
        raise ValueError(f"order must be distinct expression indices in [0, {n_expr}), got {order}")
    still = ~np.any(ss.targets != 0, axis=1)   # (E,) expressions that move nothing (Neutral)
    moving = [e for e in order if not still[e]]

    signal = motion_signal(expression, jaw_pose, valid, vertices=vertices, metric=metric, jaw_scale=jaw_scale,
                           sigma=smooth_s * fps)
    s, units, valid = signal.motion, signal.units, signal.valid   # valid: and finite
    t = s.shape[0]
    # The resting level: what the quieter frames (rests, Neutral, the valleys between prompts)
    # show. Peaks are measured from it; the resting face's own wandering stays near it.
    floor = float(np.median(s[valid & (s <= np.quantile(s[valid], _REST_QUANTILE))]))
    min_gap = int(round(min_gap_s * fps))
    episodes = _episodes(s, floor, min_activity, min_prominence, min_gap)
    n_prompts = len(moving)
    advice = (f"min_activity (now {min_activity}), min_prominence (now {min_prominence}) or min_gap_s "
              f"(now {min_gap_s} s at fps={fps})")
    if len(episodes) < n_prompts:
        raise HoldProposalError(
            f"found {len(episodes)} activity episode(s) but {n_prompts} prompted expressions move the face: "
            f"lower {advice}, or check that the take shows every prompt (episodes at frames "
            f"{', '.join(f'{a}-{b}' for a, b, _ in episodes) or 'none'})")
    if len(episodes) > n_prompts:
        by_height = sorted(episodes, key=lambda ep: s[ep[2]], reverse=True)
        kept, extra = by_height[:n_prompts], by_height[n_prompts:]
        smallest = s[kept[-1][2]] - floor if kept else np.inf
        biggest_extra = s[extra[0][2]] - floor
        where = ", ".join(f"{a}-{b} (peak {s[p] - floor:.3g})" for a, b, p in sorted(extra)[:8])
        where += f", ... ({len(extra)} in all)" if len(extra) > 8 else ""
        if biggest_extra >= extra_ratio * smallest:
            raise HoldProposalError(
                f"found {len(episodes)} activity episodes but {n_prompts} prompted expressions move the face, "
                f"and the {len(extra)} smallest (at frames {where}) are not clearly smaller than the others "
                f"(the smallest of which peaks at {smallest:.3g} {units}), so which are the prompts is "
                f"ambiguous: raise {advice}, or cut the take to the prompts")
        warnings.warn(f"propose_holds: {len(extra)} small extra activity episode(s) ignored at frames {where}",
                      stacklevel=2)
        episodes = sorted(kept)

    hold = np.full(t, -1, np.int32)
    peak = np.full(n_expr, np.nan)
    plateau = np.full(n_expr, np.nan)
    n_frames = np.zeros(n_expr, np.int64)
    n_invalid = np.zeros(n_expr, np.int64)
    first = np.full(n_expr, -1, np.int64)
    last = np.full(n_expr, -1, np.int64)
    span = np.full((n_expr, 2), -1, np.int64)

    def assign(e, a, b):
        frames = np.arange(a, b + 1)
        ok = frames[valid[frames]]
        hold[ok] = e
        first[e], last[e] = a, b
        n_frames[e], n_invalid[e] = len(ok), len(frames) - len(ok)
        peak[e] = float(np.max(s[frames]))

    # Episode boundaries for the hold search: the deepest point between neighbouring episodes.
    bounds = [0]
    for (_, end_a, _), (start_b, _, _) in zip(episodes[:-1], episodes[1:]):
        bounds.append(end_a + int(np.argmin(s[end_a:start_b + 1])) if start_b > end_a else end_a)
    bounds.append(t - 1)
    slope = np.gradient(s)
    for i, (e, (start, end, top)) in enumerate(zip(moving, episodes)):
        level = np.median(s[start:end + 1])
        plateau[e] = float(level)
        threshold = floor + plateau_fraction * (level - floor)
        above = s >= threshold
        lo, hi = bounds[i], bounds[i + 1]
        # The run of frames above the threshold around the peak ...
        a = b = top
        while a - 1 >= lo and above[a - 1]:
            a -= 1
        while b + 1 <= hi and above[b + 1]:
            b += 1
        # ... less its ends that are still ramping: the last frames of an ease-in ramp are
        # already above the threshold but still changing at a good part of the ramp's speed.
        rise, fall = float(np.max(slope[lo:top + 1])), float(np.max(-slope[top:hi + 1]))
        while a < b and slope[a] > ramp_slope * rise:
            a += 1
        while b > a and -slope[b] > ramp_slope * fall:
            b -= 1
        span[e] = (start, end)
        assign(e, a, b)

    hold_len = int(np.median(n_frames[moving] + n_invalid[moving])) if moving else int(round(fps))
    median_plateau = float(np.nanmedian(plateau[moving])) - floor if moving else float(np.max(s) - floor)
    calm = s - floor <= quiet_fraction * median_plateau
    ep_of = dict(zip(moving, episodes))
    for e in order:
        if not still[e]:
            continue
        # The quiet stretch between the episodes of the moving prompts before and after it.
        pos = order.index(e)
        before = [ep_of[x] for x in order[:pos] if x in ep_of]
        after = [ep_of[x] for x in order[pos + 1:] if x in ep_of]
        lo = before[-1][1] + 1 if before else 0
        hi = after[0][0] - 1 if after else t - 1
        runs = _runs(calm[lo:hi + 1])     # lost frames in it are left out by assign(), as for the others
        if not runs:
            warnings.warn(f"propose_holds: no quiet stretch for {names[e]!r} between frames {lo} and {hi}; "
                          f"left unlabelled", stacklevel=2)
            continue
        a, b = max(runs, key=lambda r: r[1] - r[0])
        a, b = a + lo, b + lo
        n = min(hold_len, b - a + 1)
        mid = (a + b + 1 - n) // 2
        span[e] = (a, b)
        assign(e, mid, mid + n - 1)
        plateau[e] = float(np.median(s[mid:mid + n]))

    return HoldProposal(hold=hold, peak=peak, plateau=plateau, n_frames=n_frames, n_invalid=n_invalid,
                        first=first, last=last, episode=span, motion=s, floor=floor, noise=signal.noise,
                        units=units)


def proposal_table(proposal: HoldProposal, simon_says, frame_ids=None) -> str:
    """A plain-text table of a proposal, one row per expression: frames proposed, lost frames
    left out, the range (frame ids, or indices), peak and plateau motion."""
    ss = getattr(simon_says, "simon_says", simon_says)
    names = ss.expression_names
    ids = np.arange(len(proposal.hold)) if frame_ids is None else np.asarray(frame_ids)
    width = max(len(n) for n in names)
    lines = [f"{'expression':<{width}}  frames  lost  range          peak    plateau  ({proposal.units})"]
    for e, name in enumerate(names):
        if proposal.first[e] < 0:
            lines.append(f"{name:<{width}}  {0:>6}  {'-':>4}  {'(none)':<13}")
            continue
        rng = f"{ids[proposal.first[e]]}-{ids[proposal.last[e]]}"
        lines.append(f"{name:<{width}}  {proposal.n_frames[e]:>6}  {proposal.n_invalid[e]:>4}  {rng:<13}"
                     f"  {proposal.peak[e]:>6.3g}  {proposal.plateau[e]:>7.3g}")
    return "\n".join(lines)
