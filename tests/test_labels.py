"""The Simon-Says labels file (flamejax.io.labels): written files read back exactly; every broken
rule raises a FlameFileError naming the file and the problem; YAML tags are never run; lost
frames are taken out of the holds."""

import os
import re
import warnings

import numpy as np
import pytest
import yaml

from flamejax.io import FlameFileError
from flamejax.io.labels import _key, labels_report, labels_text, mask_invalid, read_labels, write_labels
from flamejax.semantic import load_control_set

CS = load_control_set("metahuman")
NAMES = CS.simon_says.expression_names
# A take numbered from 1000 in steps of 2 (a tracker run on every other video frame).
IDS = np.arange(1000, 1400, 2)


def some_holds():
    hold = np.full(len(IDS), -1, np.int32)
    hold[3:15] = 0                                          # Neutral
    hold[20:30] = NAMES.index("Smile (corner pull)")        # parentheses in the name
    hold[40:44] = NAMES.index("Nose Scrunch/Wrinkle")       # a slash
    hold[46:50] = NAMES.index("Nose Scrunch/Wrinkle")       # two ranges: [[a, b], [c, d]]
    hold[60:61] = NAMES.index("Jaw Open")                   # a single frame
    hold[-5:] = NAMES.index("Jaw Right")                    # up to the last frame
    return hold


