"""Per-frame controls exports (flamejax.io.animation): controls CSV / npz and Live Link Face CSV.

Written files are checked against independent references: CSVs parsed with Python's csv module,
the Live Link header against a list typed here, timecodes by hand, npz archives with
np.load(allow_pickle=False), rotations against scipy. Broken and hostile files must fail with a
FlameFileError naming the file (and never run anything: a marker file stays absent).
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format
from scipy.spatial.transform import Rotation

from flamejax.io import (
    FlameFileError,
    read_controls_csv,
    read_controls_npz,
    read_live_link_csv,
    write_controls_csv,
    write_controls_npz,
    write_live_link_csv,
)
from flamejax.io.animation import axis_angle_to_yaw_pitch_roll, format_timecode, live_link_controls
from flamejax.io.pickle_writer import NamedGlobalPickler
from flamejax.semantic.controls import load_control_set
from io_fixtures import Call

# Typed from a Live Link Face recording's header (the app's column order: note JawRight before
# JawLeft and MouthRight before MouthLeft), not from flamejax.
LIVE_LINK_HEADER = [
    "Timecode", "BlendShapeCount",
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft",
    "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft",
    "NoseSneerRight", "TongueOut",
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
]
NAMES = ("jawOpen", "mouthSmileLeft", "browInnerUp")


def arkit_names() -> list[str]:
    """The ARKit control set's names (flamejax/semantic/data/arkit.yaml, the rig's column order)."""
    return list(load_control_set("arkit").names)


def read_rows(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def take(rng, t=5, k=len(NAMES)):
    return rng.uniform(0, 1, (t, k)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# controls CSV


def test_controls_csv_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    values = take(rng)
    values[0, 0], values[4, 2] = 0.0, 1.0
    valid = np.array([True, False, True, True, True])
    frames = np.array([12, 13, 15, 16, 17])
    path = write_controls_csv(tmp_path / "c.csv", NAMES, values, frame_ids=frames, valid=valid, fps=30)
    rows = read_rows(path)
    assert rows[0] == ["frame", "time_s", "valid", *NAMES]
    assert [r[0] for r in rows[1:]] == ["12", "13", "15", "16", "17"]
    assert [r[2] for r in rows[1:]] == ["1", "0", "1", "1", "1"]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], frames / 30, rtol=0, atol=1e-12)
    assert rows[2][3:] == ["", "", ""]   # the masked frame carries no values
    for r, row in enumerate(rows[1:]):
        if valid[r]:   # the text reads back as the same float32
            np.testing.assert_array_equal(np.array([float(v) for v in row[3:]], np.float32), values[r])
    assert not list(tmp_path.glob(".*"))   # the temporary file was renamed away

    back = read_controls_csv(path)
    assert back.names == NAMES and back.fps == pytest.approx(30)
    np.testing.assert_array_equal(back.frames, frames)
    np.testing.assert_array_equal(back.valid, valid)
    assert np.isnan(back.controls[1]).all() and back.controls.dtype == np.float32
    np.testing.assert_array_equal(back.controls[valid], values[valid])
    assert back.extras == {}


def test_controls_csv_without_valid_or_fps_is_frame_then_controls(tmp_path):
    values = take(np.random.default_rng(1), t=3)
    path = write_controls_csv(tmp_path / "c.csv", NAMES, values)
    rows = read_rows(path)
    assert rows[0] == ["frame", *NAMES] and [r[0] for r in rows[1:]] == ["0", "1", "2"]
    back = read_controls_csv(path)
    assert back.fps is None and back.valid.all()
    np.testing.assert_array_equal(back.controls, values)


def test_controls_csv_writer_refuses_bad_arguments(tmp_path):
    values = take(np.random.default_rng(2), t=2)
    with pytest.raises(ValueError, match="frame 1, control 'browInnerUp'"):
        write_controls_csv(tmp_path / "c.csv", NAMES, values + np.array([0, 0, 2]) * [[0], [1]])
    bad = values.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="frame 0"):
        write_controls_csv(tmp_path / "c.csv", NAMES, bad)
    write_controls_csv(tmp_path / "c.csv", NAMES, bad, valid=[False, True])   # masked: fine
    with pytest.raises(ValueError, match="unique"):
        write_controls_csv(tmp_path / "c.csv", NAMES, values, frame_ids=[3, 3])
    with pytest.raises(ValueError, match="collide"):
        write_controls_csv(tmp_path / "c.csv", ("frame", "a", "b"), values)
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        write_controls_csv(tmp_path / "c.csv", NAMES[:2], values)


GOOD_CSV = "frame,valid,jawOpen,browInnerUp\n0,1,0.5,0.25\n1,0,,\n2,1,1,0\n"


@pytest.mark.parametrize("text, match", [
    ("", "empty file"),
    ("jawOpen,browInnerUp\n0.5,0.25\n", "no 'frame' column"),
    ("frame,jawOpen,jawOpen\n0,0.5,0.5\n", "names column 'jawOpen' twice"),
    ("frame\n0\n", "no control columns"),
    ("frame,valid,jawOpen,browInnerUp\n0,1,0.5,0.25\n1,1,0.5\n", "line 3 has 3 cells"),   # truncated row
    ("frame,jawOpen,browInnerUp\n0,0.5,0.25,0.1\n", "line 2 has 4 cells"),
    ("frame,jawOpen,browInnerUp\n0,0.5,abc\n", "line 2, column 'browInnerUp': 'abc' is not a number"),
    ("frame,jawOpen,browInnerUp\n0,nan,0.2\n", "line 2, column 'jawOpen': 'nan' is not a finite number"),
    ("frame,jawOpen,browInnerUp\n0,1.5,0.2\n", r"line 2, column 'jawOpen': 1.5 is outside"),
    ("frame,jawOpen,browInnerUp\n0,-0.01,0.2\n", "outside"),
    ("frame,jawOpen,browInnerUp\n0,,0.2\n", "line 2, column 'jawOpen': empty cell on a valid frame"),
    ("frame,jawOpen,browInnerUp\n1.5,0.1,0.2\n", "line 2, column 'frame': '1.5' is not an integer"),
    ("frame,jawOpen,browInnerUp\n4,0.1,0.2\n4,0.1,0.2\n", "line 3: frame 4 already appears on line 2"),
    ("frame,valid,jawOpen\n0,yes,0.1\n", "column 'valid': 'yes' is not 0 or 1"),
    ("frame,valid,jawOpen\n0,0,oops\n", "'oops' is not a number"),
    ("frame,time_s,jawOpen\n0,0,0.1\n3,0.1,0.1\n6,0.5,0.1\n", "time_s' of frame"),
])
def test_controls_csv_reader_refuses_broken_files(tmp_path, text, match):
    path = tmp_path / "broken.csv"
    path.write_text(text)
    with pytest.raises(FlameFileError, match=r"broken\.csv: " + ".*" + match):
        read_controls_csv(path)


def test_controls_csv_reader_tolerates_round_off_and_blank_lines(tmp_path):
    path = tmp_path / "ok.csv"   # saved by a spreadsheet: byte order mark, CRLF, a trailing blank line
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD_CSV.replace("0.5,0.25", "1.0000001,-1e-7") + "\n").replace("\n", "\r\n").encode())
    back = read_controls_csv(path)
    np.testing.assert_array_equal(back.frames, [0, 1, 2])
    np.testing.assert_array_equal(back.valid, [True, False, True])
    assert back.controls[0, 0] == np.float32(1.0000001)
    with pytest.raises(FlameFileError, match="nothere.csv: no such file"):
        read_controls_csv(tmp_path / "nothere.csv")


# ------------------------------------------------------------------------------------------
# controls npz


def test_controls_npz_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    values = take(rng, t=4).astype(np.float64)
    valid = np.array([True, True, False, True])
    residual = rng.uniform(0, 1, 4)
    path = write_controls_npz(tmp_path / "c.npz", NAMES, values, frame_ids=[5, 6, 7, 8], valid=valid, fps=60,
                              residual_mm=residual, iterations=np.array([3, 4, 5, 6]),
                              converged=np.array([True, True, False, True]))
    with np.load(path, allow_pickle=False) as z:   # plain arrays only
        assert set(z.files) == {"controls", "names", "frames", "valid", "fps", "residual_mm", "iterations",
                                "converged"}
        assert z["controls"].dtype == np.float32 and z["controls"].shape == (4, 3)
        assert z["names"].dtype.kind == "U" and list(z["names"]) == list(NAMES)
        assert z["frames"].dtype == np.int64 and z["valid"].dtype == np.bool_
        assert z["fps"].shape == () and float(z["fps"]) == 60.0
        assert np.isnan(z["controls"][2]).all()   # masked frames are NaN in the file
        np.testing.assert_array_equal(z["controls"][valid], values[valid].astype(np.float32))
    back = read_controls_npz(path)
    assert back.names == NAMES and back.fps == 60.0
    np.testing.assert_array_equal(back.frames, [5, 6, 7, 8])
    np.testing.assert_array_equal(back.valid, valid)
    np.testing.assert_array_equal(back.controls[valid], values[valid].astype(np.float32))
    assert set(back.extras) == {"residual_mm", "iterations", "converged"}
    np.testing.assert_array_equal(back.extras["residual_mm"], residual)


def _npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _ok_arrays(**override):
    arrays = dict(controls=np.full((2, 2), 0.5, np.float32), names=np.array(["a", "b"]),
                  frames=np.array([0, 1]), valid=np.array([True, False]))
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize("override, match", [
    (dict(controls=None), "missing 'controls'"),
    (dict(names=None, frames=None), "missing 'names', 'frames'"),
    (dict(controls=np.full((2, 2), 1, np.int32)), "'controls' is int32"),
    (dict(controls=np.full(2, 0.5)), r"'controls' is float64 \(2,\)"),
    (dict(names=np.array([1, 2])), "'names' is int64"),
    (dict(names=np.array(["a", "a"])), "duplicate control name"),
    (dict(frames=np.array([0.0, 1.0])), "'frames' is float64"),
    (dict(frames=np.array([3, 3])), "repeats a frame id"),
    (dict(valid=np.array([1, 0])), "'valid' is int64"),
    (dict(valid=np.array([True])), r"'valid' is bool \(1,\)"),
    (dict(fps=np.array([30.0])), "'fps' must be one positive number"),
    (dict(fps=np.array(-1.0)), "'fps' must be one positive number"),
    (dict(controls=np.array([[0.5, 2.0], [0.5, 0.5]], np.float32)), "frame 0, control 'b': 2.0"),
    (dict(controls=np.array([[np.nan, 0.5], [0.5, 0.5]], np.float32)), "frame 0, control 'a': nan"),
    (dict(residual_mm=np.zeros(3)), r"'residual_mm' is float64 \(3,\)"),
])
def test_controls_npz_reader_refuses_broken_files(tmp_path, override, match):
    path = _npz(tmp_path / "broken.npz", **_ok_arrays(**override))
    with pytest.raises(FlameFileError, match=r"broken\.npz: .*" + match):
        read_controls_npz(path)


def test_controls_npz_without_valid_reads_all_frames_valid_and_masks_invalid_rows(tmp_path):
    back = read_controls_npz(_npz(tmp_path / "old.npz", **_ok_arrays(valid=None)))
    assert back.valid.all() and not np.isnan(back.controls).any()
    # an invalid frame's values are masked whatever the file holds there
    back = read_controls_npz(_npz(tmp_path / "masked.npz", **_ok_arrays(
        controls=np.array([[0.5, 0.5], [7.0, np.inf]], np.float32))))
    assert np.isnan(back.controls[1]).all() and (back.controls[0] == 0.5).all()


def test_controls_npz_pickles_and_non_archives_are_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    evil = np.empty(1, dtype=object)
    evil[0] = Call("os", "system", f"touch {marker}")
    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, npy_format.header_data_from_array_1_0(evil))
    NamedGlobalPickler(member, protocol=3).dump(evil)   # np.save's layout, with a hostile payload
    plain = io.BytesIO()
    np.save(plain, np.zeros((1, 2), np.float32))
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as archive:
        archive.writestr("controls.npy", plain.getvalue())
        archive.writestr("names.npy", member.getvalue())
    with pytest.raises(FlameFileError, match=r"evil\.npz: 'names' is an object array \(a pickle\); refused"):
        read_controls_npz(tmp_path / "evil.npz")
    assert not marker.exists()

    (tmp_path / "text.npz").write_text("controls,names\n")
    with pytest.raises(FlameFileError, match=r"text\.npz: not an \.npz archive"):
        read_controls_npz(tmp_path / "text.npz")
    full = _npz(tmp_path / "cut.npz", **_ok_arrays())
    (tmp_path / "cut2.npz").write_bytes(full.read_bytes()[:200])   # truncated archive
    with pytest.raises(FlameFileError, match=r"cut2\.npz"):
        read_controls_npz(tmp_path / "cut2.npz")
    with pytest.raises(FlameFileError, match=r"nothere\.npz: no such file"):
        read_controls_npz(tmp_path / "nothere.npz")


# ------------------------------------------------------------------------------------------
# Live Link Face CSV


def test_arkit_names_map_onto_the_apps_52_columns():
    names = arkit_names()
    assert len(names) == 52
    assert sorted(n[0].upper() + n[1:] for n in names) == sorted(LIVE_LINK_HEADER[2:54])


def test_timecodes_by_hand():
    assert format_timecode(0, 30) == "00:00:00:00.000"
    assert format_timecode(29, 30) == "00:00:00:29.000"
    assert format_timecode(30, 30) == "00:00:01:00.000"
    assert format_timecode(61, 60) == "00:00:01:01.000"        # 61 = 1 s + 1 frame at 60 fps
    assert format_timecode(59, 60) == "00:00:00:59.000"
    assert format_timecode(60 * 3661 + 7, 60) == "01:01:01:07.000"
    assert format_timecode(30 * 90000, 30) == "25:00:00:00.000"   # hours keep counting
    assert format_timecode(2.5, 30) == "00:00:00:02.500"       # subframe fraction
    assert format_timecode(30, 29.97) == "00:00:01:00.030"     # 30 frames at 29.97 fps = 1.001 s
    with pytest.raises(ValueError):
        format_timecode(-1, 30)


def test_live_link_csv_layout(tmp_path):
    names = arkit_names()
    rng = np.random.default_rng(4)
    t = 4
    values = take(rng, t=t, k=52)
    order = rng.permutation(52)   # the rig's columns in any order: the writer reorders by name
    rig_names = [names[i] for i in order]
    head = rng.normal(0, 0.3, (t, 3))
    eyes = rng.normal(0, 0.2, (t, 6))
    path = write_live_link_csv(tmp_path / "take.csv", rig_names, values[:, order], fps=60,
                               start_timecode="10:20:30:58.000", head_rotation=head,
                               left_eye=eyes[:, :3], right_eye=eyes[:, 3:])
    rows = read_rows(path)
    assert rows[0] == LIVE_LINK_HEADER and len(rows) == 1 + t
    assert all(len(r) == 63 and r[1] == "61" for r in rows[1:])
    # 10:20:30 + 58 frames, then one frame per row at 60 fps: 58, 59, then the next second
    assert [r[0] for r in rows[1:]] == ["10:20:30:58.000", "10:20:30:59.000", "10:20:31:00.000", "10:20:31:01.000"]
    for r, row in enumerate(rows[1:]):
        by_name = dict(zip(LIVE_LINK_HEADER, row))
        for i, name in enumerate(names):
            assert np.float32(float(by_name[name[0].upper() + name[1:]])) == values[r, i]
        # yaw, pitch, roll: R = Ry(yaw) Rx(pitch) Rz(roll), scipy's intrinsic "YXZ"
        for prefix, aa in (("Head", head[r]), ("LeftEye", eyes[r, :3]), ("RightEye", eyes[r, 3:])):
            expected = Rotation.from_rotvec(aa).as_euler("YXZ")
            got = [float(by_name[f"{prefix}{axis}"]) for axis in ("Yaw", "Pitch", "Roll")]
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_live_link_timecodes_at_30_fps_follow_frame_ids(tmp_path):
    names = arkit_names()
    values = take(np.random.default_rng(5), t=3, k=52)
    path = write_live_link_csv(tmp_path / "take.csv", names, values, fps=30, frame_ids=[29, 30, 61])
    assert [r[0] for r in read_rows(path)[1:]] == ["00:00:00:29.000", "00:00:01:00.000", "00:00:02:01.000"]
    assert [r[-9:] for r in read_rows(path)[1:]] == [["0.0"] * 9] * 3   # no rotations given: zeros
    back = read_live_link_csv(path)
    assert back.fps == 30.0   # no frame field reaches 30: inferred 30, as Unreal's importer does
    np.testing.assert_array_equal(back.frames, [29, 30, 61])


def test_live_link_round_trip_and_held_invalid_frames(tmp_path):
    names = arkit_names()
    rng = np.random.default_rng(6)
    values = take(rng, t=6, k=52)
    values[[0, 3]] = np.nan   # lost frames
    head = rng.normal(0, 0.3, (6, 3))
    head[3] = np.nan
    valid = np.array([False, True, True, False, True, True])
    path = write_live_link_csv(tmp_path / "take.csv", names, values, fps=60, head_rotation=head, valid=valid,
                               frame_ids=np.arange(28, 34))
    rows = read_rows(path)
    assert all(c != "" for r in rows for c in r)   # Unreal's importer aborts on an empty cell
    assert rows[1][2:] == ["0.0"] * 61            # before any valid frame: the neutral face
    assert rows[4][1:] == rows[3][1:]              # frame 31 holds frame 30's values
    back = read_live_link_csv(path)
    assert back.fps == 60.0 and back.names == tuple(LIVE_LINK_HEADER[2:54])
    np.testing.assert_array_equal(back.frames, np.arange(28, 34))
    assert back.timecodes[2] == "00:00:00:30.000"
    np.testing.assert_array_equal(live_link_controls(back, names)[valid], values[valid])
    np.testing.assert_array_equal(back.values[3], back.values[2])
    np.testing.assert_allclose(back.head[valid], axis_angle_to_yaw_pitch_roll(head[valid]), atol=1e-6)
    np.testing.assert_array_equal(back.head[3], back.head[2])
    assert (back.left_eye == 0).all() and (back.right_eye == 0).all()


def test_live_link_needs_the_arkit_control_set(tmp_path):
    names = arkit_names()
    values = take(np.random.default_rng(7), t=2, k=52)
    with pytest.raises(ValueError, match="missing 2 ARKit controls: jawOpen, tongueOut"):
        write_live_link_csv(tmp_path / "x.csv", [n for n in names if n not in ("jawOpen", "tongueOut")],
                            values[:, :50])
    with pytest.raises(ValueError, match="controls ARKit does not have: Nose Scrunch"):
        write_live_link_csv(tmp_path / "x.csv", names[:51] + ["Nose Scrunch"], values)
    with pytest.raises(ValueError, match="start_timecode"):
        write_live_link_csv(tmp_path / "x.csv", names, values, fps=30, start_timecode="00:00:00:45.000")
    assert not (tmp_path / "x.csv").exists()


def _live_link_text(rows) -> str:
    return "\n".join(",".join(r) for r in [LIVE_LINK_HEADER, *rows]) + "\n"


def _row(timecode="00:00:00:01.000", count="61", value="0.5"):
    return [timecode, count] + [value] * 52 + ["0.1"] * 9


@pytest.mark.parametrize("text, match", [
    (_live_link_text([_row(), _row()[:40]]), "line 3 has 40 cells"),                      # truncated row
    (_live_link_text([_row(value="x")]), "line 2, column 'EyeBlinkLeft': 'x' is not a number"),
    (_live_link_text([_row(count="52")]), "line 2, column 'BlendShapeCount': '52', expected 61"),
    (_live_link_text([_row(timecode="00:00:01.000")]), "line 2, column 'Timecode'"),
    (_live_link_text([_row(timecode="00:61:00:00.000")]), "column 'Timecode'"),
    (_live_link_text([_row(value="1.5")]), "1.5 is outside"),
    ("Time,Count,EyeBlinkLeft\n", "not a Live Link Face CSV"),
    (_live_link_text([_row()]).replace("TongueOut", "TongueIn"), "missing TongueOut; unknown TongueIn"),
    (_live_link_text([_row()]).replace("JawLeft", "JawRight"), "names column 'JawRight' twice"),
    ("", "empty file"),
])
def test_live_link_reader_refuses_broken_files(tmp_path, text, match):
    path = tmp_path / "broken.csv"
    path.write_text(text)
    with pytest.raises(FlameFileError, match=r"broken\.csv: .*" + match):
        read_live_link_csv(path)


def test_live_link_reader_reads_app_style_files(tmp_path):
    # The app's own take: time-of-day timecodes with fractional frames, camelCase tolerated,
    # crossing midnight; frame numbers count from 00:00:00:00 at the inferred 60 fps.
    header = ",".join(h[0].lower() + h[1:] if i >= 2 else h for i, h in enumerate(LIVE_LINK_HEADER))
    rows = [_row("23:59:59:58.500"), _row("23:59:59:59.500"), _row("00:00:00:00.500")]
    (tmp_path / "app.csv").write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    back = read_live_link_csv(tmp_path / "app.csv")
    assert back.fps == 60.0
    day = 24 * 3600 * 60
    # 23:59:59 + 58.5 frames is frame day - 1.5: frame day - 2, half-way through it
    np.testing.assert_array_equal(back.frames, [day - 2, day - 1, day])
    np.testing.assert_array_equal(back.values, np.full((3, 52), 0.5, np.float32))
    assert read_live_link_csv(tmp_path / "app.csv", fps=120).fps == 120.0


def test_yaw_pitch_roll_signs_in_flames_frame():
    # +y up, +z toward the viewer, +x the subject's left
    assert axis_angle_to_yaw_pitch_roll([0, 0.3, 0]) == pytest.approx([0.3, 0, 0])   # face turns to +x
    assert axis_angle_to_yaw_pitch_roll([0.2, 0, 0]) == pytest.approx([0, 0.2, 0])   # +z tips toward -y: down
    assert axis_angle_to_yaw_pitch_roll([0, 0, 0.1]) == pytest.approx([0, 0, 0.1])
    rng = np.random.default_rng(8)
    aa = rng.normal(0, 0.5, (20, 3))
    aa[0] = 0.0
    aa[1] = [1e-6, -2e-6, 3e-7]
    np.testing.assert_allclose(axis_angle_to_yaw_pitch_roll(aa), Rotation.from_rotvec(aa).as_euler("YXZ"), atol=1e-9)
