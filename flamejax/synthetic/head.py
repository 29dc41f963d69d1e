"""Procedural head geometry: a FLAME-like neutral template as a warped latitude/longitude grid.

The head surface is one grid over two parameters: ``u`` (metres of arc length down the front
midline, from the crown pole to the open neck bottom) and ``phi`` (radians around the vertical
axis; 0 is the front midline, +pi/2 the subject's left = +x). :func:`surface` maps any (u, phi)
to a point, so the mesh, the landmarks and the region masks all sample the same smooth function.

How it is built:

1. *Base*: every row u is a horizontal-ish closed curve, a polar superellipse with half-width W,
   front depth F and back depth B; its height is blended from front, side and back values (rows
   slope down toward the face, so the jaw line runs from the chin up to the ears). The per-row
   values come from an anatomical knot table (crown, forehead, brow, eyes, nose, mouth, chin,
   submental, throat, neck) interpolated monotonically.
2. *Features*: smooth displacement fields on top (nose, brows, eyelid shells around the
   eyeballs, cheekbones, lips, chin, ears).
3. *Cuts*: the lip line and the two eye openings are segments of one grid row whose interior
   vertices are duplicated (upper copy above, lower copy below), so the mouth can open. The eye
   slits are opened into almond holes by warping ``u`` near them, before the surface is sampled,
   so the lids stay on the surface and no triangle flips.
4. *Eyeballs*: separate closed UV spheres behind the eye openings, like FLAME's.

Everything is vectorised NumPy in float64 and left/right symmetric by construction (the
columns are mirror-symmetric, features are even in x); :attr:`HeadMesh.mirror` is the vertex
permutation x -> -x.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from scipy.interpolate import PchipInterpolator

# Vertex parts.
PART_HEAD, PART_LEFT_EYE, PART_RIGHT_EYE = 0, 1, 2
# Slit sides: the copy of a cut-row vertex that belongs to the lower edge of the cut.
SIDE_NONE, SIDE_UPPER, SIDE_LOWER = 0, 1, -1


class Resolution(NamedTuple):
    """Mesh resolution: ``rows`` grid rows (pole included), ``cols`` grid columns (even),
    ``eye_rings`` latitude rings and ``eye_segments`` (even) longitudes per eyeball."""

    rows: int
    cols: int
    eye_rings: int
    eye_segments: int


SIZES = {
    # ~5000 vertices / ~9900 faces: FLAME 2020 has 5023 / 9976.
    "full": Resolution(rows=66, cols=68, eye_rings=13, eye_segments=24),
    "small": Resolution(rows=34, cols=30, eye_rings=7, eye_segments=12),
    "tiny": Resolution(rows=22, cols=20, eye_rings=4, eye_segments=8),
}


def resolve_size(size) -> Resolution:
    """``"full" | "small" | "tiny"`` or an explicit :class:`Resolution` (or 4-tuple)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)} or a Resolution, got {size!r}")
        return SIZES[size]
    res = Resolution(*size)
    if res.rows < 19 or res.cols < 16 or res.cols % 2 or res.eye_rings < 2 or res.eye_segments < 6 \
            or res.eye_segments % 2:
        raise ValueError(f"resolution too coarse or odd: {res} (need rows>=19, even cols>=16, "
                         "eye_rings>=2, even eye_segments>=6)")
    return res


# ---------------------------------------------------------------------------------------------
# Proportions

# Knot table, one row per anatomical level, crown to neck bottom (metres). Columns:
# front midline (height, depth F), side (height, half-width W), back (height, depth B),
# superellipse exponent at the front and at the back (2 = ellipse, larger = squarer).
_KNOT_NAMES = ("crown", "vertex", "top", "hairline", "forehead", "brow", "eye", "cheekbone",
               "nose_tip", "subnasale", "upper_lip", "mouth", "lower_lip", "chin", "menton",
               "submental", "throat", "neck", "neck_bottom")
