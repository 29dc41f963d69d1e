"""The semantic target rig on the synthetic head: 122 named, localized, mirrored deformations."""

from __future__ import annotations

import numpy as np
import pytest

from flamejax.semantic.controls import load_control_set
from flamejax.synthetic import make_flame, make_head
from flamejax.synthetic.fields import FLIP_X
from flamejax.synthetic.head import KNOT, PART_HEAD
from flamejax.synthetic.rigging import jaw_weight
from flamejax.synthetic.target_rig import CONTROLS, make_target_rig, target_rig_vertices

# The 122 MetaHuman raw controls (face-calibration's controls_simple.txt order), kept here so the
# test does not depend on the control-set package.
NAMES = """browDownL browDownR browLateralL browLateralR browRaiseInL browRaiseInR browRaiseOuterL
browRaiseOuterR eyeBlinkL eyeBlinkR eyeWidenL eyeWidenR eyeSquintInnerL eyeSquintInnerR eyeCheekRaiseL
eyeCheekRaiseR eyeFaceScrunchL eyeFaceScrunchR eyeLowerLidUpL eyeLowerLidUpR eyeLowerLidDownL
eyeLowerLidDownR noseWrinkleL noseWrinkleR noseNostrilDepressL noseNostrilDepressR noseNostrilDilateL
noseNostrilDilateR noseNostrilCompressL noseNostrilCompressR noseNasolabialDeepenL noseNasolabialDeepenR
mouthCheekSuckL mouthCheekSuckR mouthCheekBlowL mouthCheekBlowR mouthLipsBlowL mouthLipsBlowR mouthL
mouthR mouthUp mouthDown mouthUpperLipRaiseL mouthUpperLipRaiseR mouthLowerLipDepressL
mouthLowerLipDepressR mouthCornerPullL mouthCornerPullR mouthStretchL mouthStretchR mouthCornerDepressL
mouthCornerDepressR mouthPressUL mouthPressUR mouthPressDL mouthPressDR mouthLipsPurseUL mouthLipsPurseUR
mouthLipsPurseDL mouthLipsPurseDR mouthLipsTowardsUL mouthLipsTowardsUR mouthLipsTowardsDL
mouthLipsTowardsDR mouthFunnelUL mouthFunnelUR mouthFunnelDL mouthFunnelDR mouthLipsTogetherUL
mouthLipsTogetherUR mouthLipsTogetherDL mouthLipsTogetherDR mouthUpperLipBiteL mouthUpperLipBiteR
mouthLowerLipBiteL mouthLowerLipBiteR mouthLipsTightenUL mouthLipsTightenUR mouthLipsTightenDL
mouthLipsTightenDR mouthLipsPressL mouthLipsPressR mouthSharpCornerPullL mouthSharpCornerPullR
mouthCornerSharpenUL mouthCornerSharpenUR mouthCornerSharpenDL mouthCornerSharpenDR mouthCornerRounderUL
mouthCornerRounderUR mouthCornerRounderDL mouthCornerRounderDR mouthUpperLipTowardsTeethL
mouthUpperLipTowardsTeethR mouthLowerLipTowardsTeethL mouthLowerLipTowardsTeethR mouthUpperLipShiftL
mouthUpperLipShiftR mouthLowerLipShiftL mouthLowerLipShiftR mouthCornerUpL mouthCornerUpR
mouthCornerDownL mouthCornerDownR mouthCornerWideL mouthCornerWideR mouthCornerNarrowL
mouthCornerNarrowR jawOpen jawLeft jawRight jawForward jawBack jawClenchL jawClenchR jawChinRaiseDL
jawChinRaiseDR jawChinRaiseUL jawChinRaiseUR jawChinCompressL jawChinCompressR jawOpenExtreme""".split()

# Controls used by some Simon-Says expression (the other 70 are tweakers).
PRIMARY = {n for n in NAMES if any(n.startswith(p) for p in (
    "browDown", "browRaiseIn", "browRaiseOuter", "eyeWiden", "eyeBlink", "noseWrinkle",
    "noseNasolabialDeepen", "mouthCheekBlow", "mouthLipsBlow", "mouthUpperLipRaise",
    "mouthLowerLipDepress", "mouthCornerPull", "mouthStretch", "mouthCornerDepress", "mouthPress",
    "mouthLipsPurse", "mouthLipsTowards", "mouthFunnel", "mouthUpperLipBite", "mouthLowerLipBite"))}
PRIMARY |= {"jawOpen", "jawOpenExtreme", "jawLeft", "jawRight"}

# Similarity thresholds (cosine of the symmetric, all-quadrant deltas).
CLOSE = 0.7                 # funnel ~ purse ~ towards
GRIMACE_FUNNEL = (0.3, 0.8)  # teeth grimace partly resembles funnel
IDX = {n: k for k, n in enumerate(NAMES)}


@pytest.fixture(scope="module")
def mesh():
    return make_head(0, size="small")


@pytest.fixture(scope="module")
def rig(mesh):
    return make_target_rig(mesh, NAMES, np.random.default_rng(0))


def _c(**values):
    c = np.zeros(len(NAMES))
    for k, v in values.items():
        c[IDX[k]] = v
    return c


