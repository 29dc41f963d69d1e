"""The face-calibration data folder: exact layout on disk, round trip, clear errors per file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flamejax.io import FlameFileError, read_face_calibration, write_face_calibration
from flamejax.io.face_calibration import FaceCalibrationData

K, E = 7, 4


def make_data(identity_name="identity1", seed=0) -> FaceCalibrationData:
    rng = np.random.default_rng(seed)
    return FaceCalibrationData(
        control_names=tuple(f"ctrl{k}" for k in range(K)),
        basis=rng.normal(size=(103, K)).astype(np.float32),
        global_expression=rng.normal(size=103).astype(np.float32),
        identity=rng.normal(size=300).astype(np.float32),
        masks=tuple(rng.choice(5023, size=n, replace=False).astype(np.int32)
                    for n in (5023, 68, 659, 12)),
        identity_name=identity_name,
    )


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "face_calibration_data"
    write_face_calibration(path, make_data())
    return path


def test_written_layout_is_the_reference_layout(folder):
    files = sorted(os.path.relpath(os.path.join(root, f), folder)
                   for root, _, names in os.walk(folder) for f in names)
    assert files == sorted(["controls_simple.txt", "semantic_to_flame_deltas_basis.npy",
                            "identities/identity1/global_expression.npy",
                            "identities/identity1/identity1_identity.npy"]
                           + [f"masks/{i}.npy" for i in range(E)])
    assert (folder / "controls_simple.txt").read_text() == "".join(f"ctrl{k}\n" for k in range(K))
    # Plain np.load (no pickles) sees the reference dtypes and shapes.
    expect = {"semantic_to_flame_deltas_basis.npy": (np.float32, (103, K)),
              "identities/identity1/global_expression.npy": (np.float32, (103,)),
              "identities/identity1/identity1_identity.npy": (np.float32, (300,)),
              "masks/1.npy": (np.int32, (68,))}
    for name, (dtype, shape) in expect.items():
        arr = np.load(folder / name, allow_pickle=False)
        assert arr.dtype == dtype and arr.shape == shape, name


def test_round_trip(folder):
    data = make_data()
    back = read_face_calibration(folder)
    assert back.control_names == data.control_names and back.identity_name == "identity1"
    for a, b in [(back.basis, data.basis), (back.global_expression, data.global_expression),
                 (back.identity, data.identity)]:
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert len(back.masks) == E
    for a, b in zip(back.masks, data.masks):
        assert a.dtype == np.int32
        np.testing.assert_array_equal(a, b)
    assert read_face_calibration(folder, identity="identity1").identity_name == "identity1"


def test_writer_converts_dtypes_and_reader_ignores_extras(tmp_path):
    data = make_data()._replace(basis=make_data().basis.astype(np.float64),
                                masks=tuple(m.astype(np.int64) for m in make_data().masks))
    write_face_calibration(tmp_path, data)
    # The optional files of the reference folder are not needed and are ignored.
    np.save(tmp_path / "condensation.npy", np.arange(5023, dtype=np.int32))
    np.save(tmp_path / "semantic_to_flame_basis.npy", np.zeros((103, 269), np.float32))
    assert np.load(tmp_path / "semantic_to_flame_deltas_basis.npy").dtype == np.float32
    assert np.load(tmp_path / "masks" / "0.npy").dtype == np.int32
    np.testing.assert_array_equal(read_face_calibration(tmp_path).basis, make_data().basis)


def test_several_identities(folder):
    write_face_calibration(folder, make_data("actor2", seed=1))
    with pytest.raises(FlameFileError,
                       match=r"identities: holds 2 identities \(actor2, identity1\)"):
        read_face_calibration(folder)
    two = read_face_calibration(folder, identity="actor2")
    np.testing.assert_array_equal(two.identity, make_data(seed=1).identity)
    assert os.path.isfile(folder / "identities" / "actor2" / "actor2_identity.npy")
    with pytest.raises(FlameFileError, match="identities/nobody: no such identity folder"):
        read_face_calibration(folder, identity="nobody")


@pytest.mark.parametrize("relpath", [
    "controls_simple.txt",
    "semantic_to_flame_deltas_basis.npy",
    "identities/identity1/global_expression.npy",
    "identities/identity1/identity1_identity.npy",
])
def test_missing_file_is_named(folder, relpath):
    os.remove(folder / relpath)
    with pytest.raises(FlameFileError, match=f"{relpath}: no such file"):
        read_face_calibration(folder)


def test_missing_folders_and_masks(folder, tmp_path):
    with pytest.raises(FlameFileError, match="no such face-calibration data folder"):
        read_face_calibration(tmp_path / "nowhere")
    os.remove(folder / "masks" / "2.npy")
    with pytest.raises(FlameFileError, match=r"masks/2.npy: no such file"):
        read_face_calibration(folder)
    for f in os.listdir(folder / "masks"):
        os.remove(folder / "masks" / f)
    with pytest.raises(FlameFileError, match="masks: holds no"):
        read_face_calibration(folder)
    os.rmdir(folder / "masks")
    with pytest.raises(FlameFileError, match="masks: no such folder"):
        read_face_calibration(folder)


def test_bad_contents_are_named(folder):
    basis = folder / "semantic_to_flame_deltas_basis.npy"
    np.save(basis, np.zeros((103, K + 1), np.float32))
    with pytest.raises(FlameFileError, match=f"deltas_basis.npy: has {K + 1} columns but "
                                             f"controls_simple.txt names {K} controls"):
        read_face_calibration(folder)
    np.save(basis, np.zeros((100, K), np.float32))
    with pytest.raises(FlameFileError, match=r"deltas_basis.npy: 'basis' has shape \(100, 7\)"):
        read_face_calibration(folder)
    bad = make_data().basis.copy()
    bad[5, 2] = np.nan
    np.save(basis, bad)
    with pytest.raises(FlameFileError, match="deltas_basis.npy: 'basis' contains 1 NaN"):
        read_face_calibration(folder)
    basis.write_bytes(b"not an npy file")
    with pytest.raises(FlameFileError, match="deltas_basis.npy: not a readable"):
        read_face_calibration(folder)


def test_bad_identity_and_mask_contents(folder):
    ident = folder / "identities" / "identity1"
    np.save(ident / "global_expression.npy", np.zeros(100, np.float32))
    with pytest.raises(FlameFileError,
                       match=r"global_expression.npy: 'global expression' has shape"):
        read_face_calibration(folder)
    write_face_calibration(folder, make_data())
    np.save(ident / "identity1_identity.npy", np.zeros((2, 150), np.float32))
    with pytest.raises(FlameFileError, match="identity1_identity.npy: 'identity' has shape"):
        read_face_calibration(folder)
    np.save(ident / "identity1_identity.npy", np.zeros(301, np.float32))
    with pytest.raises(FlameFileError, match="identity1_identity.npy: has 301 shape"):
        read_face_calibration(folder)
    write_face_calibration(folder, make_data())
    np.save(folder / "masks" / "3.npy", np.array([0, 5023], np.int32))
    with pytest.raises(FlameFileError, match="masks/3.npy: 'mask' holds id 5023"):
        read_face_calibration(folder)
    assert read_face_calibration(folder, n_vertices=None).masks[3].tolist() == [0, 5023]
    np.save(folder / "masks" / "3.npy", np.array([0.5, 1.0]))
    with pytest.raises(FlameFileError, match="masks/3.npy: 'mask' has dtype float64"):
        read_face_calibration(folder)
    np.save(folder / "masks" / "3.npy", np.array([[0, 1]], np.int32))
    with pytest.raises(FlameFileError, match=r"masks/3.npy: 'mask' has shape \(1, 2\)"):
        read_face_calibration(folder)


def test_bad_control_names(folder):
    names = folder / "controls_simple.txt"
    names.write_text("a\nb\na\n" + "".join(f"x{k}\n" for k in range(K - 3)))
    with pytest.raises(FlameFileError, match="controls_simple.txt: duplicate control names: a"):
        read_face_calibration(folder)
    names.write_text("\n\n")
    with pytest.raises(FlameFileError, match="controls_simple.txt: holds no control names"):
        read_face_calibration(folder)
    # Blank lines and surrounding whitespace (e.g. CRLF line ends) are tolerated.
    names.write_text("".join(f" ctrl{k}\r\n\n" for k in range(K)))
    assert read_face_calibration(folder).control_names == make_data().control_names


def test_writer_validates(tmp_path):
    data = make_data()
    with pytest.raises(FlameFileError, match=r"'basis' has shape \(103, 7\), expected \(103, 6\)"):
        write_face_calibration(tmp_path / "a", data._replace(control_names=data.control_names[:-1]))
    with pytest.raises(FlameFileError, match="identity name '../x'"):
        write_face_calibration(tmp_path / "b", data._replace(identity_name="../x"))
    nan = data.global_expression.copy()
    nan[0] = np.inf
    with pytest.raises(FlameFileError, match="'global expression' contains 1 NaN or infinite"):
        write_face_calibration(tmp_path / "c", data._replace(global_expression=nan))
    with pytest.raises(FlameFileError, match="no masks"):
        write_face_calibration(tmp_path / "d", data._replace(masks=()))
    assert not os.path.exists(tmp_path / "a")  # nothing written when the data is bad
    write_face_calibration(tmp_path / "e", data)
    with pytest.raises(FlameFileError, match="already holds masks beyond the 2"):
        write_face_calibration(tmp_path / "e", data._replace(masks=data.masks[:2]))
