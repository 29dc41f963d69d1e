"""Landmark embedding of the synthetic head: 51 static + 79 x 17 yaw-dependent contour (iBUG-68
semantics) and 105 MediaPipe points, each a (face id, barycentric) pair on the template.

Targets are placed where a face annotator would put them: points on the eyelid margins and the
lip line are located on the faces of the correct side of the cut (so an upper-lid point moves
with the upper lid); points on the front of the face are found by a frontal ray cast (like
landmarks clicked on a frontal photo); the jaw contour lives on the surface's parameter grid
and, for each head-yaw bin, the far side slides onto the cheek's silhouette, as FLAME's dynamic
contour does.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from flamejax.landmarks import N_CONTOUR, N_YAW_BINS
from flamejax.synthetic.head import (CUT_LEFT_EYE, CUT_MOUTH, CUT_RIGHT_EYE, KNOT, PART_HEAD,
                                     SIDE_LOWER, SIDE_UPPER, HeadMesh, surface)

# The MediaPipe face-mesh index each of the 105 points stands for, in the order of FLAME's
# mediapipe_landmark_embedding.npz (left brow, right brow, left eye, right eye, nose, lips).
MEDIAPIPE_INDICES = np.array([
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336, 46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466, 7, 33, 133,
    144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246, 168, 6, 197, 195, 5, 4, 129,
    98, 97, 2, 326, 327, 358, 0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95,
    146, 178, 181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375,
    402, 405, 409, 415])

# Face classes a target may land on.
ANY, UPPER, LOWER = "any", "upper", "lower"


# ---------------------------------------------------------------------------------------------
# Locating points on the mesh


def _closest_on_triangles(p: np.ndarray, tri: np.ndarray):
    """Closest points of (L, K) triangles to (L,) points. p (L, 3), tri (L, K, 3, 3) ->
    squared distances (L, K) and barycentrics (L, K, 3)."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    q = p[:, None, :]
    ab, ac, aq = b - a, c - a, q - a
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (aq * ab).sum(-1), (aq * ac).sum(-1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1.0 - v - w, v, w], -1)
    inside = (bary >= 0.0).all(-1)
    best_b = np.where(inside[..., None], bary, 0.0)
    best_d = np.where(inside, (((bary[..., None] * tri).sum(-2) - q) ** 2).sum(-1), np.inf)
    # Outside: the nearest point is on an edge.
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        e0, e1 = tri[..., i, :], tri[..., j, :]
        e = e1 - e0
        t = np.clip(((q - e0) * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-30), 0.0, 1.0)
        d = (((e0 + t[..., None] * e) - q) ** 2).sum(-1)
        bb = np.zeros(bary.shape)
        bb[..., i], bb[..., j] = 1.0 - t, t
        better = ~inside & (d < best_d)
        best_d = np.where(better, d, best_d)
        best_b = np.where(better[..., None], bb, best_b)
    return best_d, best_b


def _face_classes(mesh: HeadMesh) -> dict[str, np.ndarray]:
    head = (mesh.part[mesh.faces] == PART_HEAD).all(1)
    return {ANY: head, UPPER: head & (mesh.face_side >= 0), LOWER: head & (mesh.face_side <= 0)}


def locate_nearest(mesh: HeadMesh, points: np.ndarray, allowed: np.ndarray, k: int = 24):
    """The closest surface point among allowed faces. points (L, 3), allowed (F,) bool ->
    face ids (L,) int, barycentrics (L, 3)."""
    ids = np.flatnonzero(allowed)
    tri = mesh.vertices[mesh.faces[ids]]
    tree = cKDTree(tri.mean(1))
    _, cand = tree.query(points, k=min(k, len(ids)))
    d, bary = _closest_on_triangles(points, tri[cand])
    best = np.argmin(d, axis=1)
    rows = np.arange(len(points))
    return ids[cand[rows, best]], bary[rows, best]