def _sym(rig, base):
    return sum(rig.deltas[IDX[base + q]] for q in ("UL", "UR", "DL", "DR")).ravel()


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_all_122_controls(rig):
    assert len(NAMES) == 122 and len(set(NAMES)) == 122 and set(CONTROLS) == set(NAMES)
    assert len(PRIMARY) == 52
    assert rig.names == tuple(NAMES)
    assert rig.deltas.shape == (122, len(make_head(0, size="small").vertices), 3)
    assert rig.jaw.shape == (122, 3)


def test_finite_nonzero_and_plausible_sizes(mesh, rig):
    assert np.all(np.isfinite(rig.deltas)) and np.all(np.isfinite(rig.jaw))
    peak = np.linalg.norm(rig.deltas, axis=-1).max(axis=1)
    for k, n in enumerate(NAMES):
        assert peak[k] > 5e-4 or np.abs(rig.jaw[k]).max() > 0.05, n
        assert peak[k] < 0.015, n
        # nothing moves the eyeballs (the lids move over them)
        assert np.all(rig.deltas[k][mesh.part != PART_HEAD] == 0.0), n
    tweak = [peak[IDX[n]] for n in NAMES if n not in PRIMARY and peak[IDX[n]] > 0]
    prim = [peak[IDX[n]] for n in PRIMARY if peak[IDX[n]] > 0]
    assert max(tweak) < 0.0055 and np.median(tweak) < 0.6 * np.median(prim)   # tweakers are subtle
    assert 0.005 < peak[IDX["browRaiseInL"]] < 0.009
    assert 0.008 < peak[IDX["mouthCheekBlowL"]] < 0.013


def _support(mesh, region):
    """Where a region's controls may move the head (anatomical bands from the knots)."""
    v = mesh.vertices
    k = mesh.spec.knots
    y_eye, y_tip, y_mouth, y_chin = (mesh.eye_centres[0, 1], k[KNOT["nose_tip"], 0],
                                     k[KNOT["mouth"], 0], k[KNOT["chin"], 0])
    front = np.cos(np.nan_to_num(mesh.uv0[:, 1])) > 0.25
    y, ax = v[:, 1], np.abs(v[:, 0])
    box = dict(brow=(y > y_eye - 0.005) & (y < y_eye + 0.065),
               eye=(y > y_eye - 0.05) & (y < y_eye + 0.045),
               nose=(y > y_mouth) & (y < y_eye + 0.02) & (ax < 0.045),
               cheek=(y > y_chin - 0.01) & (y < y_eye + 0.01),
               mouth=(y > y_chin - 0.025) & (y < y_tip + 0.002),
               chin=(y > y_chin - 0.03) & (y < y_mouth),
               jaw=(y < y_tip) | (jaw_weight(mesh) > 0))[region]
    return box & (front | (region == "jaw"))


def test_localized_in_their_region(mesh, rig):
    """Each control moves the head where its control-set region is."""
    cs = load_control_set("metahuman")
    regions = [cs.regions[cs.index(n)] for n in NAMES]
    for k, n in enumerate(NAMES):
        e = np.sum(rig.deltas[k] ** 2, axis=-1)
        if e.sum() == 0:
            continue
        outside = e[~_support(mesh, regions[k])].sum() / e.sum()
        assert outside < 0.05, (n, regions[k], outside)


def test_mirror_pairs_exact(mesh, rig):
    pairs = 0
    for k, n in enumerate(NAMES):
        m = rig.mirror[k]
        if m == k:
            # centred controls are symmetric themselves
            np.testing.assert_allclose(rig.deltas[k][mesh.mirror] * FLIP_X, rig.deltas[k], atol=1e-12)
            np.testing.assert_allclose(rig.jaw[k] * [1, -1, -1], rig.jaw[k], atol=0)
            continue
        pairs += 1
        assert NAMES[m] != n and rig.mirror[m] == k
        np.testing.assert_array_equal(rig.deltas[m], rig.deltas[k][mesh.mirror] * FLIP_X)
        np.testing.assert_array_equal(rig.jaw[m], rig.jaw[k] * [1, -1, -1])
        # and the left control lives mostly on the left
        if n.endswith(("L", "UL", "DL")) and n not in ("mouthL",):
            e = np.sum(rig.deltas[k] ** 2, -1)
            if e.sum():
                assert e[mesh.vertices[:, 0] > -1e-9].sum() / e.sum() > 0.8, n
    assert pairs == 116   # 58 pairs; mouthUp/Down, jawOpen/Forward/Back/OpenExtreme centred


def test_jaw_controls_rotate_the_jaw(rig):
    assert rig.jaw[IDX["jawOpen"], 0] > 0.25 and np.allclose(rig.jaw[IDX["jawOpen"], 1:], 0)
    assert rig.jaw[IDX["jawLeft"], 1] > 0.05 and rig.jaw[IDX["jawRight"], 1] < -0.05
    assert np.allclose(rig.jaw[IDX["jawForward"]], 0) and np.abs(rig.deltas[IDX["jawForward"]][:, 2]).max() > 0.003
    non_jaw = [IDX[n] for n in NAMES if n not in ("jawOpen", "jawLeft", "jawRight", "jawOpenExtreme")]
    assert np.all(rig.jaw[non_jaw] == 0)


