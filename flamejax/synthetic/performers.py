"""Synthetic performers: an identity plus a *motion signature* that colours everything they do.

    rig = make_target_rig(mesh, cs.names, rng)
    people = make_performers(4, rig, cs, n_shape=20, cfg=SignatureConfig(), rng=rng, mesh=mesh)
    deltas, jaw = performer_deltas(people[0], rig, controls)              # (T, V, 3), (T, 3)
    verts = performer_vertices(model, rig, people[0], controls, gpose, npose)   # (T, V, 3)

Why: the calibration method exists because the same *intended* controls c produce different
geometry on different people. A performer here intends c (the ground truth of a sequence) and
their face does

    c_eff    = clip(gains * (c + crosstalk @ c), 0, 1)                          (K,)
    geometry = target rig at c_eff  +  sum_k c_k residuals[k]                   (V, 3)

- ``gains`` (K,): lognormal around 1 (``gain_spread``), with a left/right asymmetry: mirror pairs
  get different gains (a per-pair term and a per-person dominant side, ``asymmetry``).
- ``crosstalk`` (K, K), entry [i, j] = how much of control i intending control j brings. Sparse:
  structured links, each present for a person with a probability (teeth grimace's upper-lip raise
  / lower-lip depress bring the same-side funnel quadrants -- the seed's failure case; corner pull
  brings cheek raise; jawOpen brings jawOpenExtreme, i.e. "one person's jaw open is another's jaw
  open extreme"), plus a few random links between controls of the same region.
- ``residuals`` (K, V, 3) metres at full intent: a smooth random field windowed to the control's
  region, with the rig's span projected out (below), scaled to ``residual_strength`` times the
  norm of the control's own motion (times a per-control lognormal factor). No control vector of
  the generic rig can produce it, so a calibrated basis is *needed* to explain it.

"Outside the rig's span": the span is the K delta fields plus the three linearised jaw rotation
fields w_jaw(v) * (e_a x (v - j_jaw)) (the rig's jaw moves geometry too). With window w (V,) the
residual is f = w * (g - D^T a) where a solves (D W D^T) a = D W g (weighted least squares), so
<f, d> = 0 exactly (to float round-off) for every field d of the span, f stays smooth (w, g and
D are) and stays inside the window. The window is a Gaussian at the motion-weighted centroid of
the control, truncated at 1e-3 and zero on the eyeballs; on coarse meshes it is widened until it
covers at least as many vertices as the span has fields (so something survives the projection).

Everything is NumPy and deterministic in the ``rng``; only :func:`performer_vertices` is JAX.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FlameModel, FlameParams, bind_identity, flame_forward_fixed
from flamejax.semantic.rig import euler_to_axis_angle
from flamejax.synthetic import rigging
from flamejax.chunking import map_chunks
from flamejax.synthetic.fields import anchors, random_smooth_fields, window
from flamejax.synthetic.head import PART_HEAD, HeadMesh
from flamejax.synthetic.target_rig import TargetRig


@dataclasses.dataclass(frozen=True)
class SignatureConfig:
    """Strengths of the motion signature (defaults: a clearly visible but plausible person).

    gain_spread: sigma of log-gains (0.2 -> most gains in [0.67, 1.5]).
    asymmetry: sigma of the log-gain difference between a mirror pair, per pair; half of it again
      as a per-person dominant side (0.12 -> L/R typically 10-25 % apart).
    crosstalk_strength: scale of the structured links' weights (1 -> weights in [0.2, 0.6]).
    link_prob: probability that a person has each structured link (grimace->funnel,
      corner pull->cheek raise, jawOpen->jawOpenExtreme).
    n_random_links, random_link_scale: extra random same-region links, weights U(0.3, 1) * scale.
    residual_strength: residual norm / the control's own motion norm (0.3: a third of the motion).
    residual_length: length scale (metres) of the residual's random smooth field.
    """

    gain_spread: float = 0.2
    asymmetry: float = 0.12
    crosstalk_strength: float = 1.0
    link_prob: tuple = (("grimace_funnel", 0.6), ("corner_cheek", 0.7), ("jaw_extreme", 0.5))
    n_random_links: int = 4
    random_link_scale: float = 0.2
    residual_strength: float = 0.3
    residual_length: float = 0.015


class Performer(NamedTuple):
    """name; beta (n_shape,) identity ~ N(0, 1); gains (K,); crosstalk (K, K) (row i brought by
    column j); residuals (K, V, 3) metres at full intent, orthogonal to the target rig's span."""

    name: str
    beta: np.ndarray
    gains: np.ndarray
    crosstalk: np.ndarray
    residuals: np.ndarray


