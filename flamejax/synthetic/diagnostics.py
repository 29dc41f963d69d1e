"""Is the performer's motion signature visible through a tracker? (the world's key property)

    report = signature_report(world, "performer00", "OS1")
    report.signature_mm, report.noise_mm          # (E,) per Simon-Says expression

Calibration only has something to learn if, on the Simon-Says hold frames, what the tracker
reports differs from the generic rig at the intended controls by clearly more than the tracker's
own noise. Definitions (all in millimetres, canonical head pose, the performer's identity):

- region of an expression: the vertices the generic rig moves by more than ``region_fraction`` of
  that expression's largest displacement (so a number is about the moving face, not the skull);
  expressions that move nothing (Neutral) are left out;
- ``signature_mm``: RMS over the region of (hold-mean tracked geometry - generic rig at the
  intended controls): what calibration must explain;
- ``noise_mm``: RMS over the region of (hold-mean tracked geometry - hold-mean geometry of the
  same tracker with its random errors switched off, same pose): what the tracker's noise leaves
  in the same quantity. ``frame_noise_mm`` is the same per frame (before averaging the hold);
- ``truth_mm``: RMS over the region of (true performer geometry - generic rig), the signature
  before tracking (the part outside FLAME's span is lost by any tracker); ``motion_mm``: RMS of
  the rig's own displacement over the region.

The noise-free run is the tracker's config with ``expr_noise``, ``jaw_noise``, ``expr_jitter``,
``jaw_jitter`` and ``pose_noise`` at zero: smoothing, shrinkage, truncation and clamping are the
tracker's *bias*, which a per-tracker calibration is meant to absorb, not noise.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.semantic.rig import rig_vertices_frames
from flamejax.synthetic.performers import performer_vertices
from flamejax.synthetic.trackers import TrackerConfig, canonical_pose, track, tracked_vertices
from flamejax.synthetic.world import World, tracked_geometry


class SignatureReport(NamedTuple):
    """Per Simon-Says expression that moves the face (E of them), millimetres."""

    expressions: tuple[str, ...]
    signature_mm: np.ndarray
    noise_mm: np.ndarray
    frame_noise_mm: np.ndarray
    truth_mm: np.ndarray
    motion_mm: np.ndarray


def noise_free(cfg: TrackerConfig) -> TrackerConfig:
    """The same tracker with its random errors switched off (bias kept)."""
    return dataclasses.replace(cfg, expr_noise=0.0, jaw_noise=0.0, expr_jitter=0.0, jaw_jitter=0.0,
                               pose_noise=0.0)


def signature_report(world: World, performer: str, tracker: str, *, region_fraction: float = 0.2) -> SignatureReport:
    """Compare, on ``performer``'s Simon-Says hold frames, the world's ``tracker`` output with the
    generic rig at the intended controls and with the tracker's noise (module docstring)."""
    model, rig = world.generic.model, world.generic.rig
    seq = world.sequences[performer]["simon_says"]
    person = world.performers[performer]
    cfg = dict(world.config.trackers)[tracker]
    geometry = performer_vertices(model, world.generic.target, person, seq.controls, seq.global_pose,
                                  seq.neck_pose)
    # no randomness is left in the config, so the key does not matter
    clean = track(model, geometry, seq.global_pose, seq.neck_pose, noise_free(cfg), jax.random.key(0),
                  shape=person.beta)
    noisy_v = tracked_geometry(world, tracker, performer, "simon_says")
    clean_v = np.asarray(tracked_vertices(model, canonical_pose(clean)))
    zeros = np.zeros_like(seq.global_pose)
    truth = np.asarray(performer_vertices(model, world.generic.target, person, seq.controls, zeros, zeros))

    labels = [e for e in np.unique(seq.hold) if e >= 0]
    first = np.array([np.flatnonzero(seq.hold == e)[0] for e in labels])
    intended = np.concatenate([np.zeros((1, seq.controls.shape[1]), np.float32), seq.controls[first]])
    rig_v = np.asarray(rig_vertices_frames(model, rig, jnp.asarray(intended), shape=person.beta))
    neutral, rig_v = rig_v[0], rig_v[1:]

    names, out = [], []
    dist = lambda a, b: np.linalg.norm(a - b, axis=-1)  # noqa: E731
    for e, label in enumerate(labels):
        frames = np.flatnonzero(seq.hold == label)
        motion = dist(rig_v[e], neutral)
        if motion.max() <= 0:
            continue
        region = motion > region_fraction * motion.max()
        rms = lambda d: float(np.sqrt(np.mean(d[..., region] ** 2)))  # noqa: E731
        mean_noisy, mean_clean = noisy_v[frames].mean(0), clean_v[frames].mean(0)
        out.append((rms(dist(mean_noisy, rig_v[e])), rms(dist(mean_noisy, mean_clean)),
                    rms(dist(noisy_v[frames], clean_v[frames])), rms(dist(truth[frames], rig_v[e])), rms(motion)))
        names.append(world.control_set.simon_says.expressions[label].name)
    cols = np.asarray(out).T * 1e3
    return SignatureReport(tuple(names), *cols)
