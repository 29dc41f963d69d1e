"""The semantic *target* rig on the synthetic head: one named deformation per raw control.

    mesh = flamejax.synthetic.make_head(seed, size="small")
    rig = make_target_rig(mesh, names, np.random.default_rng(seed))   # names: 122 MetaHuman controls
    verts = target_rig_vertices(mesh, rig, controls)                   # (V, 3) for controls (K,)

Each control k at full activation is a vertex offset field ``deltas[k]`` (V, 3, metres) on the
neutral head plus a jaw rotation ``jaw[k]`` (Euler XYZ radians, R = Rx Ry Rz, x > 0 opens the
mouth). The rig is linear: deltas and jaw angles are summed over the controls, the summed
deltas are added to the template and the jaw rotation is applied by FLAME's skinning, so the
output is FLAME(expression deltas + jaw rotation) -- what a fitted semantic basis reproduces.

How it is written: :data:`TABLE`, one row per *base* control (the left or upper-left one of a
mirror pair, or a centred control), says which deformation it is (``kind``), its face region,
its magnitude, and where/how (parameters). The right-hand twin of every left control is derived
from the left one through the mesh's mirror map (x -> -x), so pairs are mirrored exactly; jaw
Euler angles mirror as (x, -y, -z). Kinds:

- ``atom``: a named localized deformation of :func:`flamejax.synthetic.bases.expression_atoms`
  (brows, lids, cheeks, nose, lip corners, ...), possibly a weighted sum of several;
- ``local``: a Gaussian window on the face (centre, sigma, displacement), optionally limited to
  the upper or lower lip;
- ``lips``: a lip-quadrant field (upper/lower lip x left half), built from a shared vocabulary of
  lip motions (protrude, pinch toward the midline, toward/away from the lip line, open the mouth
  cut, roll in, shift). Funnel, purse and towards share the protrusion and the pinch, which is
  what makes them close to each other; funnel's opening is what teeth grimace shares with it;
- ``jaw``: a jaw rotation and/or a jaw-weighted translation-like offset.

Centres are placed by the head's anatomical knots (eye centre, brow, nose tip, mouth, chin) and
spec (mouth half-width), so the rig follows each head's proportions. Per seed, every base
control's magnitude is jittered by a few per cent (the same for both sides of a pair).
Tweakers (controls no Simon-Says expression uses) are real but subtle (a few millimetres).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.synthetic import rigging
from flamejax.synthetic.bases import expression_atoms
from flamejax.synthetic.fields import FLIP_X, smoothstep, window
from flamejax.flame import FLAME_PARENTS, FlameModel, FlameParams, flame_forward
from flamejax.semantic.rig import euler_to_axis_angle
from flamejax.synthetic.head import (CUT_MOUTH, KNOT, PART_HEAD, SIDE_LOWER, SIDE_UPPER, HeadMesh,
                                     neutral_openings, surface)

EULER_MIRROR = np.array([1.0, -1.0, -1.0])   # jaw Euler angles under x -> -x


class TargetRig(NamedTuple):
    """names (K,); deltas (K, V, 3) metres at full activation; jaw (K, 3) Euler XYZ radians;
    mirror (K,) index of each control's mirror twin (itself for centred controls). Each control's
    face region is the control set's (flamejax.semantic.controls), not the rig's."""

    names: tuple
    deltas: np.ndarray
    jaw: np.ndarray
    mirror: np.ndarray


# ---------------------------------------------------------------------------------------------
# The table. One row per base control: kind, magnitude (a scale on the parameters'
# displacements), parameters. Positions: "x" in metres from the midline (left side, +x), "y" as
# (landmark, offset in metres) with landmarks eye / brow / tip (nose tip) / mouth / chin.
# Lip quadrant rows name the UL (upper) or DL (lower) control; L/R rows the L control.

_L, _UL, _DL, _C = "L", "UL", "DL", ""
TABLE: dict[str, tuple] = {
    # --- brows
    "browDown":            ("atom", 1.0, {"brow_lower": 1.0}),
    "browLateral":         ("local", 1.0, dict(x=0.020, y=("eye", 0.022), sigma=(0.011, 0.009), disp=(-0.0035, -0.0012, 0.0008))),
    "browRaiseIn":         ("atom", 0.9, {"brow_raise_inner": 1.0}),
    "browRaiseOuter":      ("atom", 0.95, {"brow_raise_outer": 1.0}),
    # --- eyes
    "eyeBlink":            ("atom", 1.0, {"blink": 1.0}),
    "eyeWiden":            ("atom", 1.0, {"lid_wide": 1.0, "brow_raise_outer": 0.12, "brow_raise_inner": 0.12}),
    "eyeSquintInner":      ("local", 1.0, dict(x=-0.007, y=("eye", -0.005), sigma=(0.006, 0.004), disp=(0.0003, 0.0016, 0.0004), rel_eye=True)),
    "eyeCheekRaise":       ("atom", 1.0, {"cheek_raise": 1.0, "lower_lid_raise": 0.35}),
    "eyeFaceScrunch":      ("atom", 1.0, {"lid_tighten": 1.0, "brow_lower": 0.35, "cheek_raise": 0.4, "lower_lid_raise": 0.3}),
    "eyeLowerLidUp":       ("atom", 0.8, {"lower_lid_raise": 1.0}),
    "eyeLowerLidDown":     ("lid", 1.0, dict(down=0.0018)),
    # --- nose
    "noseWrinkle":         ("atom", 1.0, {"nose_wrinkle": 1.0, "nasolabial": 0.3}),
    "noseNostrilDepress":  ("local", 1.0, dict(x=0.015, y=("tip", -0.008), sigma=(0.006, 0.005), disp=(0.0, -0.0018, -0.0005))),
    "noseNostrilDilate":   ("atom", 0.8, {"nostril_flare": 1.0}),
    "noseNostrilCompress": ("atom", -0.5, {"nostril_flare": 1.0}),
    "noseNasolabialDeepen": ("atom", 1.4, {"nasolabial": 1.0}),
    # --- cheeks
    "mouthCheekSuck":      ("local", 1.0, dict(x=0.046, y=("mouth", 0.004), sigma=(0.014, 0.015), disp=(-0.004, 0.0, -0.0015))),
    "mouthCheekBlow":      ("atom", 1.5, {"cheek_puff": 1.0}),
    "mouthLipsBlow":       ("lips", 1.0, dict(both=True, protrude=0.0035, bulge=0.003)),
    # --- the whole mouth
    "mouthL":              ("atom", 0.7, {"mouth_shift": 1.0}),
    "mouthUp":             ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.022, 0.013), disp=(0.0, 0.0035, 0.0), centred=True)),
    "mouthDown":           ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.022, 0.013), disp=(0.0, -0.0035, 0.0), centred=True)),
    # --- lips and corners: primary
    "mouthUpperLipRaise":  ("atom", 1.0, {"upper_lip_raise": 1.0}),
    "mouthLowerLipDepress": ("atom", 1.0, {"lower_lip_depress": 1.0}),
    "mouthCornerPull":     ("atom", 1.0, {"lip_corner_pull": 1.0, "cheek_raise": 0.25}),
    "mouthStretch":        ("atom", 1.0, {"lip_stretch": 1.0}),
    "mouthCornerDepress":  ("atom", 1.0, {"lip_corner_depress": 1.0}),
    "mouthPressUL":        ("lips", 1.0, dict(to_line=0.45, protrude=-0.0018)),
    "mouthPressDL":        ("lips", 1.0, dict(to_line=0.45, protrude=-0.0018)),
    "mouthLipsPurseUL":    ("lips", 1.0, dict(protrude=0.0060, pinch=0.22, to_line=0.12)),
    "mouthLipsPurseDL":    ("lips", 1.0, dict(protrude=0.0060, pinch=0.22, to_line=0.12)),
    "mouthLipsTowardsUL":  ("lips", 1.0, dict(protrude=0.0070, pinch=0.12, to_line=0.18)),
    "mouthLipsTowardsDL":  ("lips", 1.0, dict(protrude=0.0070, pinch=0.12, to_line=0.18)),
    "mouthFunnelUL":       ("lips", 1.0, dict(protrude=0.0055, pinch=0.16, open=0.0022)),
    "mouthFunnelDL":       ("lips", 1.0, dict(protrude=0.0055, pinch=0.16, open=0.0022)),
    "mouthUpperLipBite":   ("lips", 1.0, dict(upper=True, roll_in=0.0045, lift=-0.0015)),
    "mouthLowerLipBite":   ("lips", 1.0, dict(upper=False, roll_in=0.0050, lift=0.0025)),
    # --- lips and corners: tweakers (subtle)
    "mouthLipsTogetherUL": ("lips", 1.0, dict(lift=-0.0030, protrude=0.0006)),
    "mouthLipsTogetherDL": ("lips", 1.0, dict(lift=0.0035, protrude=0.0006)),
    "mouthLipsTightenUL":  ("lips", 1.0, dict(to_line=0.12, roll_in=0.0015, pinch=0.05)),
    "mouthLipsTightenDL":  ("lips", 1.0, dict(to_line=0.12, roll_in=0.0015, pinch=0.05)),
    "mouthLipsPress":      ("local", 1.0, dict(x=0.017, y=("mouth", 0.0), sigma=(0.008, 0.006), disp=(0.0, 0.0, -0.0015), to_line=0.2)),
    "mouthSharpCornerPull": ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.007, 0.006), disp=(0.0025, 0.0035, -0.001), at_corner=True)),
    "mouthCornerSharpenUL": ("local", 1.0, dict(x=-0.004, y=("mouth", 0.0015), sigma=(0.006, 0.004), disp=(0.0005, -0.0015, 0.0), at_corner=True, lip="upper")),
    "mouthCornerSharpenDL": ("local", 1.0, dict(x=-0.004, y=("mouth", -0.0015), sigma=(0.006, 0.004), disp=(0.0005, 0.0015, 0.0), at_corner=True, lip="lower")),
    "mouthCornerRounderUL": ("local", 1.0, dict(x=-0.004, y=("mouth", 0.0015), sigma=(0.006, 0.004), disp=(-0.0005, 0.0015, 0.0008), at_corner=True, lip="upper")),
    "mouthCornerRounderDL": ("local", 1.0, dict(x=-0.004, y=("mouth", -0.0015), sigma=(0.006, 0.004), disp=(-0.0005, -0.0015, 0.0008), at_corner=True, lip="lower")),
    "mouthUpperLipTowardsTeeth": ("lips", 1.0, dict(upper=True, roll_in=0.0028)),
    "mouthLowerLipTowardsTeeth": ("lips", 1.0, dict(upper=False, roll_in=0.0028)),
    "mouthUpperLipShift":  ("lips", 1.0, dict(upper=True, shift=0.0028)),
    "mouthLowerLipShift":  ("lips", 1.0, dict(upper=False, shift=0.0028)),
    "mouthCornerUp":       ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.008, 0.007), disp=(0.0, 0.0025, 0.0), at_corner=True)),
    "mouthCornerDown":     ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.008, 0.007), disp=(0.0, -0.0025, 0.0), at_corner=True)),
    "mouthCornerWide":     ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.008, 0.007), disp=(0.003, 0.0, -0.0008), at_corner=True)),
    "mouthCornerNarrow":   ("local", 1.0, dict(x=0.0, y=("mouth", 0.0), sigma=(0.008, 0.007), disp=(-0.003, 0.0, 0.0008), at_corner=True)),
    # --- jaw
    "jawOpen":             ("jaw", 1.0, dict(euler=(0.30, 0.0, 0.0))),
    "jawLeft":             ("jaw", 1.0, dict(euler=(0.0, 0.10, 0.0))),
    "jawForward":          ("jaw", 1.0, dict(shift=(0.0, 0.0, 0.005))),
    "jawBack":             ("jaw", 1.0, dict(shift=(0.0, 0.0, -0.0035))),
    "jawClench":           ("local", 1.0, dict(phi=1.05, y=("mouth", 0.006), sigma=(0.012, 0.014), normal=0.0025)),
    "jawChinRaiseD":       ("atom", 0.8, {"chin_raise": 1.0, "_half": True}),
    "jawChinRaiseU":       ("local", 1.0, dict(x=0.0, y=("mouth", -0.009), sigma=(0.016, 0.006), disp=(0.0, 0.002, 0.0015), lip="lower", half=True)),
    "jawChinCompress":     ("local", 1.0, dict(x=0.0, y=("chin", 0.0), sigma=(0.016, 0.012), disp=(0.0, 0.001, -0.0028), half=True)),
    # Only meaningful on top of jawOpen: a little more opening, the lips stretched thin and the
    # corners drawn in, the chin lengthened.
    "jawOpenExtreme":      ("jaw", 1.0, dict(euler=(0.08, 0.0, 0.0), stretch=0.003)),
}
# Controls whose rows are "Left" (twin derived by mirroring) vs centred. Quadrant rows UL/DL.
_CENTRED = {"mouthUp", "mouthDown", "jawOpen", "jawForward", "jawBack", "jawOpenExtreme"}
_SPECIAL_PAIRS = {"mouthL": "mouthR", "jawLeft": "jawRight"}


def _expand_names() -> dict[str, tuple[str, bool]]:
    """control name -> (table row, mirrored?) for every control the table defines."""
    out = {}
    for row in TABLE:
        if row in _CENTRED:
            out[row] = (row, False)
        elif row in _SPECIAL_PAIRS:
            out[row] = (row, False)
            out[_SPECIAL_PAIRS[row]] = (row, True)
        elif row.endswith("UL") or row.endswith("DL"):
            out[row] = (row, False)
            out[row[:-1] + "R"] = (row, True)
        else:
            out[row + "L"] = (row, False)
            out[row + "R"] = (row, True)
    return out


CONTROLS = _expand_names()   # all 122 MetaHuman raw controls (no prefix)


# ---------------------------------------------------------------------------------------------
# Building the fields


class _Ctx:
    """Landmarks, masks and atoms of one head, shared by the field builders."""

    def __init__(self, mesh: HeadMesh):
        spec = mesh.spec
        self.mesh = mesh
        self.p = mesh.vertices
        self.head = (mesh.part == PART_HEAD).astype(float)
        k = spec.knots
        ce = mesh.eye_centres[0]
        self.eye_x = ce[0]
        self.y = dict(eye=ce[1], brow=k[KNOT["brow"], 0], tip=k[KNOT["nose_tip"], 0],
                      mouth=k[KNOT["mouth"], 0], chin=k[KNOT["chin"], 0])
        self.mw = spec.mouth_half_width
        self.z_front = 0.09
        weights = rigging.skinning_weights(mesh)
        joints = rigging.joint_regressor(mesh) @ mesh.vertices
        self.jaw_w = weights[:, rigging.JAW]
        self.jaw_joint = joints[rigging.JAW]
        atoms, names = expression_atoms(mesh, weights, joints, np.random.default_rng(0), n_random=0)
        self.atoms = dict(zip(names, atoms))
        self.upper, self.lower = self._soft_lip_sides()
        self.left = smoothstep(self.p[:, 0], -0.004, 0.004)      # left half; left + mirror = 1
        self.base = mesh.head_points(neutral_openings(spec))

    def _soft_lip_sides(self):
        """(V,) upper and lower lip-side weights summing to 1 on the head: a hard step across
        the mouth cut (its two copies), softening along u past the mouth corners."""
        mesh = self.mesh
        u, phi = np.nan_to_num(mesh.uv0[:, 0]), np.abs(np.nan_to_num(mesh.uv0[:, 1]))
        u_m, _, phi_mc = mesh.cut_span[CUT_MOUTH]
        soft = 0.001 + 0.005 * smoothstep(phi, 0.8 * phi_mc, 1.6 * phi_mc)
        lower = smoothstep(u - u_m, -soft, soft)
        on = mesh.cut == CUT_MOUTH
        lower = np.where(on & (mesh.side == SIDE_LOWER), 1.0, np.where(on & (mesh.side == SIDE_UPPER), 0.0, lower))
        return (1.0 - lower) * self.head, lower * self.head

    def opened(self, **changes) -> np.ndarray:
        f = np.zeros_like(self.p)
        o = neutral_openings(self.mesh.spec)._replace(**changes)
        f[: self.mesh.n_head] = self.mesh.head_points(o) - self.base
        return f

    def lips_window(self, sy: float = 0.011) -> np.ndarray:
        return window(self.p, [0.0, self.y["mouth"], self.z_front], [0.022, sy, 0.03])


def _atom(ctx: _Ctx, mix: dict) -> np.ndarray:
    """A weighted sum of left (or centred) atoms; "_half": keep only the left half of a centred one."""
    f = sum(w * ctx.atoms[f"{name}_L" if f"{name}_L" in ctx.atoms else name]
            for name, w in mix.items() if not name.startswith("_"))
    return f * ctx.left[:, None] if mix.get("_half") else f


def _local(ctx: _Ctx, prm: dict) -> np.ndarray:
    p = ctx.p
    y = ctx.y[prm["y"][0]] + prm["y"][1]
    sx, sy = prm["sigma"]
    if "phi" in prm:   # on the side of the face: a surface point and its outward direction
        mesh = ctx.mesh
        u = mesh.ku[KNOT["mouth"]] - 0.004
        c = surface(mesh.spec, np.array([u]), np.array([prm["phi"]]), mesh.ku)[0]
        c[1] = y
        n = np.array([np.sin(prm["phi"]), 0.0, np.cos(prm["phi"])])
        w = window(p, c, [sx, sy, sx])
        return w[:, None] * n * prm["normal"]
    x = prm["x"]
    if prm.get("rel_eye"):
        x += ctx.eye_x
    if prm.get("at_corner"):
        x += ctx.mw
    w = window(p, [x, y, ctx.z_front], [sx, sy, 0.03])
    if prm.get("lip") == "upper":
        w = w * ctx.upper
    elif prm.get("lip") == "lower":
        w = w * ctx.lower
    if prm.get("half"):
        w = w * ctx.left
    f = w[:, None] * np.asarray(prm["disp"], float)
    if "to_line" in prm:
        f[:, 1] -= w * prm["to_line"] * (p[:, 1] - ctx.y["mouth"])
    return f


def _lips(ctx: _Ctx, prm: dict, row: str) -> np.ndarray:
    """A lip field on one quadrant (row ..UL / ..DL), one lip's left half (upper=...), or both
    lips' left half (both=True)."""
    p = ctx.p
    dy = p[:, 1] - ctx.y["mouth"]
    if prm.get("both"):
        side = ctx.upper + ctx.lower
        upper_sign = np.where(ctx.upper >= ctx.lower, 1.0, -1.0)
    else:
        is_upper = prm["upper"] if "upper" in prm else row.endswith("UL")
        side = ctx.upper if is_upper else ctx.lower
        upper_sign = 1.0 if is_upper else -1.0
    w = ctx.lips_window() * side * ctx.left
    f = np.zeros_like(p)
    f[:, 2] += prm.get("protrude", 0.0)
    f[:, 0] -= prm.get("pinch", 0.0) * p[:, 0]                  # toward the midline
    f[:, 1] -= prm.get("to_line", 0.0) * dy                     # toward the lip line
    f[:, 2] -= prm.get("roll_in", 0.0)
    f[:, 1] += prm.get("lift", 0.0)
    f[:, 0] += prm.get("shift", 0.0)
    f *= w[:, None]
    if prm.get("open"):                                         # open the cut, this lip's half
        o = prm["open"]
        opening = ctx.opened(mouth_up=o, mouth_down=o)
        f += opening * (side * ctx.left)[:, None]
        # and flare the vermilion away from the line (upper up, lower down)
        f[:, 1] += w * upper_sign * 0.0012
    if prm.get("bulge"):                                        # air behind the lips: skin around
        wb = window(p, [0.0, ctx.y["mouth"], ctx.z_front], [0.024, 0.018, 0.03]) * ctx.left * ctx.head
        f[:, 2] += wb * prm["bulge"]
        f[:, 1] += wb * prm["bulge"] * 0.4 * np.tanh(dy / 0.006)
    return f