_KNOTS = np.array([
    #  y_f     F      y_s     W      y_b     B     p_f   p_b
    [0.125, 0.000, 0.125, 0.000, 0.125, 0.000, 2.0, 2.0],   # crown (pole)
    [0.121, 0.032, 0.121, 0.026, 0.120, 0.036, 2.0, 2.0],
    [0.106, 0.068, 0.107, 0.055, 0.100, 0.076, 2.1, 2.1],
    [0.085, 0.086, 0.087, 0.068, 0.071, 0.094, 2.3, 2.2],   # hairline
    [0.058, 0.093, 0.060, 0.074, 0.040, 0.100, 2.5, 2.2],
    [0.030, 0.095, 0.034, 0.077, 0.010, 0.099, 2.7, 2.2],   # brow
    [0.012, 0.088, 0.014, 0.078, -0.014, 0.093, 2.8, 2.2],  # eye
    [-0.010, 0.088, -0.007, 0.077, -0.034, 0.085, 2.8, 2.2],
    [-0.028, 0.089, -0.024, 0.074, -0.050, 0.076, 2.6, 2.2],  # nose tip level
    [-0.040, 0.090, -0.034, 0.071, -0.060, 0.069, 2.4, 2.2],  # subnasale
    [-0.050, 0.091, -0.043, 0.068, -0.068, 0.064, 2.2, 2.2],
    [-0.060, 0.090, -0.051, 0.066, -0.075, 0.060, 2.1, 2.2],  # mouth (stomion)
    [-0.071, 0.087, -0.059, 0.064, -0.082, 0.058, 2.0, 2.2],
    [-0.089, 0.087, -0.069, 0.061, -0.091, 0.056, 1.8, 2.2],  # chin (pogonion)
    [-0.104, 0.075, -0.079, 0.057, -0.099, 0.055, 1.7, 2.2],  # menton
    [-0.112, 0.058, -0.090, 0.053, -0.108, 0.055, 1.9, 2.2],
    [-0.119, 0.043, -0.103, 0.052, -0.118, 0.056, 2.0, 2.2],  # throat
    [-0.150, 0.039, -0.140, 0.054, -0.150, 0.059, 2.1, 2.2],
    [-0.185, 0.041, -0.185, 0.057, -0.185, 0.063, 2.1, 2.2],  # neck bottom
])
KNOT = {name: k for k, name in enumerate(_KNOT_NAMES)}
# Rows per metre of front arc length, relative: the face gets most of the resolution.
_KNOT_DENSITY = np.array([0.45, 0.45, 0.5, 0.9, 1.3, 1.6, 1.6, 1.6, 1.7, 1.8, 1.9, 1.9, 1.7, 1.5,
                          1.2, 1.0, 0.55, 0.45])


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """Proportions of one head (metres unless said otherwise). Left/right symmetric.

    ``knots`` (K, 8) is the table above (possibly jittered); the rest place the features.
    """

    knots: np.ndarray
    eye_x: float = 0.0325          # eyeball centre |x|
    eyeball_radius: float = 0.0122
    eye_half_width: float = 0.0125  # half the palpebral fissure, from the eyeball centre
    lid_open_up: float = 0.0050     # upper lid above the slit row at the fissure's middle
    lid_open_down: float = 0.0032
    eye_inset: float = 0.0030       # cornea apex behind the base surface
    socket_depth: float = 0.0070
    mouth_half_width: float = 0.0245
    nose_height: float = 0.026      # tip protrusion over the base surface
    nose_width: float = 0.017       # half-width of the alae
    nose_bridge_width: float = 0.0075
    lip_upper: float = 0.0085       # vermilion protrusion
    lip_lower: float = 0.0085
    chin: float = 0.006
    brow: float = 0.006
    cheekbone: float = 0.006
    ear_height: float = 0.030       # half-height of the ear bump
    ear_out: float = 0.017

    def jittered(self, rng: np.random.Generator, scale: float = 1.0) -> "HeadSpec":
        """A nearby head: global size/width/depth and every feature drawn a few % around these
        values (deterministic given ``rng``). Symmetry is kept."""
        k = self.knots.copy()
        sy, sx, sz = 1.0 + scale * rng.normal(0.0, [0.03, 0.035, 0.03])
        k[:, [0, 2, 4]] *= sy
        k[:, 3] *= sx
        k[:, [1, 5]] *= sz
        # A slightly different skull: a smooth (low-frequency along the rows) wobble of the
        # widths/depths. Independent per-row noise would crease the surface between rows.
        t = np.linspace(0.0, 1.0, k.shape[0])[:, None, None]
        freq = np.arange(1, 4)[None, None, :]
        waves = np.cos(np.pi * freq * t + rng.uniform(0, 2 * np.pi, size=(1, 3, 3)))
        wobble = 1.0 + scale * 0.012 * np.sum(rng.normal(size=(1, 3, 3)) * waves, -1) / np.sqrt(3)
        k[:, [1, 3, 5]] *= wobble
        feats = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "knots"}
        for name in ("nose_height", "nose_width", "nose_bridge_width", "lip_upper", "lip_lower",
                     "chin", "brow", "cheekbone", "ear_height", "ear_out"):
            feats[name] *= float(np.exp(scale * rng.normal(0.0, 0.08)))
        for name in ("eye_x", "mouth_half_width", "eye_half_width"):
            feats[name] *= float(1.0 + scale * rng.normal(0.0, 0.03))
        feats["eye_x"] *= sx
        feats["mouth_half_width"] *= sx
        feats["eye_half_width"] = min(feats["eye_half_width"], feats["eyeball_radius"] * 1.04)
        return HeadSpec(knots=k, **feats)


