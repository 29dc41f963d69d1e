"""The allow-list unpickler: what real files contain loads; anything else is refused unexecuted."""

from __future__ import annotations

import collections
import pickle
import sys
import zipfile

import numpy as np
import pytest
import scipy.sparse

from flamejax.io import FlameFileError, load_pickle, read_npy, read_npy_object, read_npz
from flamejax.io.npy import write_npy_object
from flamejax.io.safe_pickle import ChumpyArray, CscMatrixState, loads, to_array
from flamejax.io.torch_pickle import LEGACY_MAGIC, LEGACY_PROTOCOL
from flamejax.io.pickle_writer import GlobalRef
from io_fixtures import Call, FakeCh, dumps, py2_dumps


# ---------------------------------------------------------------------------------------------
# What real files contain


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_numpy_scipy_and_builtins_load_at_every_protocol(protocol):
    m = scipy.sparse.random(5, 7, density=0.4, format="csc", random_state=0)
    data = {"a": np.arange(6.0).reshape(2, 3), "f": np.asfortranarray(np.ones((2, 3), np.float32)),
            "s": np.float32(2.5), "i": np.int64(7), "set": {1, 2}, "od": collections.OrderedDict(a=1),
            "csc": m, "csr": m.tocsr(), "bytes": b"\x00\xff", "text": "lbs"}
    out = loads(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["a"], data["a"])
    np.testing.assert_array_equal(out["f"], data["f"])
    assert out["s"] == np.float32(2.5) and out["i"] == 7 and out["set"] == {1, 2}
    assert out["od"] == {"a": 1} and out["bytes"] == b"\x00\xff" and out["text"] == "lbs"
    np.testing.assert_array_equal(to_array(out["csc"]), m.toarray())
    np.testing.assert_array_equal(to_array(out["csr"]), m.toarray())


def test_python2_numpy1_scipy_chumpy_pickle_loads_without_chumpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "chumpy", None)  # importing chumpy now fails
    x = np.random.default_rng(0).normal(size=(4, 3))
    j = scipy.sparse.csc_matrix(np.eye(3, 5))
    data = py2_dumps({"x": FakeCh(x), "J": j, "scalar": np.float64(1.5), "name": "lbs"})
    assert b"chumpy.ch\nCh\n" in data and b"numpy.core.multiarray\n_reconstruct\n" in data
    assert b"scipy.sparse.csc\ncsc_matrix\n" in data and b"__builtin__\nset\n" in data
    out = loads(data)
    assert isinstance(out["x"], ChumpyArray) and isinstance(out["J"], CscMatrixState)
    np.testing.assert_array_equal(out["x"].x, x)
    np.testing.assert_array_equal(np.asarray(out["x"]), x)
    np.testing.assert_array_equal(out["J"].toarray(), np.eye(3, 5))
    assert out["scalar"] == 1.5 and out["name"] == "lbs"


def test_protocol0_chumpy_goes_through_copy_reg_reconstructor():
    data = py2_dumps({"x": FakeCh(np.arange(3.0))}, protocol=1)
    assert b"copy_reg\n_reconstructor\n" in data
    np.testing.assert_array_equal(loads(data)["x"].x, np.arange(3.0))


@pytest.mark.parametrize("module", ["scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc",
                                    "scipy.sparse.compressed"])