def _jaw(ctx: _Ctx, prm: dict) -> tuple[np.ndarray, np.ndarray]:
    f = np.zeros_like(ctx.p)
    if "shift" in prm:
        f += ctx.jaw_w[:, None] * np.asarray(prm["shift"], float)
    if prm.get("stretch"):
        s = prm["stretch"]
        p = ctx.p
        lips = ctx.lips_window(0.014) * ctx.head
        f[:, 0] -= lips * 0.12 * p[:, 0] * s / 0.003                # corners drawn in
        f[:, 2] -= lips * 0.5 * s                                   # lips thinned onto the teeth
        f[:, 1] -= ctx.jaw_w * s                                    # chin lengthened
        cheeks = (window(p, [ctx.mw + 0.02, ctx.y["mouth"], ctx.z_front - 0.01], [0.012, 0.015, 0.03])
                  + window(p, [-(ctx.mw + 0.02), ctx.y["mouth"], ctx.z_front - 0.01], [0.012, 0.015, 0.03]))
        f[:, 0] -= cheeks * np.sign(p[:, 0]) * 0.6 * s              # cheeks hollow
    return f, np.asarray(prm.get("euler", (0.0, 0.0, 0.0)), float)


def _row_field(ctx: _Ctx, row: str) -> tuple[np.ndarray, np.ndarray]:
    kind, scale, prm = TABLE[row]
    jaw = np.zeros(3)
    if kind == "atom":
        f = _atom(ctx, prm)
    elif kind == "local":
        f = _local(ctx, prm)
    elif kind == "lips":
        f = _lips(ctx, prm, row)
    elif kind == "lid":
        f = ctx.opened(left_down=neutral_openings(ctx.mesh.spec).left_down + prm["down"])
    elif kind == "jaw":
        f, jaw = _jaw(ctx, prm)
    else:
        raise ValueError(f"unknown kind {kind!r} in row {row}")
    return scale * f * ctx.head[:, None], scale * jaw