# Structured cross-talk links: (source stem, brought stem, weight range at strength 1). Stems are
# expanded to same-side controls (L source -> L / UL / DL targets), see _links().
_LINKS = {
    # The seed's failure case: a performer's teeth grimace is partly a funnel.
    "grimace_funnel": (("mouthUpperLipRaise", "mouthFunnelU", (0.2, 0.6)),
                       ("mouthLowerLipDepress", "mouthFunnelD", (0.2, 0.6))),
    # Smiling raises the cheeks for most people.
    "corner_cheek": (("mouthCornerPull", "eyeCheekRaise", (0.2, 0.5)),),
    # "Jaw open" that is someone else's "jaw open extreme".
    "jaw_extreme": (("jawOpen", "jawOpenExtreme", (0.3, 0.8)),),
}


def _side(name: str) -> str:
    """'L', 'R' or '' (centred) from a MetaHuman control name."""
    if name.endswith(("L", "Left")):
        return "L"
    if name.endswith(("R", "Right")):
        return "R"
    return ""


def _links(names: Sequence[str], source: str, target: str) -> list[tuple[int, int]]:
    """(target index, source index) pairs: every control starting with ``source`` linked to
    every control starting with ``target`` on the same side (centred ones link to anything)."""
    out = []
    for j, s in enumerate(names):
        if not s.startswith(source):
            continue
        for i, t in enumerate(names):
            if t.startswith(target) and i != j and (not _side(s) or not _side(t) or _side(s) == _side(t)):
                out.append((i, j))
    return out


def jaw_motion_fields(mesh: HeadMesh) -> np.ndarray:
    """(3, V, 3) displacement per radian of jaw Euler x, y, z, to first order:
    w_jaw(v) * (e_a x (v - j_jaw)) (the first-order term of R = Rx Ry Rz is the same for all
    orders of composition)."""
    weights = rigging.skinning_weights(mesh)[:, rigging.JAW]
    joint = (rigging.joint_regressor(mesh) @ mesh.vertices)[rigging.JAW]
    rel = mesh.vertices - joint
    return np.stack([weights[:, None] * np.cross(axis, rel) for axis in np.eye(3)])


def control_motion(rig: TargetRig, jaw_fields: np.ndarray) -> np.ndarray:
    """(K, V, 3) each control's full-activation motion: its delta plus its linearised jaw."""
    return rig.deltas + np.einsum("ka,avc->kvc", rig.jaw, jaw_fields)


def _residual_window(points: np.ndarray, motion: np.ndarray, head: np.ndarray,
                     min_support: int) -> np.ndarray:
    """(V,) Gaussian window at the motion-weighted centroid of one control, sigma = the motion's
    spread per axis (clamped to 6-30 mm), truncated below 1e-3 and zero off the head.

    On coarse meshes the window is widened (sigma x 1.25 per step) until it covers at least
    ``min_support`` vertices: projecting S span fields out of a support of n vertices leaves
    3n - S degrees of freedom, and with n < S/3 nothing would be left."""
    mag = np.linalg.norm(motion, axis=-1) * head
    w = mag / max(mag.sum(), 1e-12)
    centre = w @ points
    sigma = np.clip(np.sqrt(w @ (points - centre) ** 2), 0.006, 0.030)
    while True:
        win = window(points, centre, sigma) * head
        win = np.where(win > 1e-3, win, 0.0)
        if np.count_nonzero(win) >= min(min_support, int(head.sum())):
            return win
        sigma = sigma * 1.25