def test_sparse_matrix_under_old_and_new_module_paths(module):
    m = scipy.sparse.random(4, 6, density=0.5, format="csc", random_state=1)
    state = {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": (4, 6), "maxprint": 50}
    out = loads(dumps(Call(module, "csc_matrix", state=state)))
    np.testing.assert_array_equal(out.toarray(), m.toarray())


def test_sparse_duplicates_add_up_and_bad_structure_is_rejected():
    dup = CscMatrixState()
    dup.__setstate__({"data": np.array([1.0, 2.0]), "indices": np.array([1, 1]),
                      "indptr": np.array([0, 2, 2]), "_shape": (3, 2)})
    np.testing.assert_array_equal(dup.toarray(), [[0, 0], [3, 0], [0, 0]])
    bad = CscMatrixState()
    bad.__setstate__({"data": np.array([1.0]), "indices": np.array([5]),
                      "indptr": np.array([0, 1, 1]), "_shape": (3, 2)})
    with pytest.raises(ValueError, match="out of range"):
        bad.toarray()


def test_safe_npy_and_npz_read_object_payloads(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, {"a": np.arange(3)}, allow_pickle=True)
    np.testing.assert_array_equal(read_npy_object(path)["a"], np.arange(3))
    np.save(tmp_path / "plain.npy", np.eye(2))
    np.testing.assert_array_equal(read_npy(tmp_path / "plain.npy"), np.eye(2))
    np.savez(tmp_path / "a.npz", x=np.arange(4), obj=np.array({"k": 1}, dtype=object))
    out = read_npz(tmp_path / "a.npz")
    assert out["obj"][()] == {"k": 1}
    np.testing.assert_array_equal(out["x"], np.arange(4))


# ---------------------------------------------------------------------------------------------
# Hostile files: refused in find_class, before anything named is imported or called


def _side_effect_payloads(marker: str):
    cmd = f"touch {marker}"
    code = f"open({marker!r}, 'w').close()"
    return {
        "os.system": Call("os", "system", cmd),
        "posix.system": Call("posix", "system", cmd),
        "builtins.eval": Call("builtins", "eval", code),
        "__builtin__.eval": Call("__builtin__", "eval", code),
        "builtins.exec": Call("builtins", "exec", code),
        "subprocess.Popen": Call("subprocess", "Popen", ["touch", marker]),
        "subprocess.check_call": Call("subprocess", "check_call", ["touch", marker]),
        "builtins.getattr": Call("builtins", "getattr", "x", "y"),
        "builtins.__import__": Call("builtins", "__import__", "os"),
        "numpy.load": Call("numpy", "load", marker),
        "torch.load": Call("torch", "load", marker),
        "pickle.loads": Call("pickle", "loads", b"x"),
        "chumpy.reordering.Select": Call("chumpy.reordering", "Select"),
        "numpy.testing.runstring": Call("numpy.testing._private.utils", "runstring", code, {}),
    }


PAYLOAD_NAMES = list(_side_effect_payloads("m"))


def test_control_the_payloads_do_run_under_plain_pickle(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(dumps(_side_effect_payloads(str(marker))["builtins.exec"]))
    assert marker.exists()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_hostile_pickle_is_refused_and_does_not_run(tmp_path, name):
    marker = tmp_path / "ran"
    payload = {"v_template": np.zeros(3), "evil": _side_effect_payloads(str(marker))[name]}
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(dumps(payload))
    with pytest.raises(FlameFileError) as err:
        load_pickle(path)
    message = str(err.value)
    assert str(path) in message and "refused" in message and name.rsplit(".", 1)[1] in message
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_hostile_payload_inside_npy_npz_and_torch_stream_is_refused(tmp_path, name):
    marker = tmp_path / "ran"
    evil = _side_effect_payloads(str(marker))[name]
    npy = tmp_path / "landmark_embedding.npy"
    write_npy_object(npy, {"static_lmk_faces_idx": evil})
    npz = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(npz, lmk_face_idx=np.zeros(3))
    with zipfile.ZipFile(npz, "a") as archive:
        archive.writestr("evil.npy", npy.read_bytes())
    # A legacy torch storage stream whose object pickle names the evil global.
    stream = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, {}))
    torch_npy = tmp_path / "torch.npy"
    write_npy_object(torch_npy, {"t": Call("torch.storage", "_load_from_bytes", stream + dumps(evil))})
    for path, read in ((npy, read_npy_object), (npz, read_npz), (torch_npy, read_npy_object)):
        with pytest.raises(FlameFileError, match="refused") as err:
            read(path)
        assert str(path) in str(err.value)
    assert not marker.exists()


