"""PCA shape (identity) and expression bases of the synthetic head.

Both bases are built the way FLAME's were: as principal components of a population of
deformations, scaled by their standard deviations, so that coefficients ~ N(0, 1) reproduce
the population. :func:`pca_basis` is the one PCA routine; it takes a stack of deformation
fields and (optionally) the random activations that mix them, so a later semantic rig can
rebuild the expression basis as PCA of its own activations.

- Identity: the population is a Gaussian over *generators*: global scalings, every row of the
  head's proportion table, every facial feature's size (each a finite difference of the
  procedural head), an eye-spacing field, and random smooth fields (mostly symmetric) for the
  long tail. Its exact PCA is an SVD of the generator matrix.
- Expression: localized facial deformations (brows, lids, cheeks, nose, lips/mouth corners,
  jaw area; left and right separately) plus small random local bumps, activated sparsely at
  random; the PCA modes of those samples are non-semantic mixtures, as in FLAME.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flamejax.synthetic import rigging
from flamejax.synthetic.fields import (FLIP_X, anchors, head_only, random_smooth_fields,
                                       smoothstep, symmetrize, window)
from flamejax.synthetic.head import (CUT_MOUTH, KNOT, PART_HEAD, SIDE_LOWER, SIDE_UPPER, HeadMesh,
                                     eyeball_centre, neutral_openings)


def _pca(d: np.ndarray, cov: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the population x = d^T a with a ~ (0, cov). d (M, 3V), cov (M, M) PSD.

    With cov = L L^T the population's second moment is (L^T d)^T (L^T d); its principal
    directions come from the M x M eigenproblem of L^T (d d^T) L, so nothing of size 3V x 3V
    or N x 3V is ever formed and no large SVD is needed. Returns std-scaled components
    (n, 3V) and stds (n,)."""
    evals_c, evecs_c = np.linalg.eigh(cov)
    l = evecs_c * np.sqrt(np.clip(evals_c, 0.0, None))           # cov = l l^T
    gram = l.T @ (d @ d.T) @ l
    evals, u = np.linalg.eigh(0.5 * (gram + gram.T))
    order = np.argsort(evals)[::-1][:n_components]
    if n_components > np.sum(evals > evals.max() * 1e-12):
        raise ValueError(f"the population has fewer than {n_components} independent directions")
    # Scaled components S V^T = U^T L^T d (rows orthogonal, norms = the stds).
    comps = (l @ u[:, order]).T @ d
    std = np.sqrt(evals[order])
    # Signs: positive against a fixed generic reference vector. (Not "largest entry positive":
    # in a mirror-symmetric component an entry and its mirror image tie, and rounding would decide.)
    ref = np.cos(0.7 * np.arange(comps.shape[1]) + 0.3)
    comps *= np.where(comps @ ref < 0.0, -1.0, 1.0)[:, None]
    return comps, std