def _project_out(field: np.ndarray, win: np.ndarray, span: np.ndarray) -> np.ndarray:
    """w * (g - D^T a), a = argmin || sqrt(W) (g - D^T a) ||: (V, 3) exactly orthogonal to every
    span field (S, V, 3). Only the window's support enters, which keeps it cheap at full size."""
    sup = np.flatnonzero(win)
    d = span[:, sup].reshape(len(span), -1)             # (S, 3n)
    ww = np.repeat(win[sup], 3)                          # (3n,)
    g = field[sup].reshape(-1)
    # Solved as sqrt(W) D^T a ~ sqrt(W) g (not the normal equations): the least-squares
    # residual is then orthogonal to sqrt(W) D^T to round-off even where D is rank-deficient.
    sw = np.sqrt(ww)
    a_mat = (d * sw).T
    for _ in range(2):   # a second pass (iterative refinement) removes the round-off of the first
        g = g - d.T @ np.linalg.lstsq(a_mat, sw * g, rcond=None)[0]
    out = np.zeros_like(field)
    out[sup] = win[sup, None] * g.reshape(-1, 3)
    return out


def make_residuals(mesh: HeadMesh, rig: TargetRig, strength: float, length: float,
                   rng: np.random.Generator) -> np.ndarray:
    """(K, V, 3) metres: per-control residual shapes outside the rig's span (module docstring),
    norm = strength * exp(N(0, 0.3)) * || control motion ||."""
    jaw_fields = jaw_motion_fields(mesh)
    motion = control_motion(rig, jaw_fields)
    span = np.concatenate([rig.deltas, jaw_fields], axis=0)
    head = (mesh.part == PART_HEAD).astype(float)
    pts = anchors(mesh)
    raw = random_smooth_fields(pts, len(rig.names), rng, length)
    scale = strength * np.exp(rng.normal(0.0, 0.3, size=len(rig.names)))
    out = np.zeros_like(rig.deltas)
    for k in range(len(rig.names)):
        win = _residual_window(mesh.vertices, motion[k], head, min_support=len(span))
        f = _project_out(raw[k], win, span)
        norm = np.linalg.norm(f)
        if norm > 0:
            out[k] = f * (scale[k] * np.linalg.norm(motion[k]) / norm)
    return out


def make_gains(names: Sequence[str], mirror: np.ndarray, cfg: SignatureConfig,
               rng: np.random.Generator) -> np.ndarray:
    """(K,) lognormal gains; a mirror pair shares a base gain and differs by exp(+-(a + s)),
    a ~ N(0, asymmetry) per pair, s ~ N(0, asymmetry / 2) the person's dominant side."""
    k = len(names)
    log_g = rng.normal(0.0, cfg.gain_spread, size=k)
    pair = rng.normal(0.0, cfg.asymmetry, size=k)
    dominant = rng.normal(0.0, 0.5 * cfg.asymmetry)
    out = log_g.copy()
    for i in range(k):
        j = int(mirror[i])
        if j != i:
            lo = min(i, j)                    # the pair's shared draws live at its first index
            sign = 1.0 if i == lo else -1.0   # control sets list L before R
            out[i] = log_g[lo] + sign * (pair[lo] + dominant)
    return np.exp(out)