def make_target_rig(mesh: HeadMesh, names: Sequence[str], rng: np.random.Generator,
                    jitter: float = 0.06) -> TargetRig:
    """The target rig for the given control names (each must be one of :data:`CONTROLS`), in
    that order. ``rng`` draws each table row's magnitude factor exp(N(0, jitter)) (shared by a
    mirror pair), so different seeds give slightly different rigs; same rng state -> identical
    arrays."""
    names = tuple(names)
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise ValueError(f"controls without a target deformation: {unknown}")
    ctx = _Ctx(mesh)
    gains = dict(zip(TABLE, np.exp(rng.normal(0.0, jitter, size=len(TABLE)))))
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    deltas = np.zeros((len(names),) + mesh.vertices.shape)
    jaw = np.zeros((len(names), 3))
    for k, name in enumerate(names):
        row, mirrored = CONTROLS[name]
        if row not in cache:
            f, j = _row_field(ctx, row)
            if row in _CENTRED:   # exactly symmetric (the mesh is, up to rounding)
                f = 0.5 * (f + f[mesh.mirror] * FLIP_X)
            cache[row] = (f * gains[row], j * gains[row])
        f, j = cache[row]
        if mirrored:
            f, j = f[mesh.mirror] * FLIP_X, j * EULER_MIRROR
        deltas[k], jaw[k] = f, j
    index = {n: k for k, n in enumerate(names)}
    mirror = np.arange(len(names))
    for k, name in enumerate(names):
        row, mirrored = CONTROLS[name]
        twins = [n for n, (r, m) in CONTROLS.items() if r == row and n != name]
        if twins and twins[0] in index:
            mirror[k] = index[twins[0]]
    return TargetRig(names=names, deltas=deltas, jaw=jaw, mirror=mirror)