def pca_basis(fields: np.ndarray, n_components: int, activations: np.ndarray | None = None,
              center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of deformation samples, scaled by their standard deviations.

    fields (M, V, 3): deformation fields. activations (N, M) or None: the samples are
    ``activations @ fields`` (N of them); None means the M fields themselves are the samples.
    center: subtract the sample mean first (False: second-moment PCA about the neutral, so
    coefficient 0 is the neutral face). Returns components (n, V, 3), ordered by decreasing
    variance and mutually orthogonal over all 3V coordinates, each scaled by its std (so that
    coefficients ~ N(0, 1) reproduce the samples' second moments), and the stds (n,). Signs are
    fixed (positive against a fixed reference vector), so results are deterministic.

    This is the seam for rebuilding an expression basis from any rig: pass the rig's
    deformation fields and the activations of its controls.
    """
    m, v, _ = fields.shape
    a = np.eye(m) if activations is None else np.asarray(activations, float)
    if a.ndim != 2 or a.shape[1] != m:
        raise ValueError(f"activations must be (N, {m}), got {a.shape}")
    if center:
        a = a - a.mean(axis=0, keepdims=True)
    comps, std = _pca(fields.reshape(m, -1), a.T @ a / a.shape[0], n_components)
    return comps.reshape(-1, v, 3), std


def gaussian_pca(generators: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA of the population sum_k z_k g_k with z ~ N(0, I): generators (M, V, 3) ->
    std-scaled components (n, V, 3) and stds (n,), as :func:`pca_basis`."""
    m, v, _ = generators.shape
    comps, std = _pca(generators.reshape(m, -1), np.eye(m), n_components)
    return comps.reshape(-1, v, 3), std


# ---------------------------------------------------------------------------------------------
# Identity


def _spec_fields(mesh: HeadMesh):
    """Finite-difference fields of the procedural head w.r.t. its proportions, with their
    population stds: (M, V, 3) per unit change, and (M,) stds. The head is resampled at the same
    grid parameters, so a field is a shape change, not a sliding of the grid; eyeballs follow
    their (re-derived) centres rigidly."""
    spec = mesh.spec
    base_head = mesh.head_points(neutral_openings(spec))
    base_eye = eyeball_centre(spec, mesh.ku)
    n_head = mesh.n_head
    fields, stds = [], []

    def add(new_spec, step, std):
        f = np.zeros_like(mesh.vertices)
        f[:n_head] = mesh.head_points(neutral_openings(new_spec), new_spec) - base_head
        de = eyeball_centre(new_spec, mesh.ku) - base_eye
        f[mesh.eyeball_ids[0]] = de
        f[mesh.eyeball_ids[1]] = de * FLIP_X
        fields.append(f / step)
        stds.append(std)

    step = 1e-4
    k0 = spec.knots
    face = {KNOT[n] for n in ("brow", "eye", "cheekbone", "nose_tip", "subnasale", "upper_lip",
                              "mouth", "lower_lip", "chin", "menton")}
    # Each table column (depths, widths, heights, squareness) varies by smooth bumps spanning a
    # few rows: a single row alone would crease the surface across the head.
    rows = np.arange(k0.shape[0])
    for centre in range(1, k0.shape[0]):
        bump = np.exp(-0.5 * ((rows - centre) / 1.5) ** 2)
        for col, std in ((1, 0.0025), (3, 0.0025), (5, 0.003), (0, 0.002), (2, 0.002), (4, 0.002),
                         (6, 0.06), (7, 0.06)):
            k = k0.copy()
            h = step if col < 6 else 1e-3
            # Near the crown pole, changes shrink with the rows' size (the top stays a dome).
            taper = k0[:, col] / k0[:, col].max() if col in (1, 3, 5) else np.clip((rows - 1) / 2.0, 0, 1)
            k[:, col] += h * bump * taper
            add(dataclasses.replace(spec, knots=k), h, std * (1.0 if centre in face else 0.8))
    for name, rel in (("nose_height", 0.15), ("nose_width", 0.12), ("nose_bridge_width", 0.15),
                      ("lip_upper", 0.2), ("lip_lower", 0.2), ("chin", 0.3), ("brow", 0.3),
                      ("cheekbone", 0.3), ("ear_height", 0.12), ("ear_out", 0.2),
                      ("mouth_half_width", 0.07), ("socket_depth", 0.2), ("eye_inset", 0.3)):
        value = getattr(spec, name)
        add(dataclasses.replace(spec, **{name: value + step}), step, rel * value)
    return np.stack(fields), np.asarray(stds)


def identity_basis(mesh: HeadMesh, n_shape: int, rng: np.random.Generator) -> np.ndarray:
    """(n_shape, V, 3) identity components (PCA of the generator population, std-scaled).

    Scale: with beta ~ N(0, 1) the first components move the head by ~1-2 cm at most, later
    ones by millimetres and less.
    """
    pts = anchors(mesh)
    centre = np.array([0.0, 0.0, 0.0])
    gens, stds = [], []
    # Global proportions: width, height, depth, and a forward/back slope of the face.
    for axis, std in ((0, 0.06), (1, 0.05), (2, 0.05)):
        f = np.zeros_like(pts)
        f[:, axis] = pts[:, axis] - centre[axis]
        gens.append(f), stds.append(std)
    f = np.zeros_like(pts)
    f[:, 2] = pts[:, 1]
    gens.append(f), stds.append(0.05)
    spec_f, spec_s = _spec_fields(mesh)
    gens += list(spec_f)
    stds += list(spec_s)
    # Eye spacing: the eye regions and eyeballs slide sideways together.
    f = np.zeros_like(pts)
    for k, sign in ((0, 1.0), (1, -1.0)):
        f[:, 0] += sign * window(pts, mesh.eye_centres[k], [0.016, 0.014, 0.03])
    gens.append(f), stds.append(0.0025)
    # The long tail: random smooth fields, mostly even in x, with decaying stds.
    # A fixed population (unless more components are asked for than it has), so a smaller
    # n_shape keeps the leading components of a larger one.
    n_rand = max(340, n_shape + 40) - len(gens)
    rand = random_smooth_fields(pts, n_rand, rng, length_scale=0.05, n_waves=8)
    even = rng.uniform(size=n_rand) < 0.8
    rand = np.where(even[:, None, None], symmetrize(rand, mesh.mirror), symmetrize(rand, mesh.mirror, -1.0))
    rand /= np.sqrt(np.mean(np.sum(rand * rand, -1), -1))[:, None, None]
    gens += list(rand)
    stds += list(0.0015 * (1.0 + np.arange(n_rand)) ** -0.5)
    d = np.stack(gens) * np.asarray(stds)[:, None, None]
    comps, _ = gaussian_pca(d, n_shape)
    return comps


# ---------------------------------------------------------------------------------------------
# Expression


def _mouth_sides(mesh: HeadMesh):
    """(V,) upper and lower lip-region indicators in [0, 1]: which side of the lip line a vertex
    is on (the two copies of the lip line count as their side). 0 on the eyeballs."""
    head = mesh.part == PART_HEAD
    u = np.nan_to_num(mesh.uv0[:, 0])
    d = u - mesh.cut_span[CUT_MOUTH, 0]
    lower = (d > 0) | (mesh.side == SIDE_LOWER) & (mesh.cut == CUT_MOUTH)
    upper = (d < 0) | (mesh.side == SIDE_UPPER) & (mesh.cut == CUT_MOUTH)
    return (upper & head).astype(float), (lower & head).astype(float)


def expression_atoms(mesh: HeadMesh, weights: np.ndarray, joints: np.ndarray,
                     rng: np.random.Generator, n_random: int = 80):
    """Localized facial deformations: (M, V, 3) fields (unit activation = a strong expression)
    and M names. Left/right variants are separate atoms; the last ``n_random`` are small random
    local bumps (they give the basis its full rank)."""
    spec = mesh.spec
    p = mesh.vertices
    head = (mesh.part == PART_HEAD).astype(float)
    ce = mesh.eye_centres[0]
    k = spec.knots
    y_eye, y_mouth, y_tip, y_chin = ce[1], k[KNOT["mouth"], 0], k[KNOT["nose_tip"], 0], k[KNOT["chin"], 0]
    mw = spec.mouth_half_width
    upper, lower = _mouth_sides(mesh)
    base = mesh.head_points(neutral_openings(spec))
    atoms, names = [], []

    def add(name, field):
        atoms.append(field * head[:, None])
        names.append(name)

    def opened(**changes):
        f = np.zeros_like(p)
        f[: mesh.n_head] = mesh.head_points(neutral_openings(spec)._replace(**changes)) - base
        return f

    def local(centre, sigma, disp, mask=None):
        w = window(p, centre, sigma) * (1.0 if mask is None else mask)
        return w[:, None] * np.asarray(disp, float)

    o = neutral_openings(spec)
    for side, s in (("L", 1.0), ("R", -1.0)):
        lid = dict(L=("left_up", "left_down"), R=("right_up", "right_down"))[side]
        add(f"brow_raise_inner_{side}", local([s * 0.016, y_eye + 0.024, 0.08], [0.012, 0.012, 0.03], [0, 0.008, 0.001]))
        add(f"brow_raise_outer_{side}", local([s * 0.046, y_eye + 0.022, 0.07], [0.014, 0.012, 0.03], [0, 0.007, 0]))
        add(f"brow_lower_{side}", local([s * 0.022, y_eye + 0.021, 0.08], [0.016, 0.011, 0.03], [-s * 0.004, -0.006, 0.002]))
        add(f"blink_{side}", opened(**{lid[0]: -getattr(o, lid[1])}))
        add(f"lower_lid_raise_{side}", opened(**{lid[1]: getattr(o, lid[1]) - 0.003}))
        add(f"lid_wide_{side}", opened(**{lid[0]: getattr(o, lid[0]) + 0.0028}))
        add(f"lid_tighten_{side}", local([s * ce[0], y_eye, 0.075], [0.016, 0.012, 0.02], [-s * 0.0015, 0, -0.0015]))
        add(f"cheek_raise_{side}", local([s * 0.042, y_eye - 0.03, 0.07], [0.016, 0.014, 0.03], [0, 0.005, 0.003]))
        add(f"cheek_puff_{side}", local([s * 0.048, y_mouth + 0.004, 0.06], [0.016, 0.016, 0.03], [s * 0.006, 0, 0.003]))
        add(f"nose_wrinkle_{side}", local([s * 0.011, y_tip + 0.014, 0.1], [0.009, 0.009, 0.03], [0, 0.004, 0.001]))
        add(f"nostril_flare_{side}", local([s * 0.016, y_tip - 0.005, 0.1], [0.006, 0.006, 0.02], [s * 0.003, 0, 0]))
        add(f"nasolabial_{side}", local([s * 0.028, y_mouth + 0.016, 0.09], [0.007, 0.009, 0.02], [0, 0.002, -0.003]))
        corner = [s * mw, y_mouth, 0.085]
        add(f"lip_corner_pull_{side}", local(corner, [0.013, 0.011, 0.03], [s * 0.006, 0.006, -0.003]))
        add(f"lip_corner_depress_{side}", local(corner, [0.012, 0.011, 0.03], [s * 0.002, -0.006, 0]))
        add(f"lip_stretch_{side}", local(corner, [0.014, 0.012, 0.03], [s * 0.007, -0.001, -0.002]))
        add(f"dimpler_{side}", local([s * (mw + 0.006), y_mouth, 0.08], [0.006, 0.008, 0.03], [-s * 0.001, 0, -0.003]))
        add(f"upper_lip_raise_{side}", local([s * 0.011, y_mouth + 0.006, 0.095], [0.012, 0.008, 0.03], [0, 0.005, 0.002], upper))
        add(f"lower_lip_depress_{side}", local([s * 0.011, y_mouth - 0.008, 0.09], [0.012, 0.009, 0.03], [0, -0.005, 0.001], lower))
        add(f"mouth_shift_{side}", local([0, y_mouth, 0.09], [0.022, 0.014, 0.03], [s * 0.006, 0, 0]))
        add(f"jaw_shift_{side}", weights[:, rigging.JAW, None] * np.array([s * 0.0025, 0.0, 0.0]))
    seam = 1.0 - np.exp(-0.5 * ((p[:, 1] - y_mouth) / 0.003) ** 2)   # 0 on the lip line
    lips = window(p, [0, y_mouth, 0.09], [0.022, 0.011, 0.03])
    add("lips_part", opened(mouth_up=0.0025, mouth_down=0.0035))
    add("lip_pucker", lips[:, None] * np.stack([-0.3 * p[:, 0], np.zeros(len(p)), np.full(len(p), 0.006)], -1))
    add("lip_funnel", opened(mouth_up=0.0025, mouth_down=0.0025) + lips[:, None] * np.array([0, 0, 0.004]))
    add("lip_press", lips[:, None] * np.stack([np.zeros(len(p)), -0.25 * (p[:, 1] - y_mouth), np.full(len(p), -0.001)], -1))
    add("lip_roll_in", window(p, [0, y_mouth, 0.09], [0.02, 0.006, 0.03])[:, None] * np.array([0, 0, -0.003]))
    add("chin_raise", local([0, y_chin + 0.006, 0.09], [0.016, 0.014, 0.03], [0, 0.004, 0.002], lower * seam))
    add("forehead_raise", local([0, y_eye + 0.05, 0.09], [0.035, 0.016, 0.04], [0, 0.004, 0]))
    add("jaw_thrust", weights[:, rigging.JAW, None] * np.array([0.0, 0.0, 0.004]))
    # A small jaw drop folded into the expression space, as FLAME's expression modes have.
    a = 0.09
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rel = p - joints[rigging.JAW]
    add("jaw_drop", weights[:, rigging.JAW, None] * (rel @ rot.T - rel))
    neck = smoothstep(np.nan_to_num(mesh.uv0[:, 0]), mesh.ku[KNOT["submental"]], mesh.ku[KNOT["throat"]]) * (
        np.cos(np.nan_to_num(mesh.uv0[:, 1])) > 0.3)
    add("neck_tense", neck[:, None] * np.array([0.0, -0.002, 0.0015]))
    # Random local bumps on the face: the long tail of the basis.
    face = np.flatnonzero((mesh.part == PART_HEAD) & (np.cos(np.nan_to_num(mesh.uv0[:, 1])) > 0.5)
                          & (p[:, 1] > y_chin - 0.02) & (p[:, 1] < y_eye + 0.06))
    centres = p[rng.choice(face, size=n_random, replace=True)]
    for i in range(n_random):
        sigma = rng.uniform(0.008, 0.02)
        add(f"random_{i}", local(centres[i], [sigma, sigma, 2 * sigma], rng.normal(0.0, 0.0006, 3)))
    return np.stack(atoms), names


# How often each family of atoms fires in the random population (the rest: _P_DEFAULT).
# Blinks and brows are frequent, the jaw-area atoms rarer (jaw_pose does most of that work).
_P_ACTIVE = {"blink": 0.25, "brow": 0.11, "lid": 0.18, "lower_lid": 0.18, "nostril": 0.15, "jaw": 0.05,
             "neck": 0.05, "random": 0.05}
_P_DEFAULT = 0.08


def sparse_activations(names: list[str], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(N, M) random sparse activations: a named atom is on in a few % to 15% of the samples
    (by family, see _P_ACTIVE) at intensity U(0.3, 1), left/right twins often together; the
    random bumps are signed, N(0, 1) when on."""
    m = len(names)
    act = np.zeros((n_samples, m))
    for j, name in enumerate(names):
        family = name.split("_")[0] if not name.startswith("lower_lid") else "lower_lid"
        on = rng.uniform(size=n_samples) < _P_ACTIVE.get(family, _P_DEFAULT)
        if name.startswith("random_"):
            act[:, j] = on * rng.normal(size=n_samples)
        else:
            act[:, j] = on * rng.uniform(0.3, 1.0, size=n_samples)
    index = {n: j for j, n in enumerate(names)}
    for j, name in enumerate(names):
        if name.endswith("_L") and name[:-2] + "_R" in index and not name.startswith(("mouth_shift", "jaw_shift")):
            twin = index[name[:-2] + "_R"]
            both = rng.uniform(size=n_samples) < 0.6
            act[:, twin] = np.where(both & (act[:, j] > 0), act[:, j] * rng.uniform(0.8, 1.2, n_samples), act[:, twin])
    return act


def expression_basis(mesh: HeadMesh, n_expr: int, weights: np.ndarray, joints: np.ndarray,
                     rng: np.random.Generator, n_samples: int = 4000) -> np.ndarray:
    """(n_expr, V, 3) expression components: PCA modes of random sparse atom activations."""
    atoms, names = expression_atoms(mesh, weights, joints, rng, n_random=max(80, n_expr - 40))  # fixed unless n_expr > 120
    act = sparse_activations(names, n_samples, rng)
    comps, _ = pca_basis(head_only(atoms, mesh), n_expr, act)
    return comps