def write_text(tmp_path, text, name="labels.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def read_quietly(path, cs=CS, ids=IDS, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_labels(path, cs, ids, **kw)


def refused(path, match, cs=CS, ids=IDS):
    """The FlameFileError reading ``path``: it names the file, and the problem matches."""
    with pytest.raises(FlameFileError) as info:
        read_quietly(path, cs, ids)
    assert info.value.path == os.fspath(path) and str(info.value).startswith(os.fspath(path))
    assert re.search(match, info.value.problem), info.value.problem
    return info.value


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_exact_and_readable(tmp_path):
    hold = some_holds()
    path = tmp_path / "performer00.yaml"
    write_labels(path, hold, IDS, CS, comment="Simon-Says of performer00\nchecked by hand")
    text = path.read_text()
    assert text.startswith("# Simon-Says of performer00\n# checked by hand\n")
    assert "control_set: metahuman\n" in text
    assert "  Neutral: [1006, 1028]\n" in text                       # frame ids, not indices
    assert "  Nose Scrunch/Wrinkle: [[1080, 1086], [1092, 1098]]\n" in text
    assert "  Smile (corner pull): [1040, 1058]\n" in text            # plain, as a person writes it
    assert "  Jaw Open: [1120, 1120]\n" in text
    assert "# not labelled: Brows Down," in text
    with pytest.warns(UserWarning, match=r"15 expression\(s\) not labelled.*Brows Down"):
        back = read_labels(path, CS, IDS)
    assert back.dtype == np.int32 and np.array_equal(back, hold)
    # No temporary file left next to it; writing again replaces it.
    write_labels(path, np.full(len(IDS), -1, np.int32), IDS, CS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["performer00.yaml"]
    assert "holds: {}" in path.read_text()
    assert (read_quietly(path) == -1).all()


def test_every_expression_and_a_hand_written_file(tmp_path):
    hold = np.repeat(np.arange(len(NAMES), dtype=np.int32), 10)
    ids = np.arange(len(hold)) + 5
    path = tmp_path / "all.yaml"
    write_labels(path, hold, ids, CS.simon_says, control_set="metahuman")
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # nothing missing: no warning
        assert np.array_equal(read_labels(path, CS, ids), hold)
    hand = write_text(tmp_path, "# by hand\ncontrol_set: metahuman\nholds:\n"
                                "  Brows Down: [10, 14]   # a comment\n"
                                "  'Jaw Left':\n    - [20, 21]\n    - [23, 24]\n")
    got = read_quietly(hand, ids=np.arange(30))
    assert np.array_equal(np.flatnonzero(got == 1), np.arange(10, 15))
    assert np.array_equal(np.flatnonzero(got == NAMES.index("Jaw Left")), [20, 21, 23, 24])


def test_names_that_need_quotes_are_quoted(tmp_path):
    cs = load_control_set("arkit")   # same expression names, another control set
    text = labels_text(np.zeros(3, np.int32), np.arange(3), cs)
    assert "control_set: arkit" in text
    # a name YAML would read as something else (a bool, a number, a mapping, a comment) is quoted
    for name in ("yes", "1", "a: b", "#x", "[x]", "Smile (corner pull)"):
        assert yaml.safe_load(f"{_key(name)}: 0") == {name: 0}
    assert _key("yes") == '"yes"' and _key("Smile (corner pull)") == "Smile (corner pull)"


def test_labels_report():
    report = labels_report(some_holds(), CS, IDS)
    assert "Nose Scrunch/Wrinkle" in report and "1080-1086, 1092-1098" in report
    assert re.search(r"Neutral\s+12\s+1006-1028", report)
    assert "not labelled (15): Brows Down" in report


# ---------------------------------------------------------------------------------------------
# Broken files


def test_missing_file_and_a_folder(tmp_path):
    refused(tmp_path / "nope.yaml", "no such file")
    refused(tmp_path, "is a directory")


def test_not_yaml_and_not_a_mapping(tmp_path):
    refused(write_text(tmp_path, "control_set: metahuman\nholds: {Neutral: [1, 2\n"), "not valid YAML")
    refused(write_text(tmp_path, "- Neutral\n- [1, 2]\n"), "expected a mapping")
    refused(write_text(tmp_path, "control_set: metahuman\nholds: [1, 2]\n"), "'holds' must map")


def test_hostile_yaml_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    text = (f"control_set: metahuman\nholds:\n  Neutral: !!python/object/apply:os.system "
            f"['touch {marker}']\n")
    refused(write_text(tmp_path, text), "not valid YAML.*python/object/apply")
    refused(write_text(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n", "top.yaml"),
            "not valid YAML")
    assert not marker.exists()


def test_keys_control_set_and_names(tmp_path):
    err = refused(write_text(tmp_path, "control_set: metahuman\nhold:\n  Neutral: [1000, 1002]\n"),
                  "unknown key 'hold'")
    assert "did you mean 'holds'" in err.problem
    refused(write_text(tmp_path, "holds:\n  Neutral: [1000, 1002]\n"), "'control_set'.*is required")
    refused(write_text(tmp_path, "control_set: arkit\nholds: {}\n"),
            "labels are for control set 'arkit', but are read for 'metahuman'")
    # with a SimonSays the name comes from control_set=
    path = write_text(tmp_path, "control_set: arkit\nholds: {}\n", "arkit.yaml")
    with pytest.raises(FlameFileError, match="read for 'metahuman'"):
        read_quietly(path, CS.simon_says, control_set="metahuman")
    with pytest.raises(ValueError, match="control_set='arkit' but the control set given is 'metahuman'"):
        read_quietly(path, CS, control_set="arkit")
    err = refused(write_text(tmp_path, "control_set: metahuman\nholds:\n  Brow Down: [1000, 1002]\n"),
                  "unknown expression 'Brow Down'")
    assert "did you mean 'Brows Down'?" in err.problem
    refused(write_text(tmp_path, "control_set: metahuman\nholds:\n  smile (corner pull): [1000, 1002]\n"),
            "did you mean 'Smile \\(corner pull\\)'")
    refused(write_text(tmp_path, "control_set: metahuman\nholds:\n  Neutral: [1000, 1002]\n"
                                 "  Neutral: [1010, 1012]\n"), "given twice: 'Neutral'")


@pytest.mark.parametrize("value, problem", [
    ("[1000]", "expected \\[first, last\\]"),
    ("[1000, 1002, 1004]", "expected \\[first, last\\]"),
    ("[1000.0, 1002]", "expected \\[first, last\\]"),
    ("[true, 1002]", "expected \\[first, last\\]"),
    ("1000", "expected \\[first, last\\]"),
    ("[[1000, 1002], 1004]", "expected \\[first, last\\]"),
    ("[1010, 1002]", "Neutral \\[1010, 1002\\]: first frame id is after the last"),
    ("[1000, 1401]", "Neutral \\[1000, 1401\\]: frame id 1401 is not a frame of the take \\(frame ids 1000..1398"),
    ("[1001, 1010]", "frame id 1001 is not a frame of the take"),      # the take has even ids only
    ("[[1000, 1010], [1010, 1020]]", "Neutral \\[1010, 1020\\] overlaps Neutral \\[1000, 1010\\] \\(frame id 1010\\)"),
])
def test_bad_ranges(tmp_path, value, problem):
    refused(write_text(tmp_path, f"control_set: metahuman\nholds:\n  Neutral: {value}\n"), problem)


def test_two_expressions_overlapping(tmp_path):
    refused(write_text(tmp_path, "control_set: metahuman\nholds:\n  Neutral: [1000, 1020]\n"
                                 "  Jaw Open: [1016, 1030]\n"),
            "Jaw Open \\[1016, 1030\\] overlaps Neutral \\[1000, 1020\\] \\(frame id 1016\\)")


def test_writer_checks_its_inputs(tmp_path):
    hold = some_holds()
    with pytest.raises(ValueError, match="pass the ControlSet, or control_set"):
        write_labels(tmp_path / "x.yaml", hold, IDS, CS.simon_says)
    with pytest.raises(ValueError, match="hold values must be -1 or an expression index"):
        write_labels(tmp_path / "x.yaml", np.full(len(IDS), 20), IDS, CS)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_labels(tmp_path / "x.yaml", hold, IDS[::-1], CS)
    with pytest.raises(ValueError, match="hold must be integers of shape"):
        write_labels(tmp_path / "x.yaml", hold[:-1], IDS, CS)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Lost frames


def test_mask_invalid_drops_lost_frames_and_says_which():
    hold = some_holds()
    valid = np.ones(len(IDS), bool)
    valid[[4, 5, 60, 100]] = False        # two Neutral frames, the only Jaw Open frame, an unlabelled one
    with pytest.warns(UserWarning, match=r"3 lost frame\(s\) removed.*Neutral 2, Jaw Open 1.*no frame left for: Jaw Open"):
        masked = mask_invalid(hold, valid, CS)
    assert (masked.hold[~valid] == -1).all() and np.array_equal(masked.hold[valid], hold[valid])
    assert masked.dropped[0] == 2 and masked.dropped[NAMES.index("Jaw Open")] == 1 and masked.dropped.sum() == 3
    assert masked.emptied == ("Jaw Open",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = mask_invalid(hold, np.ones(len(IDS), bool), CS.simon_says)
    assert np.array_equal(clean.hold, hold) and not clean.dropped.any() and clean.emptied == ()