def rig_flame_model(model_or_mesh, rig: TargetRig):
    """A :class:`flamejax.FlameModel` whose expression basis is the rig's deltas (no identity
    components), on the given synthetic FlameModel (its template, weights, correctives) or on a
    bare :class:`HeadMesh` (its own weights and regressor, no pose correctives)."""
    if isinstance(model_or_mesh, HeadMesh):
        mesh = model_or_mesh
        v = mesh.vertices
        return FlameModel(v_template=jnp.asarray(v, jnp.float32),
                          shapedirs=jnp.asarray(rig.deltas, jnp.float32),
                          posedirs=jnp.zeros((36,) + v.shape, jnp.float32),
                          j_regressor=jnp.asarray(rigging.joint_regressor(mesh), jnp.float32),
                          weights=jnp.asarray(rigging.skinning_weights(mesh), jnp.float32),
                          faces=jnp.asarray(mesh.faces, jnp.int32), n_shape=0, parents=FLAME_PARENTS)
    model = model_or_mesh
    if model.n_vertices != rig.deltas.shape[1]:
        raise ValueError(f"the rig has {rig.deltas.shape[1]} vertices, the model {model.n_vertices}")
    return dataclasses.replace(model, shapedirs=jnp.asarray(rig.deltas, model.dtype), n_shape=0)