def _lip_gap(mesh, v):
    """Vertical distance between the two copies of the lip line at the midline."""
    mid = np.flatnonzero((mesh.cut == 1) & (np.abs(mesh.vertices[:, 0]) < 1e-6))
    up = mid[mesh.side[mid] == 1][0]
    lo = mid[mesh.side[mid] == -1][0]
    return v[up, 1] - v[lo, 1]


def test_jaw_open_and_extreme(mesh, rig):
    rest = target_rig_vertices(mesh, rig, _c())
    np.testing.assert_allclose(rest, mesh.vertices, atol=1e-6)
    gap_open = _lip_gap(mesh, target_rig_vertices(mesh, rig, _c(jawOpen=1)))
    gap_both = _lip_gap(mesh, target_rig_vertices(mesh, rig, _c(jawOpen=1, jawOpenExtreme=1)))
    alone = target_rig_vertices(mesh, rig, _c(jawOpenExtreme=1))
    gap_alone = _lip_gap(mesh, alone)
    assert gap_open > 0.015                       # the mouth opens by centimetres
    assert gap_both > gap_open + 0.003            # extreme adds opening on top of jawOpen
    assert gap_alone < 0.5 * gap_open             # and alone it is small
    d_open = np.linalg.norm(target_rig_vertices(mesh, rig, _c(jawOpen=1)) - rest, axis=-1).max()
    assert np.linalg.norm(alone - rest, axis=-1).max() < 0.5 * d_open
    # jawLeft moves the chin toward +x (the subject's left)
    chin = np.argmin(np.abs(mesh.vertices[:, 1] - mesh.spec.knots[KNOT["chin"], 0])
                     + np.abs(mesh.vertices[:, 0]) - mesh.vertices[:, 2])
    assert target_rig_vertices(mesh, rig, _c(jawLeft=1))[chin, 0] > rest[chin, 0] + 0.003


def test_funnel_purse_towards_close_grimace_partly(rig):
    f, p, t = _sym(rig, "mouthFunnel"), _sym(rig, "mouthLipsPurse"), _sym(rig, "mouthLipsTowards")
    g = sum(rig.deltas[IDX[n]] for n in ("mouthUpperLipRaiseL", "mouthUpperLipRaiseR",
                                         "mouthLowerLipDepressL", "mouthLowerLipDepressR")).ravel()
    assert min(_cos(f, p), _cos(f, t), _cos(p, t)) > CLOSE
    assert GRIMACE_FUNNEL[0] < _cos(g, f) < GRIMACE_FUNNEL[1]
    assert _cos(g, f) > _cos(g, p) + 0.2          # it is the funnel's opening that grimace shares
    # per quadrant too
    for q in ("UL", "DL"):
        a, b = rig.deltas[IDX["mouthFunnel" + q]].ravel(), rig.deltas[IDX["mouthLipsPurse" + q]].ravel()
        assert _cos(a, b) > CLOSE - 0.1


def test_deterministic_per_seed(mesh, rig):
    again = make_target_rig(mesh, NAMES, np.random.default_rng(0))
    np.testing.assert_array_equal(again.deltas, rig.deltas)
    np.testing.assert_array_equal(again.jaw, rig.jaw)
    other = make_target_rig(mesh, NAMES, np.random.default_rng(1))
    assert not np.allclose(other.deltas, rig.deltas)
    sub = make_target_rig(mesh, ["jawOpen", "browDownR"], np.random.default_rng(0))
    assert sub.deltas.shape[0] == 2 and sub.mirror.tolist() == [0, 1]
    with pytest.raises(ValueError):
        make_target_rig(mesh, ["notAControl"], np.random.default_rng(0))


def test_on_a_flame_model_matches_the_mesh():
    model = make_flame(0, size="tiny", n_shape=4, n_expr=4)
    tiny = make_head(0, size="tiny")
    rig = make_target_rig(tiny, NAMES, np.random.default_rng(0))
    c = _c(jawOpen=0.5, mouthCornerPullL=1, browRaiseInR=1)
    a = target_rig_vertices(model, rig, c)
    b = target_rig_vertices(tiny, rig, c)
    # same template/weights; the model adds its (small) jaw pose correctives
    assert np.abs(a - b).max() < 0.003
    d = rig.deltas[IDX["mouthCornerPullL"]] + rig.deltas[IDX["browRaiseInR"]]
    brow = np.argmax(np.linalg.norm(rig.deltas[IDX["browRaiseInR"]], axis=-1))
    np.testing.assert_allclose(b[brow], tiny.vertices[brow] + d[brow], atol=1e-5)


def test_mirror_twins_are_the_control_sets(rig):
    """The rig's structural mirror pairs (one field is the other's reflection) are exactly the
    control set's declared mirrors."""
    cs = load_control_set("metahuman")
    index = [cs.index(n) for n in NAMES]
    np.testing.assert_array_equal([index[m] for m in rig.mirror], cs.mirror_indices[index])