def locate_front(mesh: HeadMesh, xy: np.ndarray, allowed: np.ndarray):
    """Frontal ray cast: for each (x, y) the front-most allowed, front-facing face under it.
    xy (L, 2) -> face ids (L,), barycentrics (L, 3)."""
    v = mesh.vertices
    tri = v[mesh.faces]
    normal_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    ids = np.flatnonzero(allowed & (normal_z > 0))
    t2 = tri[ids][:, :, :2]
    a, b, c = t2[:, 0], t2[:, 1], t2[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    q = xy[:, None, :]
    l0 = ((b[:, 1] - c[:, 1]) * (q[..., 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (q[..., 1] - c[:, 1])) / den
    l1 = ((c[:, 1] - a[:, 1]) * (q[..., 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (q[..., 1] - c[:, 1])) / den
    bary = np.stack([l0, l1, 1.0 - l0 - l1], -1)                 # (L, F', 3)
    inside = (bary >= -1e-9).all(-1)
    depth = np.where(inside, (bary * tri[ids][None, :, :, 2]).sum(-1), -np.inf)
    best = np.argmax(depth, axis=1)
    if not np.isfinite(depth[np.arange(len(xy)), best]).all():
        raise ValueError("a frontal landmark target misses the face")
    b = np.clip(bary[np.arange(len(xy)), best], 0.0, None)
    return ids[best], b / b.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Anatomical targets


def cut_polyline(mesh: HeadMesh, cut_id: int, side: int) -> np.ndarray:
    """Vertex ids along one edge of a cut, corner to corner, by increasing phi (corners shared
    by both edges)."""
    row_u, phi_c, phi_hw = mesh.cut_span[cut_id]
    row = int(np.argmin(np.abs(mesh.ring_u - row_u)))
    ends = [mesh.grid[row, int(np.argmin(np.abs(mesh.col_phi - (phi_c + s * phi_hw))))] for s in (-1, 1)]
    inner = np.flatnonzero((mesh.cut == cut_id) & (mesh.side == side))
    inner = inner[np.argsort(mesh.uv0[inner, 1])]
    return np.concatenate([[ends[0]], inner, [ends[1]]])


def _along(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points at arc-length fractions t of a polyline (n, 3)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)]) / max(seg.sum(), 1e-12)
    return np.stack([np.interp(t, s, points[:, k]) for k in range(3)], -1)


class _Targets:
    """Collects named targets, then resolves them all to (face, bary) at once per locator."""

    def __init__(self, mesh: HeadMesh):
        self.mesh = mesh
        self.classes = _face_classes(mesh)
        self.items: dict[str, tuple] = {}

    def front(self, name, x, y, cls=ANY):
        self.items[name] = ("front", np.array([x, y]), cls)

    def near(self, name, p, cls=ANY):
        self.items[name] = ("near", np.asarray(p, float), cls)

    def resolve(self, names):
        out_f = np.zeros(len(names), np.int64)
        out_b = np.zeros((len(names), 3))
        for kind in ("front", "near"):
            for cls in (ANY, UPPER, LOWER):
                sel = [i for i, n in enumerate(names) if self.items[n][0] == kind and self.items[n][2] == cls]
                if not sel:
                    continue
                pts = np.stack([self.items[names[i]][1] for i in sel])
                f, b = (locate_front if kind == "front" else locate_nearest)(self.mesh, pts, self.classes[cls])
                out_f[sel], out_b[sel] = f, b
        return out_f, out_b


def _facial_targets(mesh: HeadMesh) -> _Targets:
    """Every static (iBUG 18..68) and MediaPipe target, by name."""
    spec, v = mesh.spec, mesh.vertices
    tg = _Targets(mesh)
    c = mesh.eye_centres[0]
    k = spec.knots
    y_tip, y_sn = k[KNOT["nose_tip"], 0], k[KNOT["subnasale"], 0]
    scale_x = c[0] / 0.0325

    # Brows: a centre line arching over each eye, highest two-thirds of the way out.
    brow_x = np.array([0.056, 0.047, 0.037, 0.027, 0.017]) * scale_x           # outer -> inner
    brow_y = c[1] + np.array([0.015, 0.021, 0.023, 0.022, 0.019])
    for s, side in ((-1, "R"), (1, "L")):
        for i in range(5):
            tg.front(f"brow{side}{i}", s * brow_x[i], brow_y[i])
            tg.front(f"brow_up{side}{i}", s * brow_x[i], brow_y[i] + 0.004)
            tg.front(f"brow_lo{side}{i}", s * brow_x[i], brow_y[i] - 0.0035)

    # Eyes: corners are the cut's end vertices; lid points sit on the lid margins.
    for cid, side in ((CUT_RIGHT_EYE, "R"), (CUT_LEFT_EYE, "L")):
        up = v[cut_polyline(mesh, cid, SIDE_UPPER)]
        lo = v[cut_polyline(mesh, cid, SIDE_LOWER)]
        if side == "R":                     # order both from the outer corner to the inner one
            up, lo = up[::-1], lo[::-1]
        tg.near(f"eye{side}_outer", up[0])
        tg.near(f"eye{side}_inner", up[-1])
        for t in (1 / 8, 2 / 8, 1 / 3, 3 / 8, 4 / 8, 5 / 8, 2 / 3, 6 / 8, 7 / 8):
            tg.near(f"eye{side}_up{t:.3f}", _along(up, np.array([t]))[0], UPPER)
            tg.near(f"eye{side}_lo{t:.3f}", _along(lo, np.array([t]))[0], LOWER)

    # Nose: the dorsum at x = 0 from the nasion to the tip, then the nostrils and subnasale.
    mid = np.flatnonzero((mesh.part == PART_HEAD) & (np.abs(v[:, 0]) < 1e-9))
    y_pronasale = v[mid[np.argmax(v[mid, 2])], 1]
    for i, y in enumerate(np.linspace(c[1] - 0.001, y_pronasale, 4)):
        tg.front(f"dorsum{i}", 0.0, y)
    nw = spec.nose_width
    tg.front("subnasale", 0.0, y_sn + 0.0015)
    for s, side in ((-1, "R"), (1, "L")):
        tg.front(f"nostril{side}0", s * 0.36 * nw, y_sn + 0.0025)      # beside the columella
        tg.front(f"nostril{side}1", s * 0.70 * nw, y_sn + 0.0045)      # alar base
        tg.front(f"ala{side}", s * 0.95 * nw, y_tip - 0.003)
    for name, y in (("mp168", c[1] + 0.012), ("mp6", c[1] - 0.002), ("mp197", c[1] - 0.012),
                    ("mp195", 0.5 * (c[1] - 0.012 + y_pronasale)), ("mp5", y_pronasale + 0.008),
                    ("mp4", y_pronasale + 0.003)):
        tg.front(name, 0.0, y)

    # Lips: outer contour = vermilion border (front cast), inner contour = the lip line.
    seam = v[cut_polyline(mesh, CUT_MOUTH, SIDE_UPPER)]
    seam_lo = v[cut_polyline(mesh, CUT_MOUTH, SIDE_LOWER)]
    corner_x, y_line = seam[-1, 0], seam[len(seam) // 2, 1]
    tg.near("mouthR", seam[0])
    tg.near("mouthL", seam[-1])
    for f in np.round(np.linspace(-1, 1, 31), 4):
        if abs(f) >= 0.99:
            continue
        x = f * corner_x
        bow = 1.0 - 0.12 * np.exp(-(f / 0.12) ** 2)            # the dip of the Cupid's bow
        tg.front(f"lip_out_up{f:+.3f}", x, y_line + 0.0085 * bow * np.sqrt(1.0 - f * f), UPPER)
        tg.front(f"lip_out_lo{f:+.3f}", x, y_line - 0.0105 * np.sqrt(1.0 - f * f), LOWER)
        t = 0.5 * (f + 1.0)
        tg.near(f"lip_in_up{f:+.3f}", _along(seam, np.array([t]))[0], UPPER)
        tg.near(f"lip_in_lo{f:+.3f}", _along(seam_lo, np.array([t]))[0], LOWER)
    return tg


# iBUG 18..68 (1-based) by target name. Subject's right = image left = -x comes first.
def _ibug_static_names() -> list[str]:
    n = [f"browR{i}" for i in range(5)] + [f"browL{i}" for i in range(4, -1, -1)]
    n += [f"dorsum{i}" for i in range(4)]
    n += ["nostrilR1", "nostrilR0", "subnasale", "nostrilL0", "nostrilL1"]
    n += ["eyeR_outer", "eyeR_up0.333", "eyeR_up0.667", "eyeR_inner", "eyeR_lo0.667", "eyeR_lo0.333"]
    n += ["eyeL_inner", "eyeL_up0.667", "eyeL_up0.333", "eyeL_outer", "eyeL_lo0.333", "eyeL_lo0.667"]
    f = lambda x: f"{x:+.3f}"  # noqa: E731
    n += ["mouthR", "lip_out_up" + f(-0.667), "lip_out_up" + f(-0.333), "lip_out_up" + f(0.0),
          "lip_out_up" + f(0.333), "lip_out_up" + f(0.667), "mouthL",
          "lip_out_lo" + f(0.667), "lip_out_lo" + f(0.333), "lip_out_lo" + f(0.0),
          "lip_out_lo" + f(-0.333), "lip_out_lo" + f(-0.667)]
    n += ["lip_in_up" + f(-0.933), "lip_in_up" + f(-0.467), "lip_in_up" + f(0.0), "lip_in_up" + f(0.467),
          "lip_in_up" + f(0.933), "lip_in_lo" + f(0.467), "lip_in_lo" + f(0.0), "lip_in_lo" + f(-0.467)]
    return n


def _mediapipe_names() -> list[str]:
    f = lambda x: f"{x:+.3f}"  # noqa: E731
    name = {}
    for side, up, lo in (("L", (300, 293, 334, 296, 336), (276, 283, 282, 295, 285)),
                         ("R", (70, 63, 105, 66, 107), (46, 53, 52, 65, 55))):
        for i in range(5):                           # outer -> inner
            name[up[i]], name[lo[i]] = f"brow_up{side}{i}", f"brow_lo{side}{i}"
    for side, outer, inner, lower, upper in (
            ("L", 263, 362, (249, 390, 373, 374, 380, 381, 382), (466, 388, 387, 386, 385, 384, 398)),
            ("R", 33, 133, (7, 163, 144, 145, 153, 154, 155), (246, 161, 160, 159, 158, 157, 173))):
        name[outer], name[inner] = f"eye{side}_outer", f"eye{side}_inner"
        for i, t in enumerate((1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8)):   # outer -> inner
            name[lower[i]] = f"eye{side}_lo{t:.3f}"
            name[upper[i]] = f"eye{side}_up{t:.3f}"
    for idx in (168, 6, 197, 195, 5, 4):
        name[idx] = f"mp{idx}"
    name[2] = "subnasale"
    for side, (n0, n1, ala) in (("R", (97, 98, 129)), ("L", (326, 327, 358))):
        name[n0], name[n1], name[ala] = f"nostril{side}0", f"nostril{side}1", f"ala{side}"
    name[61], name[291] = "mouthR", "mouthL"
    xs = np.linspace(-1, 1, 11)[1:-1]                # 9 positions between the corners
    for ids, key in (((185, 40, 39, 37, 0, 267, 269, 270, 409), "lip_out_up"),
                     ((146, 91, 181, 84, 17, 314, 405, 321, 375), "lip_out_lo"),
                     ((191, 80, 81, 82, 13, 312, 311, 310, 415), "lip_in_up"),
                     ((95, 88, 178, 87, 14, 317, 402, 318, 324), "lip_in_lo")):
        for i, x in zip(ids, xs):
            name[i] = key + f(round(x * 15) / 15)
    name[78], name[308] = "lip_in_up" + f(-0.933), "lip_in_up" + f(0.933)
    return [name[int(i)] for i in MEDIAPIPE_INDICES]


# ---------------------------------------------------------------------------------------------
# The jaw contour


def _contour_curve(mesh: HeadMesh, n: int = 401):
    """The frontal jaw contour as surface parameters: (n,) u, (n,) phi from the subject's right
    ear (phi < 0) via the chin to the left ear."""
    ku = mesh.ku
    ctrl_phi = np.array([0.0, 0.5, 0.9, 1.15, 1.3, 1.42])
    ctrl_u = np.array([ku[KNOT["menton"]] - 0.004, ku[KNOT["menton"]] - 0.006, ku[KNOT["chin"]],
                       ku[KNOT["mouth"]], ku[KNOT["nose_tip"]], ku[KNOT["cheekbone"]]])
    phi = np.linspace(-ctrl_phi[-1], ctrl_phi[-1], n)
    return np.interp(np.abs(phi), ctrl_phi, ctrl_u), phi


def _normals(mesh: HeadMesh, u: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Outward unit normals of the neutral surface at (u, phi), by central differences."""
    h = 1e-5
    f = lambda uu, pp: surface(mesh.spec, uu, pp, mesh.ku)  # noqa: E731
    du = f(u + h, phi) - f(u - h, phi)
    dp = f(u, phi + h) - f(u, phi - h)
    n = np.cross(du, dp)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def bin_yaw_degrees(b: np.ndarray) -> np.ndarray:
    """Head rotation about +y (degrees; positive turns the face toward +x) of each yaw bin, the
    layout of :func:`flamejax.landmarks.yaw_bin`: bins 0..39 -> 0..-39, 40..78 -> 1..39."""
    b = np.asarray(b)
    return np.where(b <= 39, -b, b - 39).astype(float)


def contour_points(mesh: HeadMesh):
    """(79, 17, 3) contour target points per yaw bin on the neutral template.

    Bin 0 (frontal): 17 points evenly along the jaw line, ear to ear. For a yaw a, the side
    turning away from the camera can only show its silhouette: each of its points slides along
    its row of the surface toward the face until it sits on the silhouette for that view."""
    u_c, phi_c = _contour_curve(mesh)
    pts = surface(mesh.spec, u_c, phi_c, mesh.ku)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    s_k = np.linspace(0.0, s[-1], N_CONTOUR)
    u_k, phi_k = np.interp(s_k, s, u_c), np.interp(s_k, s, phi_c)
    phi_k[N_CONTOUR // 2] = 0.0
    # Normals along each point's row, for phi in [0, phi_max] on both sides.
    grid_phi = np.linspace(0.0, np.abs(phi_k).max(), 200)
    out = np.zeros((N_YAW_BINS, N_CONTOUR, 3))
    uu = np.repeat(u_k, len(grid_phi))
    for sign in (1.0, -1.0):
        nrm = _normals(mesh, uu, sign * np.tile(grid_phi, N_CONTOUR)).reshape(N_CONTOUR, -1, 3)
        for b in range(N_YAW_BINS):
            a = np.radians(bin_yaw_degrees(b))
            if a * sign <= 0:           # this side turns toward the camera: unchanged
                continue
            view = np.array([-np.sin(a), 0.0, np.cos(a)])          # toward the camera, head frame
            facing = nrm @ view                                     # (17, 200)
            hidden = (facing <= 0.0) & (grid_phi[None, :] > 0.2)
            first = np.where(hidden.any(1), np.argmax(hidden, axis=1), len(grid_phi) - 1)
            limit = grid_phi[first]
            pick = np.sign(phi_k) == sign
            phi_new = phi_k.copy()
            phi_new[pick] = sign * np.minimum(np.abs(phi_k[pick]), limit[pick])
            out[b] = surface(mesh.spec, u_k, phi_new, mesh.ku)
        for b in range(N_YAW_BINS):
            if not out[b].any():
                out[b] = surface(mesh.spec, u_k, phi_k, mesh.ku)
    return out


# ---------------------------------------------------------------------------------------------


def landmark_embedding(mesh: HeadMesh):
    """All landmark tables as NumPy arrays: static_faces (51,), static_bary (51, 3),
    dynamic_faces (79, 17), dynamic_bary (79, 17, 3), mediapipe_faces (105,), mediapipe_bary
    (105, 3)."""
    tg = _facial_targets(mesh)
    static_f, static_b = tg.resolve(_ibug_static_names())
    mp_f, mp_b = tg.resolve(_mediapipe_names())
    contour = contour_points(mesh)
    cf, cb = locate_nearest(mesh, contour.reshape(-1, 3), _face_classes(mesh)[ANY])
    return dict(static_faces=static_f, static_bary=static_b,
                dynamic_faces=cf.reshape(N_YAW_BINS, N_CONTOUR),
                dynamic_bary=cb.reshape(N_YAW_BINS, N_CONTOUR, 3),
                mediapipe_faces=mp_f, mediapipe_bary=mp_b)