def rig_jaw_pose(rig: TargetRig, controls) -> jnp.ndarray:
    """(3,) axis-angle jaw pose for controls (K,): the Euler angles are summed linearly (as a
    semantic basis theta = B c does), then converted."""
    euler = jnp.asarray(controls, jnp.float32) @ jnp.asarray(rig.jaw, jnp.float32)
    return euler_to_axis_angle(euler, "xyz")


@jax.jit
def _rig_frames(model: FlameModel, controls, jaw_euler):
    def one(c, e):
        return flame_forward(model, FlameParams(expression=c, jaw_pose=euler_to_axis_angle(e, "xyz"))).vertices
    return jax.vmap(one)(controls, jaw_euler)


def target_rig_vertices(model_or_mesh, rig: TargetRig, controls) -> np.ndarray:
    """(V, 3) the rig's output for controls (K,), or (T, V, 3) for (T, K): template + sum_k c_k
    deltas_k, then the jaw rotation sum_k c_k jaw_k through FLAME's skinning (zero identity,
    other poses zero)."""
    model = rig_flame_model(model_or_mesh, rig)
    c = np.asarray(controls, np.float64)
    frames = np.atleast_2d(c)
    out = np.asarray(_rig_frames(model, jnp.asarray(frames, model.dtype), jnp.asarray(frames @ rig.jaw, model.dtype)))
    return out[0] if c.ndim == 1 else out
