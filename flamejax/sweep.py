"""A grid of calibration and tracker weights evaluated in vmapped programs: the vectorised sweep.

    calibrations = [CalibrationConfig(reg=r) for r in (1e-3, 1e-2, 1e-1)]            # Gc settings
    weights = [InversionWeights(l1=a) for a in (1e-4, 1e-3, 1e-2)]                    # W settings
    records = evaluate_grid(world, calibrations, weights, max_frames=60)
    # one record per (calibration_index, weights_index, performer, tracker, take, variant)

Per (performer, tracker) the Gc calibrations are one vmapped solve
(:func:`flamejax.calibrate.calibrate_settings`), and per take the generic rig and the Gc calibrated
rigs are inverted under all W weight settings in one program (:func:`flamejax.track.track_grid`):
(1 + Gc) x W solves that a per-process sweep would run one job at a time, each job loading the
world and compiling again. The records are :func:`flamejax.evaluate.evaluate_world`'s for the
same settings (same metrics from :func:`flamejax.evaluate.score_controls`; the baseline's do not
depend on the calibration settings and are repeated for each of them), with two more keys,
``calibration_index`` and ``weights_index``. Timings are the batch's time divided by the number
of settings it served. Only the Baseline and Ours (calibrated) variants: a fine-tuned variant per
grid point is a per-process sweep's job.

Each rig's (weight setting, frame) solves share one pool of slots (:func:`flamejax.track.track_grid`);
the arithmetic is batched differently from :func:`flamejax.track.track_controls`'s, so results can
differ in the last float32 digits (measured: metrics within 2e-4 relative on the tests' world).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.calibrate import CalibrationConfig, calibrate_settings, stack_settings
from flamejax.evaluate import (DEFAULT_TAKES, TRAINING_TAKE, Variant, calibration_samples, check_ablation,
                               check_selection, score_controls, scoring, take_references, tracked_landmarks)
from flamejax.synthetic.world import World, tracked_geometry
from flamejax.track import InversionConfig, InversionWeights, inversion_problem, track_grid


def stack_weights(weights: Sequence[InversionWeights], dtype=jnp.float32) -> InversionWeights:
    """W settings -> one InversionWeights with (W,) leaves."""
    if not weights:
        raise ValueError("the grid needs at least one InversionWeights")
    return InversionWeights(*(jnp.asarray([float(getattr(w, f)) for w in weights], dtype)
                              for f in InversionWeights._fields))


def evaluate_grid(world: World, calibrations: Sequence[CalibrationConfig], weights: Sequence[InversionWeights], *,
                  inversion: InversionConfig = InversionConfig(), takes: Sequence[str] = DEFAULT_TAKES,
                  training_take: bool = True, trackers: Optional[Sequence[str]] = None,
                  performers: Optional[Sequence[str]] = None, max_frames: Optional[int] = None,
                  calibration_frames: str = "mean", simon_says_exclude: Sequence[str] = (),
                  hold_frames: Optional[int] = None, landmarks_only: bool = False, avatar_shape=None,
                  progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Baseline and calibrated variants under every (calibration setting, weight setting) pair
    -> records (module docstring). Arguments as :func:`flamejax.evaluate.evaluate_world`'s (the
    ablation knobs simon_says_exclude, hold_frames, landmarks_only included), with
    ``calibrations`` (Gc settings sharing their static fields) and ``weights`` (W settings)."""
    say = progress or (lambda _msg: None)
    eval_takes, trackers, performers = check_selection(world, takes, training_take, trackers, performers)
    model, generic = world.generic.model, world.generic
    check_ablation(world, simon_says_exclude, hold_frames, landmarks_only)
    cfgs = stack_settings(calibrations)
    w_stack = stack_weights(weights, model.dtype)
    n_cal, n_w = len(calibrations), len(weights)
    combinations = jnp.asarray(world.control_set.simon_says.combination_targets, model.dtype)
    score = scoring(world, avatar_shape)
    world_key = world.config.key()

    records = []
    for performer in performers:
        beta = jnp.asarray(world.performers[performer].beta, model.dtype)
        refs = take_references(world, performer, eval_takes, max_frames, score)
        for tracker in trackers:
            _, ss_geometry, data = calibration_samples(world, performer, tracker, calibration_frames,
                                                       simon_says_exclude=simon_says_exclude, hold_frames=hold_frames)
            start = time.perf_counter()
            result, state = calibrate_settings(model, generic.rig, beta, data, combinations, cfgs)
            jax.block_until_ready(result)
            calibration_seconds = time.perf_counter() - start
            say(f"{performer} {tracker}: {n_cal} calibrations in {calibration_seconds:.1f} s "
                f"(iterations {np.asarray(state.iter_num).tolist()})")
            variants = [Variant("baseline", model.exprdirs, generic.rig)] + [
                Variant("calibrated", result.exprdirs[i], jax.tree_util.tree_map(lambda x: x[i], result.rig))
                for i in range(n_cal)]
            problems = [inversion_problem(model, v.rig, beta, tweakers=score.tweakers, exprdirs=v.exprdirs,
                                          landmarks_only=landmarks_only) for v in variants]
            for take in eval_takes:
                tracked = (ss_geometry if take == TRAINING_TAKE
                           else tracked_geometry(world, tracker, performer, take))[refs[take].frames]
                start = time.perf_counter()
                solved, _ = track_grid(problems, tracked_landmarks(model, tracked) if landmarks_only else tracked,
                                       w_stack, inversion)
                solved = np.asarray(jax.block_until_ready(solved))            # (1 + Gc, W, F, K)
                track_seconds = (time.perf_counter() - start) / solved.shape[0] / n_w
                say(f"{performer} {tracker} {take}: {solved.shape[0]} rigs x {n_w} weights x "
                    f"{solved.shape[2]} frames in {track_seconds * solved.shape[0] * n_w:.1f} s")
                for p, variant in enumerate(variants):
                    for wi in range(n_w):
                        metrics = score_controls(world, variant, beta, solved[p, wi], take, refs[take], tracked, score)
                        n = solved.shape[2]
                        for ci in ([p - 1] if p else range(n_cal)):
                            records.append({
                                "world": world_key, "performer": performer, "tracker": tracker, "take": take,
                                "variant": variant.name, "training": take == TRAINING_TAKE, "frames": n,
                                **metrics, "variant_seconds": calibration_seconds / n_cal if p else 0.0,
                                "track_seconds": track_seconds, "frames_per_second": n / max(track_seconds, 1e-9),
                                "calibration_index": ci, "weights_index": wi})
    return records