def make_crosstalk(names: Sequence[str], regions: Sequence[str], cfg: SignatureConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """(K, K) sparse cross-talk, zero diagonal: structured links (each present with its
    probability, one weight per link type and side) plus random same-region links."""
    k = len(names)
    x = np.zeros((k, k))
    prob = dict(cfg.link_prob)
    for kind, links in _LINKS.items():
        present = rng.uniform() < prob.get(kind, 0.0)
        for source, target, (lo, hi) in links:
            weights = {side: rng.uniform(lo, hi) for side in ("L", "R", "")}
            if present:
                for i, j in _links(names, source, target):
                    x[i, j] = cfg.crosstalk_strength * weights[_side(names[j])]
    for _ in range(cfg.n_random_links):
        j = int(rng.integers(k))
        same = [i for i in range(k) if regions[i] == regions[j] and i != j]
        i = int(rng.choice(same))
        x[i, j] = max(x[i, j], cfg.random_link_scale * rng.uniform(0.3, 1.0))
    return x


def make_performers(n: int, target_rig: TargetRig, control_set, n_shape: int,
                    cfg: SignatureConfig = SignatureConfig(), rng: np.random.Generator = None, *,
                    mesh: HeadMesh) -> list[Performer]:
    """``n`` performers for a target rig (whose controls are ``control_set.names``, in order) on
    ``mesh`` (the head the rig was built on: the residuals need its points and jaw weights).
    Deterministic in ``rng``; each performer draws from its own stream."""
    if tuple(control_set.names) != tuple(target_rig.names):
        raise ValueError("the control set and the target rig name different controls")
    if rng is None:
        raise ValueError("make_performers needs an explicit np.random.Generator")
    names, mirror = control_set.names, control_set.mirror_indices
    out = []
    # One seed per performer, drawn up front: performer i is the same whatever n is.
    for i, seed in enumerate(rng.integers(0, 2**63 - 1, size=n)):
        r = np.random.default_rng(seed)
        beta = r.normal(size=n_shape)
        gains = make_gains(names, mirror, cfg, r)
        crosstalk = make_crosstalk(names, control_set.regions, cfg, r)
        residuals = make_residuals(mesh, target_rig, cfg.residual_strength, cfg.residual_length, r)
        out.append(Performer(f"performer{i:02d}", beta, gains, crosstalk, residuals))
    return out


def effective_controls(performer: Performer, controls) -> np.ndarray:
    """(T, K) what the face does for intended controls (T, K):
    clip(gains * (c + c @ crosstalk^T), 0, 1)."""
    c = np.asarray(controls, np.float64)
    return np.clip(performer.gains * (c + c @ performer.crosstalk.T), 0.0, 1.0)


def performer_deltas(performer: Performer, target_rig: TargetRig, controls):
    """(deltas (T, V, 3) metres, jaw Euler XYZ (T, 3) radians) for intended controls (T, K):
    rig deltas at c_eff plus residuals weighted by the intended c. Memory T * V * 3 floats."""
    c = np.asarray(controls, np.float64)
    c_eff = effective_controls(performer, c)
    deltas = (np.tensordot(c_eff, target_rig.deltas, axes=1)
              + np.tensordot(c, performer.residuals, axes=1))
    return deltas, c_eff @ target_rig.jaw


def performer_model(model: FlameModel, target_rig: TargetRig, performer: Performer) -> FlameModel:
    """The FLAME model of the performer's face: identity components of ``model`` (first
    len(beta)), then 2K expression components [rig deltas; residuals], driven by [c_eff; c]."""
    n_shape = len(performer.beta)
    if model.n_shape < n_shape:
        raise ValueError(f"the model has {model.n_shape} shape components, the performer {n_shape}")
    dirs = jnp.concatenate([model.identity_dirs[:n_shape],
                            jnp.asarray(target_rig.deltas, model.dtype),
                            jnp.asarray(performer.residuals, model.dtype)], axis=0)
    return dataclasses.replace(model, shapedirs=dirs, n_shape=n_shape)


@jax.jit
def _forward_frames(model: FlameModel, beta, expr, jaw_euler, global_pose, neck_pose):
    jaw = euler_to_axis_angle(jaw_euler, "xyz")
    fixed = dataclasses.replace(bind_identity(model, beta), landmarks=None)

    def one(e, j, g, n):
        return flame_forward_fixed(fixed, FlameParams(expression=e, jaw_pose=j, global_pose=g, neck_pose=n)).vertices

    return jax.vmap(one)(expr, jaw, global_pose, neck_pose)


def performer_vertices(model: FlameModel, target_rig: TargetRig, performer: Performer, controls,
                       global_pose, neck_pose, *, chunk: int = 256) -> jnp.ndarray:
    """(T, V, 3) the performer's posed geometry for intended controls (T, K) and axis-angle
    global/neck poses (T, 3): FLAME(beta, expression [c_eff; c] on [deltas; residuals],
    jaw = Euler c_eff @ rig.jaw), vmapped over frames. ``model``: a synthetic FlameModel on the
    rig's head (same vertices), supplying template, identity basis, skinning, correctives.
    chunk: frames per compiled call (:mod:`flamejax.chunking`)."""
    c = np.asarray(controls, np.float64)
    c_eff = effective_controls(performer, c)
    pm = performer_model(model, target_rig, performer)
    dt = model.dtype
    beta = jnp.asarray(performer.beta, dt)
    # frames built, cut and padded on the host: one compilation for every sequence length
    frames = (np.asarray(np.concatenate([c_eff, c], axis=1), dt), np.asarray(c_eff @ target_rig.jaw, dt),
              np.broadcast_to(np.asarray(global_pose, dt), (len(c), 3)),
              np.broadcast_to(np.asarray(neck_pose, dt), (len(c), 3)))
    vertices, = map_chunks(lambda *f: (_forward_frames(pm, beta, *f),), frames, chunk)
    return vertices