def default_spec() -> HeadSpec:
    return HeadSpec(knots=_KNOTS.copy())


def knot_u(spec: HeadSpec) -> np.ndarray:
    """(K,) the parameter u of each knot: arc length (m) of the base front midline polyline."""
    front = spec.knots[:, [0, 1]]
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(front, axis=0), axis=1))])


# ---------------------------------------------------------------------------------------------
# The surface


def _smoothstep(x, a, b):
    t = np.clip((np.asarray(x, float) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(d2):
    return np.exp(-0.5 * d2)


def base_surface(spec: HeadSpec, u: np.ndarray, phi: np.ndarray, ku=None) -> np.ndarray:
    """The feature-less head: (N,) u, (N,) phi -> (N, 3) points. ``ku`` (K,) fixes the knots'
    parameters (default: this spec's own, :func:`knot_u`); pass the template's when comparing
    two specs point by point, so that the parameterisation does not slide."""
    ku = knot_u(spec) if ku is None else ku
    table = PchipInterpolator(ku, spec.knots, axis=0)(np.clip(u, 0.0, ku[-1]))
    y_f, dep_f, y_s, half_w, y_b, dep_b, p_f, p_b = table.T
    c, s = np.cos(phi), np.sin(phi)
    # Height: the cosine series through the front (phi=0), side (pi/2) and back (pi) values.
    a1 = 0.5 * (y_f - y_b)
    a2 = 0.25 * (y_f + y_b) - 0.5 * y_s
    a0 = 0.25 * (y_f + y_b) + 0.5 * y_s
    y = a0 + a1 * c + a2 * (2.0 * c * c - 1.0)
    # Polar superellipse; the exponent blends smoothly from front to back.
    p = p_b + (p_f - p_b) * 0.5 * (1.0 + c)
    depth = np.where(c >= 0.0, dep_f, dep_b)
    tiny = 1e-12
    inv = (np.abs(s) / np.maximum(half_w, tiny)) ** p + (np.abs(c) / np.maximum(depth, tiny)) ** p
    r = np.where(np.maximum(half_w, depth) < 1e-9, 0.0, inv ** (-1.0 / p))
    return np.stack([r * s, y, r * c], axis=-1)


def eyeball_centre(spec: HeadSpec, ku=None) -> np.ndarray:
    """(3,) centre of the left eyeball (the right one is its mirror): at the eye row's height,
    set back so the cornea apex is ``eye_inset`` behind the base surface."""
    ku = knot_u(spec) if ku is None else ku
    phis = np.linspace(0.0, 1.2, 2001)
    pts = base_surface(spec, np.full_like(phis, ku[KNOT["eye"]]), phis, ku)
    x, y, z = (np.interp(spec.eye_x, pts[:, 0], pts[:, k]) for k in range(3))
    return np.array([spec.eye_x, y, z - spec.eye_inset - spec.eyeball_radius])


def _features(spec: HeadSpec, p: np.ndarray, phi: np.ndarray, ku: np.ndarray,
              u: np.ndarray) -> np.ndarray:
    """Displacement (N, 3) added to base points p (N, 3). Every term is even in x."""
    x, y, z = p.T
    ax = np.abs(x)
    front = _smoothstep(np.cos(phi), 0.15, 0.55)  # facial features live on the front only
    k = spec.knots
    y_eye, y_mouth = k[KNOT["eye"], 0], k[KNOT["mouth"], 0]
    y_sn, y_tip = k[KNOT["subnasale"], 0], k[KNOT["nose_tip"], 0]
    y_chin = k[KNOT["chin"], 0]
    dz = np.zeros_like(x)

    # Nose: a dorsum rising from the nasion to a rounded tip, a steep underside back to the
    # subnasale, widening from the bridge to the alae.
    y_nasion = y_eye + 0.004
    t = np.clip((y_nasion - y) / (y_nasion - y_tip), 0.0, 1.0)   # 0 at the nasion, 1 at the tip
    under = _smoothstep(y, y_sn - 0.001, y_tip - 0.001)           # 1 above the tip, 0 at subnasale
    top = 1.0 - _smoothstep(y, y_nasion, y_nasion + 0.012)        # fades into the glabella
    mid = spec.nose_height * ((0.10 + 0.74 * t ** 1.2) * under * top
                              + 0.18 * _gauss(((y - y_tip) / 0.0065) ** 2))
    width = spec.nose_bridge_width + (0.8 * spec.nose_width - spec.nose_bridge_width) * t ** 1.6
    dz += mid * np.exp(-(ax / width) ** 2)
    # Alae (nostril wings) beside and a little above the tip's bottom.
    dz += 0.30 * spec.nose_height * _gauss(((ax - 0.7 * spec.nose_width) / 0.0058) ** 2
                                            + ((y - (y_tip - 0.004)) / 0.0065) ** 2)
    # Cheekbones below the outer eye, and the fuller cheek beside the mouth.
    dz += spec.cheekbone * _gauss(((ax - 0.047) / 0.014) ** 2 + ((y - (y_eye - 0.022)) / 0.012) ** 2)
    dz += 0.5 * spec.cheekbone * _gauss(((ax - 0.040) / 0.012) ** 2 + ((y - (y_mouth + 0.01)) / 0.012) ** 2)

    # Brow ridge over each eye, fading at the glabella and the temples.
    dz += spec.brow * _gauss(((ax - spec.eye_x) / 0.016) ** 2 + ((y - (y_eye + 0.020)) / 0.0065) ** 2)
    dz += 0.4 * spec.brow * _gauss((x / 0.012) ** 2 + ((y - (y_eye + 0.018)) / 0.007) ** 2)

    # Lips: upper and lower vermilion, the philtrum, the labiomental fold, the chin.
    mw = spec.mouth_half_width
    across = np.exp(-(ax / (0.92 * mw)) ** 4)        # full over the lips, smooth past the corners
    dz += spec.lip_upper * across * _gauss(((y - (y_mouth + 0.0040)) / 0.0040) ** 2)
    dz += 0.45 * spec.lip_upper * _gauss((x / 0.009) ** 2 + ((y - (y_mouth + 0.013)) / 0.0065) ** 2)
    dz += spec.lip_lower * across * _gauss(((y - (y_mouth - 0.0050)) / 0.0045) ** 2)
    dz -= 0.004 * np.exp(-(ax / (1.1 * mw)) ** 4) * _gauss(((y - (y_mouth - 0.017)) / 0.0045) ** 2)
    dz += spec.chin * _gauss((x / 0.017) ** 2 + ((y - y_chin) / 0.011) ** 2)
    # The closed lip seam: a shallow crease exactly at the mouth row (both copies sit on it).
    dz -= 0.0022 * _gauss(((u - ku[KNOT["mouth"]]) / 0.0018) ** 2) * np.exp(-(ax / mw) ** 4)
    # Eye sockets: a hollow around each eyeball, out of which the lid shell (an ellipsoid hugging
    # the ball) emerges; a smooth maximum of the two leaves a soft lid crease where they meet.
    c = eyeball_centre(spec, ku)
    dx, dy = ax - c[0], y - c[1]
    zf = z + dz * front
    socket = zf - spec.socket_depth * _gauss((dx / 0.014) ** 2 + ((dy - 0.002) / 0.012) ** 2) * front
    a_x, a_y, a_z = spec.eye_half_width + 0.002, spec.eyeball_radius + 0.0045, spec.eyeball_radius + 0.0016
    q = (dx / a_x) ** 2 + (dy / a_y) ** 2
    shell = np.where(q < 1.0, c[2] + a_z * np.sqrt(np.clip(1.0 - q, 0.0, None)), -1.0)
    k_soft = 0.0012
    lid = 0.5 * (socket + shell) + np.sqrt(0.25 * (socket - shell) ** 2 + k_soft ** 2)
    lid = np.where((q < 1.0) & (np.cos(phi) > 0.3), lid, socket)   # front only: not the back of the head
    disp = np.zeros_like(p)
    disp[:, 2] = lid - z

    # Ears: a flap behind the jaw joint, sticking out more toward its back edge, with a rim
    # (helix) and a hollow (concha); pushed out along the head's radial direction.
    y0 = y_eye - 0.008
    z0 = -0.014 * (k[KNOT["eye"], 3] / 0.078)
    a, b = spec.ear_height, 0.5 * spec.ear_height + 0.002
    r = np.sqrt(((y - y0) / a) ** 2 + ((z - z0) / b) ** 2)
    back = np.clip(0.5 + (z0 - z) / (2.0 * b), 0.0, 1.0)           # 0 front edge .. 1 back edge
    flap = _smoothstep(r, 1.08, 0.62)
    rim = _gauss(((r - 0.8) / 0.16) ** 2) * _smoothstep(y - y0 + (z0 - z), -0.6 * a, 0.2 * a)
    concha = _gauss(((y - y0 + 0.005) / 0.010) ** 2 + ((z - z0 - 0.003) / 0.0065) ** 2)
    bump = spec.ear_out * (flap * (0.25 + 0.75 * back) * 0.75 + 0.35 * rim * (0.3 + 0.7 * back)
                           - 0.55 * concha * flap)
    side = _smoothstep(np.abs(np.sin(phi)), 0.6, 0.85)
    disp[:, 0] += np.sin(phi) * side * bump
    disp[:, 2] += np.cos(phi) * side * bump
    return disp


def surface(spec: HeadSpec, u: np.ndarray, phi: np.ndarray, ku=None) -> np.ndarray:
    """The neutral head surface: (N,) u, (N,) phi -> (N, 3) points in metres."""
    u = np.asarray(u, float)
    phi = np.asarray(phi, float)
    ku = knot_u(spec) if ku is None else ku
    p = base_surface(spec, u, phi, ku)
    return p + _features(spec, p, phi, ku, u)


# ---------------------------------------------------------------------------------------------
# The mesh


class Openings(NamedTuple):
    """How far each cut is open: the shift (metres of u) of its upper / lower edge at the cut's
    middle (0 at the corners). Neutral: eyes open by the spec's lid values, mouth closed."""

    left_up: float
    left_down: float
    right_up: float
    right_down: float
    mouth_up: float = 0.0
    mouth_down: float = 0.0


def neutral_openings(spec: HeadSpec) -> Openings:
    return Openings(spec.lid_open_up, spec.lid_open_down, spec.lid_open_up, spec.lid_open_down)


# Cut ids (HeadMesh.cut) and how far their opening warp reaches up/down the surface (m).
CUT_MOUTH, CUT_LEFT_EYE, CUT_RIGHT_EYE = 1, 2, 3
_CUT_REACH = {CUT_MOUTH: 0.0085, CUT_LEFT_EYE: 0.0065, CUT_RIGHT_EYE: 0.0065}


@dataclasses.dataclass(frozen=True)
class HeadMesh:
    """The neutral template and the bookkeeping that rigging, bases and landmarks need.

    vertices (V, 3) float64 metres; faces (F, 3) int32, outward (counter-clockwise seen from
    outside). Head-surface vertices come first (``n_head``), then the left (+x) and right
    eyeball. Per vertex: uv0 (V, 2) grid parameters (u metres, phi radians) before the cuts are
    opened (NaN on eyeballs); part (V,) PART_*; cut (V,) CUT_* for the two copies of a cut's
    interior vertices, else 0; side (V,) SIDE_UPPER / SIDE_LOWER for those copies, else 0;
    mirror (V,) the vertex at x -> -x. Grid: ``grid`` (rows-1, cols) ring vertex ids (upper copies
    on cuts; the crown pole is vertex 0), ring_u (rows-1,), col_phi (cols,). cut_span (4, 3):
    for each cut id, (u of its row, phi centre, phi half-width). eye_centres (2, 3) left then
    right; eyeball_ids (2, n). face_side (F,) +1 for faces on a cut's upper edge, -1 lower edge.
    ku (K,) the knots' u (fixed for this mesh).
    """

    spec: HeadSpec
    ku: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    uv0: np.ndarray
    part: np.ndarray
    cut: np.ndarray
    side: np.ndarray
    mirror: np.ndarray
    grid: np.ndarray
    ring_u: np.ndarray
    col_phi: np.ndarray
    cut_span: np.ndarray
    eye_centres: np.ndarray
    eyeball_ids: np.ndarray
    face_side: np.ndarray

    @property
    def n_head(self) -> int:
        return int(np.sum(self.part == PART_HEAD))

    def row_of(self, knot: str) -> int:
        """Ring index (into ``grid``) of a named knot of the table."""
        return int(np.argmin(np.abs(self.ring_u - self.ku[KNOT[knot]])))

    def cut_gain(self, cut_id: int):
        """How much each head vertex follows the opening of one cut: gain (n_head,) in [0, 1]
        (1 on the cut's middle, falling off along phi to the corners and along u away from the
        row) and below (n_head,) bool (True: moves with the lower edge)."""
        u0, phi = self.uv0[: self.n_head].T
        u_cut, phi_c, phi_hw = self.cut_span[cut_id]
        prof = _lid_profile((phi - phi_c) / phi_hw)
        d = u0 - u_cut
        gain = prof * np.exp(-0.5 * (d / _CUT_REACH[cut_id]) ** 2)
        on_cut = self.cut[: self.n_head] == cut_id
        below = np.where(on_cut, self.side[: self.n_head] == SIDE_LOWER, d > 0)
        return gain, below

    def warped_u(self, openings: Openings) -> np.ndarray:
        """(n_head,) the u each head vertex is sampled at, with the cuts opened as given.

        The warp's slope along u stays below 1 for openings up to ~0.6 of the reach, so the
        grid never folds."""
        u = self.uv0[: self.n_head, 0].copy()
        for cid, up, down in ((CUT_LEFT_EYE, openings.left_up, openings.left_down),
                              (CUT_RIGHT_EYE, openings.right_up, openings.right_down),
                              (CUT_MOUTH, openings.mouth_up, openings.mouth_down)):
            gain, below = self.cut_gain(cid)
            u += np.where(below, down, -up) * gain
        return u

    def head_points(self, openings: Openings, spec: HeadSpec | None = None) -> np.ndarray:
        """(n_head, 3) the head surface vertices for given cut openings (and optionally another
        spec sampled at the same parameters): the tool expression fields are made with."""
        spec = self.spec if spec is None else spec
        pts = surface(spec, self.warped_u(openings), self.uv0[: self.n_head, 1], self.ku)
        pts[0] = base_surface(spec, np.zeros(1), np.zeros(1), self.ku)[0]   # the crown pole
        return pts


def _allocate(lengths: np.ndarray, total: int, minimum: np.ndarray) -> np.ndarray:
    """Split ``total`` intervals over segments proportionally to ``lengths`` (largest
    remainder), each at least ``minimum``."""
    minimum = np.asarray(minimum, int)
    if minimum.sum() > total:
        raise ValueError("resolution too coarse for the head's features")
    share = lengths / lengths.sum() * total
    counts = np.maximum(np.floor(share).astype(int), minimum)
    while counts.sum() > total:
        k = int(np.argmax(np.where(counts > minimum, counts - share, -np.inf)))
        counts[k] -= 1
    while counts.sum() < total:
        counts[int(np.argmax(share - counts))] += 1
    return counts


def _subdivide(knots: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Points splitting each [knots[k], knots[k+1]] into counts[k] equal parts (ends included)."""
    pts = [knots[:1]]
    for a, b, n in zip(knots[:-1], knots[1:], counts):
        pts.append(np.linspace(a, b, n + 1)[1:])
    return np.concatenate(pts)


def _phi_at_x(spec: HeadSpec, u: float, x: float, ku) -> float:
    """The phi (in [0, pi/2]) where row u of the base surface reaches |x|."""
    phis = np.linspace(0.0, np.pi / 2, 4001)
    xs = base_surface(spec, np.full_like(phis, u), phis, ku)[:, 0]
    return float(np.interp(x, xs, phis))


def _uv_sphere(centre: np.ndarray, radius: float, rings: int, segments: int):
    """A closed UV sphere with its poles on the z axis (front pole = pupil).

    Rings sit at polar angles symmetric about the equator, so the vertex mean is the centre
    exactly (the eye joints are regressed as that mean). Returns (N, 3) vertices, (M, 3) faces.
    """
    theta = np.pi * np.arange(1, rings + 1) / (rings + 1)
    alpha = 2 * np.pi * np.arange(segments) / segments
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([st * np.cos(alpha), st * np.sin(alpha), np.repeat(ct, segments, 1)], -1)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring.reshape(-1, 3), [[0.0, 0.0, -1.0]]])
    ids = 1 + np.arange(rings * segments).reshape(rings, segments)
    nxt = np.roll(ids, -1, axis=1)
    back = 1 + rings * segments
    # Seen from outside at the front pole, alpha increases counter-clockwise about +z.
    faces = [np.stack([np.zeros(segments, int), ids[0], nxt[0]], -1)]
    a, b, c, d = ids[:-1], nxt[:-1], nxt[1:], ids[1:]
    faces += [np.stack([a, d, c], -1).reshape(-1, 3), np.stack([a, c, b], -1).reshape(-1, 3)]
    faces.append(np.stack([np.full(segments, back), nxt[-1], ids[-1]], -1))
    return centre + radius * unit, np.concatenate(faces)


def _lid_profile(t: np.ndarray) -> np.ndarray:
    """Opening of a cut across its width, t in [-1, 1] (corners) -> [0, 1]; 0 outside."""
    return np.clip(1.0 - t * t, 0.0, None) ** 0.65


def build_head(spec: HeadSpec, res: Resolution) -> HeadMesh:
    """Lay out the grid, cut the mouth and eyes, sample the surface, add the eyeballs."""
    ku = knot_u(spec)
    n_rings, n_cols = res.rows - 1, res.cols
    half = n_cols // 2

    # Rows: every knot is a ring (so the eye and mouth rows exist at every resolution).
    counts = _allocate(np.diff(ku) * _KNOT_DENSITY, n_rings, np.ones(len(ku) - 1, int))
    ring_u = _subdivide(ku, counts)[1:]

    # Columns: mirror-symmetric, denser on the face; the eye corners are column knots.
    u_eye, u_mouth = ku[KNOT["eye"]], ku[KNOT["mouth"]]
    c_eye = eyeball_centre(spec, ku)
    phi_in = _phi_at_x(spec, u_eye, c_eye[0] - spec.eye_half_width, ku)
    phi_out = _phi_at_x(spec, u_eye, c_eye[0] + spec.eye_half_width, ku)
    pk = np.array([0.0, phi_in, phi_out, 1.3, 2.05, np.pi])     # face, eyes, cheeks, ears, back
    ccount = _allocate(np.diff(pk) * np.array([2.6, 2.6, 2.2, 1.7, 0.6]), half, np.array([1, 2, 1, 1, 1]))
    col_phi_half = _subdivide(pk, ccount)                 # half + 1 values, 0 .. pi
    col_phi = np.concatenate([col_phi_half[:-1], -col_phi_half[1:][::-1]])
    col_phi[half] = np.pi                                 # column j <-> column -j (mod cols)
    j_in, j_out = int(ccount[0]), int(ccount[0] + ccount[1])
    eye_cols = np.arange(j_in + 1, j_out)
    phi_mc = _phi_at_x(spec, u_mouth, spec.mouth_half_width, ku)
    j_mc = max(2, int(np.argmin(np.abs(col_phi_half - phi_mc))))
    mouth_cols = np.concatenate([np.arange(n_cols - j_mc + 1, n_cols), np.arange(0, j_mc)])
    i_eye = int(np.argmin(np.abs(ring_u - u_eye)))
    i_mouth = int(np.argmin(np.abs(ring_u - u_mouth)))
    cut_span = np.zeros((4, 3))
    cut_span[CUT_MOUTH] = (ring_u[i_mouth], 0.0, col_phi_half[j_mc])
    cut_span[CUT_LEFT_EYE] = (ring_u[i_eye], 0.5 * (phi_in + phi_out), 0.5 * (phi_out - phi_in))
    cut_span[CUT_RIGHT_EYE] = cut_span[CUT_LEFT_EYE] * np.array([1.0, -1.0, 1.0])

    # Grid vertex ids: the crown pole 0, then the rings.
    grid = 1 + np.arange(n_rings * n_cols).reshape(n_rings, n_cols)
    n_grid = 1 + n_rings * n_cols
    uu = np.concatenate([[0.0], np.repeat(ring_u, n_cols)])
    pp = np.concatenate([[0.0], np.tile(col_phi, n_rings)])
    cut = np.zeros(n_grid, np.int8)
    side = np.zeros(n_grid, np.int8)

    # Each cut's interior vertices get a lower copy (the originals are the upper edge).
    cuts = [(CUT_MOUTH, i_mouth, mouth_cols), (CUT_LEFT_EYE, i_eye, eye_cols),
            (CUT_RIGHT_EYE, i_eye, (n_cols - eye_cols) % n_cols)]
    lower = {}
    for cid, i, cols in cuts:
        upper_ids = grid[i, cols]
        cut[upper_ids] = cid
        side[upper_ids] = SIDE_UPPER
        lower[cid] = dict(zip(cols.tolist(), (len(uu) + np.arange(len(cols))).tolist()))
        uu = np.concatenate([uu, uu[upper_ids]])
        pp = np.concatenate([pp, pp[upper_ids]])
        cut = np.concatenate([cut, np.full(len(cols), cid, np.int8)])
        side = np.concatenate([side, np.full(len(cols), SIDE_LOWER, np.int8)])
    n_head = len(uu)

    # Faces of the grid: the pole fan, then quads split along mirror-symmetric diagonals.
    jn = (np.arange(n_cols) + 1) % n_cols
    faces = [np.stack([np.zeros(n_cols, int), grid[0], grid[0, jn]], -1)]
    top = grid[:-1].copy()                      # the upper edge of each quad row
    for cid, i, cols in cuts:                   # below a cut, quads use the lower copies
        top[i, cols] = [lower[cid][c] for c in cols.tolist()]
    a, b = top, top[:, jn]
    dd, cc = grid[1:], grid[1:, jn]
    left = (np.arange(n_cols) < half)[None, :, None]
    t1 = np.where(left, np.stack([a, dd, cc], -1), np.stack([a, dd, b], -1))
    t2 = np.where(left, np.stack([a, cc, b], -1), np.stack([b, dd, cc], -1))
    faces = np.concatenate(faces + [t1.reshape(-1, 3), t2.reshape(-1, 3)])

    # Eyeballs: the right one is the mirror image of the left (so mirror = same index).
    eye_v, eye_f = _uv_sphere(c_eye, spec.eyeball_radius, res.eye_rings, res.eye_segments)
    n_eye = len(eye_v)
    faces = np.concatenate([faces, eye_f + n_head, eye_f[:, ::-1] + n_head + n_eye]).astype(np.int32)
    left_ids = n_head + np.arange(n_eye)
    right_ids = left_ids + n_eye

    part = np.concatenate([np.zeros(n_head, np.int8), np.full(n_eye, PART_LEFT_EYE, np.int8),
                           np.full(n_eye, PART_RIGHT_EYE, np.int8)])
    uv0 = np.concatenate([np.stack([uu, pp], -1), np.full((2 * n_eye, 2), np.nan)])
    cut = np.concatenate([cut, np.zeros(2 * n_eye, np.int8)])
    side = np.concatenate([side, np.zeros(2 * n_eye, np.int8)])

    mirror = np.arange(n_head + 2 * n_eye)
    mirror[grid] = grid[:, (n_cols - np.arange(n_cols)) % n_cols]
    for cid, cid_m in ((CUT_MOUTH, CUT_MOUTH), (CUT_LEFT_EYE, CUT_RIGHT_EYE), (CUT_RIGHT_EYE, CUT_LEFT_EYE)):
        for col, vid in lower[cid].items():
            mirror[vid] = lower[cid_m][int((n_cols - col) % n_cols)]
    mirror[left_ids], mirror[right_ids] = right_ids, left_ids

    face_side = np.zeros(len(faces), np.int8)
    face_side[(side == SIDE_UPPER)[faces].any(1)] = 1
    face_side[(side == SIDE_LOWER)[faces].any(1)] = -1

    eye_centres = np.stack([c_eye, c_eye * np.array([-1.0, 1.0, 1.0])])
    mesh = HeadMesh(spec=spec, ku=ku, vertices=np.zeros((len(part), 3)), faces=faces, uv0=uv0,
                    part=part, cut=cut, side=side, mirror=mirror, grid=grid, ring_u=ring_u,
                    col_phi=col_phi, cut_span=cut_span, eye_centres=eye_centres,
                    eyeball_ids=np.stack([left_ids, right_ids]), face_side=face_side)
    vertices = np.concatenate([mesh.head_points(neutral_openings(spec)), eye_v,
                               eye_v * np.array([-1.0, 1.0, 1.0])])
    return dataclasses.replace(mesh, vertices=vertices)