def _raw_memory_payloads():
    """Pickles that would build object arrays over attacker-chosen bytes (pointers) or
    otherwise inconsistent arrays, using only allow-listed names."""
    obj, struct_obj = Call("numpy", "dtype", "O"), Call("numpy", "dtype", [("a", "O")])
    ndarray = GlobalRef("numpy", "ndarray")
    newobj = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"numpy\nndarray\n" + pickle.BININT1 + b"\x02"
              + pickle.TUPLE1 + pickle.SHORT_BINUNICODE + b"\x01O" + pickle.SHORT_BINBYTES + b"\x10"
              + b"\x01" * 16 + pickle.TUPLE3 + pickle.NEWOBJ + pickle.STOP)
    state = (1, (2,), obj, False, b"\x01" * 16)
    return {
        "call ndarray": dumps(Call("numpy", "ndarray", (2,), obj, b"\x01" * 16), protocol=3),
        "newobj ndarray": newobj,
        "copy_reg ndarray": dumps(Call("copy_reg", "_reconstructor", ndarray, ndarray, (2,))),
        "reconstruct other subtype": dumps(Call("numpy.core.multiarray", "_reconstruct",
                                                GlobalRef("chumpy.ch", "Ch"), (0,), b"b")),
        "setstate object bytes": dumps(Call("numpy.core.multiarray", "_reconstruct", ndarray, (0,), b"b",
                                            state=state), protocol=3),
        "frombuffer object": dumps(Call("numpy._core.numeric", "_frombuffer", b"\x01" * 16, obj, (2,), "C"),
                                   protocol=3),
        "frombuffer structured": dumps(Call("numpy._core.numeric", "_frombuffer", b"\x01" * 8,
                                            struct_obj, (1,), "C"), protocol=3),
        "scalar object": dumps(Call("numpy.core.multiarray", "scalar", obj, b"\x01" * 8), protocol=3),
        "scalar structured": dumps(Call("numpy._core.multiarray", "scalar", struct_obj, b"\x01" * 8),
                                   protocol=3),
        "void dtype": dumps(Call("numpy", "dtype", "V8")),
        # A plain dtype given object fields at far offsets by its BUILD state: with NumPy alone,
        # filling an array of it writes pointers out of bounds.
        "dtype fields via state": dumps(Call(
            "numpy.core.multiarray", "_reconstruct", ndarray, (0,), b"b",
            state=(1, (2,), Call("numpy", "dtype", "f8", state=(3, "|", None, ("a",),
                                                                  {"a": (obj, 100000)}, 8, 1, 63)),
                   False, [(1,), (2,)]))),
        "dtype itemsize via state": dumps(Call("numpy", "dtype", "U2", state=(3, "<", None, None, None,
                                                                              1, 1, 8))),
        "build on a set": dumps(Call("builtins", "set", state={"add": 1})),
    }


@pytest.mark.parametrize("case", list(_raw_memory_payloads()))
def test_numpy_cannot_be_used_to_forge_arrays(tmp_path, case):
    path = tmp_path / "forged.pkl"
    path.write_bytes(_raw_memory_payloads()[case])
    with pytest.raises(FlameFileError) as err:  # a crash here would be the failure mode
        load_pickle(path)
    assert str(path) in str(err.value)


def test_codecs_encode_is_restricted_to_latin1():
    assert loads(dumps(Call("_codecs", "encode", "\xff", "latin1"))) == b"\xff"
    with pytest.raises(pickle.UnpicklingError, match="encoding"):
        loads(dumps(Call("_codecs", "encode", "abc", "rot13")))


# ---------------------------------------------------------------------------------------------
# Broken files: one FlameFileError naming the file


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00(X\x01", b"not a pickle at all",
                                     b"\x80\x02K\x01K\x02K\x03"])
def test_corrupt_or_truncated_pickle(tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(content)
    with pytest.raises(FlameFileError, match="not a readable pickle") as err:
        load_pickle(path)
    assert str(path) in str(err.value)


def test_truncated_real_pickle_and_missing_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(py2_dumps({"x": FakeCh(np.ones(1000))})[:-200])
    with pytest.raises(FlameFileError, match=str(path)):
        load_pickle(path)
    with pytest.raises(FlameFileError, match="no such file"):
        load_pickle(tmp_path / "absent.pkl")
    for read in (read_npy, read_npz):
        with pytest.raises(FlameFileError, match="no such file"):
            read(tmp_path / "absent.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(FlameFileError, match="bad.npy"):
        read_npy(tmp_path / "bad.npy")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(FlameFileError, match="bad.npz"):
        read_npz(tmp_path / "bad.npz")


def test_chumpy_without_x_is_an_error():
    obj = ChumpyArray()
    obj.__setstate__({"a": 1})
    with pytest.raises(ValueError, match="'x'"):
        to_array(obj)
