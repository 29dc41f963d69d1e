"""Control sets as data: the shipped MetaHuman and ARKit sets, their Simon-Says sets, validation."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import yaml

from flamejax.semantic.controls import (
    REGIONS,
    ControlSetError,
    control_set_from_dict,
    load_control_set,
)

# Apple's ARFaceAnchor.BlendShapeLocation names, written out independently of the data file.
ARKIT_52 = set("""
browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft
cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft
eyeLookInRight eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight eyeSquintLeft
eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose
mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight mouthFunnel mouthLeft
mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight mouthPucker mouthRight
mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft mouthSmileRight
mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft
noseSneerRight tongueOut""".split())


@pytest.fixture(scope="module", params=["metahuman", "arkit"])
def cset(request):
    return load_control_set(request.param)


@pytest.fixture(scope="module")
def metahuman():
    return load_control_set("metahuman")


def test_metahuman_counts(metahuman):
    ss = metahuman.simon_says
    assert metahuman.name == "metahuman"
    assert metahuman.size == len(metahuman) == 122
    assert len(ss.expressions) == 20 and ss.targets.shape == (20, 122)
    assert len(ss.combinations) == 3 and ss.combination_targets.shape == (3, 122)
    # The paper's count: 70 of the 122 controls are tweakers (no Simon-Says expression uses them).
    assert len(metahuman.tweakers) == 70 and len(metahuman.primary) == 52
    assert metahuman.tweaker_mask.sum() == 70
    assert ss.expression_names[0] == "Neutral" and ss.expression_names[-1] == "Jaw Right"
    assert metahuman.names[0] == "browDownL" and metahuman.names[-1] == "jawOpenExtreme"


def test_metahuman_targets_match_known_expressions(metahuman):
    ss = metahuman.simon_says
    targets = ss.targets
    assert not targets[0].any()  # Neutral
    jaw_open = targets[ss.expression_names.index("Jaw Open")]
    assert jaw_open[metahuman.index("jawOpen")] == 1 and jaw_open.sum() == 1
    b_pop = ss.combination_targets[2]
    assert b_pop[metahuman.index("mouthStretchL")] == 0.5
    assert b_pop[metahuman.index("jawOpen")] == 0.25
    # Controls only the combinations use stay tweakers.
    assert "mouthLipsTogetherUL" in metahuman.tweakers


def test_arkit_is_the_standard_52():
    cset = load_control_set("arkit")
    assert cset.size == 52 and set(cset.names) == ARKIT_52
    ss = cset.simon_says
    assert len(ss.expressions) == 20 and len(ss.combinations) == 3
    # Same expressions in the same order as MetaHuman's, so masks/i.npy still applies.
    assert ss.expression_names == load_control_set("metahuman").simon_says.expression_names
    assert "tongueOut" in cset.tweakers and "jawOpen" in cset.primary
    assert len(cset.primary) + len(cset.tweakers) == 52


def test_every_expression_control_exists_and_is_primary(cset):
    ss = cset.simon_says
    for expression in ss.expressions + ss.combinations:
        for name, value in expression.controls:
            assert name in cset.names and 0 < value <= 1
    for expression in ss.expressions:
        for name, _ in expression.controls:
            assert name in cset.primary
    # Every expression but Neutral asks for something.
    assert (ss.targets[1:] > 0).any(axis=1).all()


def test_regions_are_known_and_used(cset):
    assert set(cset.regions) <= set(REGIONS)
    for region in ("brow", "eye", "nose", "cheek", "mouth", "jaw"):
        idx = cset.region_indices(region)
        assert idx.size > 0 and all(cset.regions[i] == region for i in idx)
    assert cset.regions[cset.index("jawOpen")] == "jaw"


def _side(name):
    """'L'/'R' for a left/right control name, None for a central one."""
    m = re.search(r"(Left|Right|L|R)$", name)
    return None if m is None else m.group(1)[0]


def test_mirror_is_an_involution_swapping_sides(cset):
    mirror = cset.mirror_indices
    assert mirror.shape == (cset.size,)
    np.testing.assert_array_equal(mirror[mirror], np.arange(cset.size))
    assert sorted(mirror) == list(range(cset.size))  # a permutation
    for i, j in enumerate(mirror):
        a, b = cset.names[i], cset.names[j]
        if i == j:
            assert _side(a) is None, f"{a} has a side but mirrors to itself"
            continue
        assert {_side(a), _side(b)} == {"L", "R"}
        stem = re.sub(r"(Left|Right|L|R)$", "", a)
        assert re.sub(r"(Left|Right|L|R)$", "", b) == stem
        assert cset.regions[i] == cset.regions[j]


def test_metahuman_specific_mirrors(metahuman):
    m = metahuman
    pairs = [("browDownL", "browDownR"), ("mouthPressUL", "mouthPressUR"), ("mouthL", "mouthR"),
             ("jawLeft", "jawRight"), ("jawChinRaiseDL", "jawChinRaiseDR")]
    for a, b in pairs:
        assert m.mirror[m.index(a)] == m.index(b) and m.mirror[m.index(b)] == m.index(a)
    for central in ("jawOpen", "mouthUp", "mouthDown", "jawForward", "jawOpenExtreme"):
        assert m.mirror[m.index(central)] == m.index(central)


def test_mirroring_maps_expressions_to_themselves(cset):
    # The Simon-Says expressions are symmetric except the jaw shifts, which swap.
    ss = cset.simon_says
    mirrored = cset.mirrored(ss.targets)
    names = ss.expression_names
    for e, name in enumerate(names):
        if name == "Jaw Left":
            np.testing.assert_array_equal(mirrored[e], ss.targets[names.index("Jaw Right")])
        elif name != "Jaw Right":
            np.testing.assert_array_equal(mirrored[e], ss.targets[e])


def test_vector_round_trip(cset):
    values = {cset.names[0]: 0.25, cset.names[-1]: 1.0, "jawOpen": 0.5}
    c = cset.vector(values)
    assert c.shape == (cset.size,) and c.dtype == np.float32
    assert cset.as_dict(c) == values
    assert cset.as_dict(cset.vector({})) == {}
    for expression, row in zip(cset.simon_says.expressions, cset.simon_says.targets):
        np.testing.assert_array_equal(cset.vector(expression.as_dict()), row)
    np.testing.assert_array_equal(cset.indices(["jawOpen"]), [cset.index("jawOpen")])


def test_unknown_name_errors(metahuman):
    with pytest.raises(KeyError, match="jawOpen"):
        metahuman.vector({"jawOpn": 1.0})  # the hint names the close match
    with pytest.raises(ValueError, match=r"\(122,\)"):
        metahuman.as_dict(np.zeros(5))
    with pytest.raises(KeyError, match="region"):
        metahuman.region_indices("ear")


def _raw(name="metahuman"):
    here = os.path.dirname(__file__)
    path = os.path.join(here, "..", "flamejax", "semantic", "data", f"{name}.yaml")
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_load_from_path(tmp_path):
    path = tmp_path / "mine.yaml"
    data = _raw()
    data["name"] = "mine"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = load_control_set(path)
    assert loaded.name == "mine" and loaded.names == load_control_set("metahuman").names
    assert loaded.simon_says == load_control_set("metahuman").simon_says
    with pytest.raises(ControlSetError, match="no such control-set file"):
        load_control_set(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("controls: [unclosed")
    with pytest.raises(ControlSetError, match="bad.yaml: not valid YAML"):
        load_control_set(bad)


def test_validation_unknown_control_in_expression():
    data = _raw()
    data["expressions"][3]["controls"]["eyeWidenLL"] = 1
    with pytest.raises(ControlSetError,
                       match=r"src: expression 'Eyes Wide': unknown control 'eyeWidenLL'"):
        control_set_from_dict(data, "src")
    data = _raw()
    data["combinations"][0]["controls"]["nope"] = 1
    with pytest.raises(ControlSetError, match="combination 'Jaw Open Lips Together'.*'nope'"):
        control_set_from_dict(data, "src")


def test_validation_duplicates_regions_values():
    data = _raw()
    data["controls"].append(dict(data["controls"][0]))
    with pytest.raises(ControlSetError, match="duplicate control names: browDownL"):
        control_set_from_dict(data, "src")
    data = _raw()
    data["controls"][0]["region"] = "ear"
    with pytest.raises(ControlSetError, match="browDownL.*region 'ear'"):
        control_set_from_dict(data, "src")
    data = _raw()
    data["expressions"][1]["controls"]["browDownL"] = "high"
    with pytest.raises(ControlSetError, match="finite number"):
        control_set_from_dict(data, "src")
    data = _raw()
    data["expressions"].append(dict(data["expressions"][1]))
    with pytest.raises(ControlSetError, match="duplicate expression name 'Brows Down'"):
        control_set_from_dict(data, "src")


def test_validation_bad_mirror():
    data = _raw()
    data["controls"][0]["mirror"] = "browDownX"
    with pytest.raises(ControlSetError, match="mirror of 'browDownL'.*'browDownX'"):
        control_set_from_dict(data, "src")
    data = _raw()
    data["controls"][0]["mirror"] = "browLateralR"  # browLateralR still mirrors to browLateralL
    with pytest.raises(ControlSetError, match="bad mirror: browDownL -> browLateralR"):
        control_set_from_dict(data, "src")
    data = _raw()
    del data["controls"][1]["mirror"]  # browDownR now its own mirror, browDownL still -> R
    with pytest.raises(ControlSetError, match="bad mirror"):
        control_set_from_dict(data, "src")


def test_hydra_conf_selects_by_name():
    conf = os.path.join(os.path.dirname(__file__), "..", "conf", "controls")
    for name in ("metahuman", "arkit"):
        with open(os.path.join(conf, f"{name}.yaml"), encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
        assert load_control_set(cfg["name"]).name == name
