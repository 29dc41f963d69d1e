"""Face trackers' outputs (metrical-tracker, Pixel3DMM, VHAP, SMIRK, DECA/EMOCA, our own .npz).

Every file is written here in the tracker's own layout (names, keys, dtypes, shapes; torch.save
zips without torch) and read back; rotations are checked against scipy, everything else against
plain NumPy. Hostile and broken files must fail with a FlameFileError naming the file, and must
not run anything (a marker file stays absent).
"""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile

import jax
import numpy as np
import pytest
from numpy.lib import format as npy_format
from scipy.spatial.transform import Rotation

import flamejax as fj
from flamejax.io import (
    FlameFileError,
    TrackerOutputError,
    detect_tracker,
    load_torch_file,
    read_tracked,
    save_tracked,
    to_flame_params,
)
from flamejax.io.pickle_writer import NamedGlobalPickler
from io_fixtures import Call, ZipTensor, dumps, torch_save_zip

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
ATOL = 2e-5  # rotations go through flamejax.rotations in float32


def rotvecs(rng, n, scale=0.3):
    return rng.normal(0, scale, (n, 3))


def to_6d(rotvec, stretch=None):
    """pytorch3d 6D (first two matrix rows), optionally with rows scaled/sheared (not orthonormal)."""
    m = Rotation.from_rotvec(rotvec).as_matrix()
    d6 = m[..., :2, :].reshape(m.shape[:-2] + (6,))
    if stretch is not None:
        d6 = d6 * stretch[0]
        d6[..., 3:] += stretch[1] * d6[..., :3]  # shear the second row along the first
    return d6


def six_d_reference(d6):
    """Gram-Schmidt in NumPy, then scipy's rotvec."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return Rotation.from_matrix(np.stack([b1, b2, np.cross(b1, b2)], -2)).as_rotvec()


class _BlockTorch:
    """A meta-path finder under which ``import torch`` fails."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked in this test")
        return None


@pytest.fixture
def no_torch(monkeypatch):
    # Not sys.modules["torch"] = None: SciPy probes sys.modules["torch"] for array types.
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BlockTorch(), *sys.meta_path])


# ---------------------------------------------------------------------------------------------
# metrical-tracker


def metrical_frame(rng, frame_id, shape, exp=None):
    """One checkpoint dict exactly as metrical-tracker's save_checkpoint builds it (NumPy float32)."""
    f32 = np.float32
    jaw, eyes = rotvecs(rng, 1), rotvecs(rng, 2, 0.1)
    frame = {
        "flame": {
            "exp": (rng.normal(0, 1, (1, 100)) if exp is None else exp).astype(f32),
            "shape": shape[None].astype(f32),
            "tex": rng.normal(0, 1, (1, 140)).astype(f32),
            "sh": rng.normal(0, 1, (1, 9, 3)).astype(f32),
            "eyes": np.concatenate([to_6d(eyes[0], (1.3, 0.2)), to_6d(eyes[1])])[None].astype(f32),
            "eyelids": rng.uniform(0, 1, (1, 2)).astype(f32),
            "jaw": to_6d(jaw[0], (0.7, -0.1))[None].astype(f32),
        },
        "camera": {"R": to_6d(rotvecs(rng, 1))[0:1].astype(f32), "t": rng.normal(0, 1, (1, 3)).astype(f32),
                   "fl": np.array([[9.7]], f32), "pp": np.zeros((1, 2), f32)},
        "opencv": {"R": np.eye(3, dtype=f32)[None], "t": rng.normal(0, 1, (1, 3)).astype(f32),
                   "K": np.eye(3, dtype=f32)[None]},
        "img_size": np.array([512, 512]),
        "frame_id": f"{frame_id:05d}",
        "global_step": 1234,
    }
    return frame


def test_metrical_tracker_checkpoints(tmp_path, no_torch):
    rng = np.random.default_rng(0)
    shape = rng.normal(0, 1, 300)
    ckpt = tmp_path / "actor" / "checkpoint"
    ckpt.mkdir(parents=True)
    written = {}
    for i in (0, 1, 2, 4, 5, 6):  # frame 3 missing: the tracker lost the face there
        exp = np.full((1, 100), np.nan) if i == 5 else None
        written[i] = metrical_frame(rng, i, shape, exp)
        torch_save_zip(ckpt / f"{i:05d}.frame", written[i])
    assert detect_tracker(tmp_path / "actor") == "metrical"
    seq = read_tracked(tmp_path / "actor")
    np.testing.assert_array_equal(seq.frame_ids, np.arange(7))
    np.testing.assert_array_equal(seq.valid, [1, 1, 1, 0, 1, 0, 1])
    assert any("missing" in s and ": 3" in s for s in seq.issues)
    assert any("NaN" in s and ": 5" in s for s in seq.issues)
    np.testing.assert_allclose(seq.shape, shape.astype(np.float32))
    assert seq.shape_spread == 0.0 and seq.pivot == "root"
    for t, i in enumerate(seq.frame_ids):
        if not seq.valid[t]:
            assert not seq.expression[t].any() and not seq.jaw_pose[t].any()
            continue
        flame = written[i]["flame"]
        np.testing.assert_allclose(seq.expression[t], flame["exp"][0])
        np.testing.assert_allclose(seq.jaw_pose[t], six_d_reference(flame["jaw"][0].astype(float)), atol=ATOL)
        eyes = flame["eyes"][0].astype(float)
        np.testing.assert_allclose(seq.eye_pose[t, :3], six_d_reference(eyes[:6]), atol=ATOL)
        np.testing.assert_allclose(seq.eye_pose[t, 3:], six_d_reference(eyes[6:]), atol=ATOL)
        np.testing.assert_allclose(seq.eyelids[t], flame["eyelids"][0])
        np.testing.assert_allclose(seq.camera["R"][t], written[i]["camera"]["R"][0])
        np.testing.assert_allclose(seq.camera["opencv_K"][t], np.eye(3))
    assert not seq.global_pose.any() and not seq.translation.any() and not seq.neck_pose.any()
    assert seq.source.startswith("metrical: ")
    params = to_flame_params(seq)
    assert params.shape.shape == (7, 300) and params.eye_pose.shape == (7, 6)


# ---------------------------------------------------------------------------------------------
# Pixel3DMM


def test_pixel3dmm_checkpoints_and_origin_pivot(tmp_path, no_torch, flame_model):
    rng = np.random.default_rng(1)
    shape, n_expr = rng.normal(0, 0.5, 12), 8
    ckpt = tmp_path / "vid_nV1" / "checkpoint"
    ckpt.mkdir(parents=True)
    head_r, head_t = rotvecs(rng, 3), rng.normal(0, 0.05, (3, 3))
    frames = []
    for i in range(3):
        d = {"exp": rng.normal(0, 1, (1, n_expr)), "shape": shape[None],
             "eyes": np.concatenate([to_6d(r) for r in rotvecs(rng, 2, 0.1)])[None],
             "eyelids": rng.uniform(0, 1, (1, 2)), "jaw": to_6d(rotvecs(rng, 1, 0.2)),
             "neck": to_6d(rotvecs(rng, 1, 0.1)), "R": to_6d(head_r[i:i + 1]), "t": head_t[i:i + 1]}
        d = {k: v.astype(np.float32) for k, v in d.items()}
        d["R_rotation_matrix"] = Rotation.from_rotvec(head_r[i:i + 1]).as_matrix().astype(np.float32)
        frame = {"flame": d, "img_size": np.array([512, 512]), "frame_id": i, "global_step": 7,
                 "camera": {"R_base_0": np.eye(3, dtype=np.float32)[None],
                            "t_base_0": np.array([[0, 0, -1]], np.float32),
                            "fl": np.array([[3.9]], np.float32), "pp": np.zeros((1, 2), np.float32)},
                 "joint_transforms": np.tile(np.eye(4, dtype=np.float32), (1, 5, 1, 1))}
        frames.append(frame)
        torch_save_zip(ckpt / f"{i:05d}.frame", frame)
    seq = read_tracked(tmp_path / "vid_nV1")
    assert seq.source.startswith("pixel3dmm") and seq.pivot == "origin" and seq.valid.all()
    np.testing.assert_allclose(seq.global_pose, head_r, atol=ATOL)
    np.testing.assert_allclose(seq.translation, head_t, atol=1e-6)
    for t in range(3):
        np.testing.assert_allclose(seq.neck_pose[t], six_d_reference(frames[t]["flame"]["neck"][0].astype(float)),
                                   atol=ATOL)
    with pytest.raises(ValueError, match="pivot"):
        to_flame_params(seq)
    # FLAME with the converted pose == Pixel3DMM's R v + t applied to FLAME without global pose.
    params = to_flame_params(seq, flame_model)
    forward = jax.jit(jax.vmap(fj.flame_forward, in_axes=(None, 0)))
    ours = np.asarray(forward(flame_model, params).vertices)
    unposed = np.asarray(forward(flame_model, params._replace(
        global_pose=params.global_pose * 0, translation=params.translation * 0)).vertices)
    rot = Rotation.from_rotvec(head_r).as_matrix()
    expected = np.einsum("tij,tvj->tvi", rot, unposed) + head_t[:, None]
    np.testing.assert_allclose(ours, expected, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# VHAP


def vhap_params(rng, n, n_expr=100, timestep_ids=None):
    """tracked_flame_params_<epoch>.npz as VHAP's save_result writes it (float32 arrays)."""
    f32 = np.float32
    return {
        "rotation": rotvecs(rng, n).astype(f32), "translation": rng.normal(0, 0.1, (n, 3)).astype(f32),
        "neck_pose": rotvecs(rng, n, 0.1).astype(f32), "jaw_pose": rotvecs(rng, n, 0.1).astype(f32),
        "eyes_pose": rotvecs(rng, 2 * n, 0.1).reshape(n, 6).astype(f32),
        "shape": rng.normal(0, 1, 300).astype(f32), "expr": rng.normal(0, 1, (n, n_expr)).astype(f32),
        "timestep_id": np.array(timestep_ids or [f"{i:05d}" for i in range(n)]),
        "n_processed_frames": np.array(n), "focal_length": np.array([1.5], f32),
        "tex": rng.normal(0, 1, 100).astype(f32), "lights": rng.normal(0, 1, (9, 3)).astype(f32),
        "static_offset": np.zeros((1, 50, 3), f32), "image_size": np.array([512, 512]),
    }


def test_vhap_tracked_flame_params(tmp_path):
    rng = np.random.default_rng(2)
    data = vhap_params(rng, 5, timestep_ids=[f"f{i:06d}" for i in (10, 11, 12, 13, 14)])
    data["expr"][2, 7] = np.inf
    out = tmp_path / "2024-01-01_00-00-00"
    out.mkdir()
    np.savez(out / "tracked_flame_params_10.npz", **data)
    np.savez(out / "tracked_flame_params_30.npz", **data)
    np.savez(out / "tracked_flame_params_5.npz", **vhap_params(rng, 1))
    assert data["timestep_id"].dtype.kind == "U"  # plain strings: no pickle needed
    seq = read_tracked(out)
    assert seq.source.endswith("tracked_flame_params_30.npz")
    np.testing.assert_array_equal(seq.frame_ids, [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(seq.valid, [1, 1, 0, 1, 1])
    good = seq.valid
    np.testing.assert_allclose(seq.global_pose[good], data["rotation"][good])
    np.testing.assert_allclose(seq.translation[good], data["translation"][good])
    np.testing.assert_allclose(seq.eye_pose[good], data["eyes_pose"][good])
    np.testing.assert_allclose(seq.expression[good], data["expr"][good])
    np.testing.assert_allclose(seq.shape, data["shape"])
    assert not seq.expression[2].any() and np.isfinite(seq.expression).all()
    assert not seq.eyelids.any() and seq.camera["focal_length"][0] == np.float32(1.5)
    assert any("static_offset" in s for s in seq.issues)
    params = to_flame_params(seq)
    assert params.expression.shape == (5, 100) and params.global_pose.shape == (5, 3)


def test_vhap_exported_flame_param_folder(tmp_path):
    rng = np.random.default_rng(3)
    data = vhap_params(rng, 4)
    folder = tmp_path / "export" / "flame_param"
    folder.mkdir(parents=True)
    for ti in (0, 1, 3):  # 00002.npz missing
        np.savez(folder / f"{ti:05d}.npz", **{k: (data[k][[ti]] if k != "shape" else data[k])
                                              for k in ("translation", "rotation", "neck_pose",
                                                        "jaw_pose", "eyes_pose", "shape", "expr")})
    np.savez(tmp_path / "export" / "canonical_flame_param.npz", shape=data["shape"])
    seq = read_tracked(tmp_path / "export")
    np.testing.assert_array_equal(seq.frame_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(seq.valid, [1, 1, 0, 1])
    np.testing.assert_allclose(seq.jaw_pose[[0, 1, 3]], data["jaw_pose"][[0, 1, 3]])
    assert seq.source.startswith("vhap")
    one = read_tracked(folder / "00003.npz")
    np.testing.assert_allclose(one.expression[0], data["expr"][3])


# ---------------------------------------------------------------------------------------------
# SMIRK and DECA / EMOCA


def test_smirk_outputs_lost_frame_and_padding(tmp_path):
    rng = np.random.default_rng(4)
    n = 4
    out = {"pose_params": rotvecs(rng, n), "cam": rng.normal(0, 1, (n, 3)),
           "shape_params": rng.normal(0, 1, (n, 300)), "expression_params": rng.normal(0, 1, (n, 50)),
           "eyelid_params": rng.uniform(0, 1, (n, 2)), "jaw_params": rotvecs(rng, n, 0.1)}
    out = {k: v.astype(np.float32) for k, v in out.items()}
    for k in ("pose_params", "expression_params", "jaw_params", "eyelid_params"):
        out[k][1] = 0  # the writer's placeholder for "no face in this frame"
    np.savez(tmp_path / "smirk_video.npz", **out)
    with pytest.warns(UserWarning, match="zero-padded to 100"):
        seq = read_tracked(tmp_path / "smirk_video.npz", n_expr=100)
    assert seq.source.startswith("smirk")
    np.testing.assert_array_equal(seq.valid, [1, 0, 1, 1])
    assert any("all-zero" in s for s in seq.issues) and any("zero-padded" in s for s in seq.issues)
    assert seq.expression.shape == (n, 100) and not seq.expression[:, 50:].any()
    np.testing.assert_allclose(seq.expression[0, :50], out["expression_params"][0])
    np.testing.assert_allclose(seq.global_pose[2], out["pose_params"][2])
    np.testing.assert_allclose(seq.eyelids[3], out["eyelid_params"][3])
    good = seq.valid
    median = np.median(out["shape_params"][good].astype(np.float64), axis=0)
    np.testing.assert_allclose(seq.shape, median)
    assert seq.shape_spread > 0 and any("median" in s for s in seq.issues)


def test_emoca_code_folders_and_truncation(tmp_path):
    rng = np.random.default_rng(5)
    codes = {}
    for i in (0, 1, 3):  # no face detected in frame 2: EMOCA wrote no folder
        d = tmp_path / "results" / f"{i:06d}_000"
        d.mkdir(parents=True)
        codes[i] = {"shape": rng.normal(0, 1, 100), "exp": rng.normal(0, 1, 50),
                    "tex": rng.normal(0, 1, 50), "pose": np.concatenate([rotvecs(rng, 1)[0], rotvecs(rng, 1)[0]]),
                    "detail": rng.normal(0, 1, 128)}
        codes[i]["shape"] = codes[0]["shape"]
        for k, v in codes[i].items():
            np.save(d / f"{k}.npy", v.astype(np.float32))
    with pytest.warns(UserWarning, match="truncated to 20"):
        seq = read_tracked(tmp_path / "results", tracker="emoca", n_expr=20)
    assert detect_tracker(tmp_path / "results") == "deca"
    np.testing.assert_array_equal(seq.frame_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(seq.valid, [1, 1, 0, 1])
    np.testing.assert_allclose(seq.expression[3], codes[3]["exp"][:20].astype(np.float32))
    np.testing.assert_allclose(seq.global_pose[1], codes[1]["pose"][:3].astype(np.float32))
    np.testing.assert_allclose(seq.jaw_pose[1], codes[1]["pose"][3:].astype(np.float32))
    np.testing.assert_allclose(seq.shape, codes[0]["shape"].astype(np.float32))


def test_deca_codes_npz(tmp_path):
    rng = np.random.default_rng(6)
    codes = {"shape": rng.normal(0, 1, (3, 100)), "exp": rng.normal(0, 1, (3, 50)),
             "pose": rng.normal(0, 0.2, (3, 6)), "cam": rng.normal(0, 1, (3, 3)),
             "tex": rng.normal(0, 1, (3, 50)), "light": rng.normal(0, 1, (3, 9, 3))}
    np.savez(tmp_path / "codes.npz", **codes)
    seq = read_tracked(tmp_path / "codes.npz")
    assert seq.source.startswith("deca") and seq.valid.all()
    np.testing.assert_allclose(seq.jaw_pose, codes["pose"][:, 3:])
    np.testing.assert_allclose(seq.camera["cam"], codes["cam"])


# ---------------------------------------------------------------------------------------------
# Our own layout


def test_own_layout_round_trip_and_per_frame_shape(tmp_path):
    rng = np.random.default_rng(7)
    n = 5
    arrays = {"expression": rng.normal(0, 1, (n, 10)), "shape": rng.normal(0, 1, (n, 6)),
              "jaw_pose": rotvecs(rng, n), "frame_ids": np.array([3, 1, 2, 0, 4]),
              "valid": np.array([True, True, False, True, True]), "camera_K": np.eye(3)}
    np.savez(tmp_path / "mine.npz", **arrays)
    seq = read_tracked(tmp_path / "mine.npz")
    order = np.argsort(arrays["frame_ids"])
    np.testing.assert_array_equal(seq.frame_ids, np.arange(n))
    np.testing.assert_array_equal(seq.valid, arrays["valid"][order])
    np.testing.assert_allclose(seq.jaw_pose[seq.valid], arrays["jaw_pose"][order][seq.valid])
    np.testing.assert_allclose(seq.shape, np.median(arrays["shape"][arrays["valid"]], axis=0))
    assert any("marked invalid" in s for s in seq.issues)
    save_tracked(tmp_path / "again.npz", seq)
    with np.load(tmp_path / "again.npz", allow_pickle=False) as written:  # no pickles inside
        assert "expression" in written.files
    back = read_tracked(tmp_path / "again.npz", tracker="flamejax")
    for field in ("shape", "expression", "jaw_pose", "eye_pose", "frame_ids", "valid", "translation"):
        np.testing.assert_array_equal(getattr(back, field), getattr(seq, field), err_msg=field)
    np.testing.assert_array_equal(back.camera["K"], np.eye(3))


# ---------------------------------------------------------------------------------------------
# torch's own files, and hostile or broken ones


@needs_torch
def test_torch_reads_our_frames_and_we_read_torchs(tmp_path, monkeypatch):
    import torch

    rng = np.random.default_rng(8)
    frame = metrical_frame(rng, 0, rng.normal(0, 1, 300))
    frame["tensor"] = ZipTensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    torch_save_zip(tmp_path / "00000.frame", frame)
    back = torch.load(tmp_path / "00000.frame", weights_only=False)  # trusted: we wrote it
    np.testing.assert_array_equal(back["flame"]["jaw"], frame["flame"]["jaw"])
    np.testing.assert_array_equal(back["tensor"].numpy(), frame["tensor"].array)
    frame["tensor"] = torch.arange(12, dtype=torch.float64).reshape(3, 4)[1:, ::2]
    torch.save(frame, tmp_path / "00001.frame")
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BlockTorch(), *sys.meta_path])
    ours = load_torch_file(tmp_path / "00001.frame")
    np.testing.assert_array_equal(ours["tensor"], np.arange(12.0).reshape(3, 4)[1:, ::2])
    np.testing.assert_array_equal(ours["flame"]["eyes"], frame["flame"]["eyes"])
    seq = read_tracked(tmp_path)
    np.testing.assert_array_equal(seq.frame_ids, [0, 1]) and seq.valid.all()


def test_hostile_and_broken_files_are_refused(tmp_path, no_torch):
    marker = tmp_path / "PWNED"
    attack = Call("os", "system", f"touch {marker}")
    ckpt = tmp_path / "evil" / "checkpoint"
    ckpt.mkdir(parents=True)
    torch_save_zip(ckpt / "00000.frame", None, data_pkl=dumps(attack))
    with pytest.raises(FlameFileError, match=r"00000\.frame: unsafe.*os\.system|00000\.frame: unsafe.*posix"):
        read_tracked(tmp_path / "evil")
    builtin = tmp_path / "builtin" / "00000.frame"
    builtin.parent.mkdir()
    torch_save_zip(builtin, None, data_pkl=dumps(Call("builtins", "eval", "1+1")))
    with pytest.raises(FlameFileError, match="unsafe"):
        load_torch_file(builtin)

    # An .npz member that is a pickled object array: refused without unpickling.
    evil = np.empty(1, dtype=object)
    evil[0] = attack
    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, npy_format.header_data_from_array_1_0(evil))
    NamedGlobalPickler(member, protocol=3).dump(evil)  # np.save's layout, with a hostile payload
    plain = io.BytesIO()
    np.save(plain, np.zeros((1, 50)))
    with zipfile.ZipFile(tmp_path / "tracked_flame_params_30.npz", "w") as archive:
        archive.writestr("expr.npy", plain.getvalue())
        archive.writestr("eyes_pose.npy", member.getvalue())
    with pytest.raises(TrackerOutputError, match="tracked_flame_params_30.npz: 'eyes_pose' is an object array"):
        read_tracked(tmp_path / "tracked_flame_params_30.npz", tracker="vhap")

    # Truncated files.
    rng = np.random.default_rng(9)
    good = tmp_path / "good" / "00000.frame"
    good.parent.mkdir()
    torch_save_zip(good, metrical_frame(rng, 0, np.zeros(300)))
    cut = tmp_path / "cut" / "checkpoint" / "00000.frame"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(FlameFileError, match="00000.frame: not a torch.save zip archive"):
        read_tracked(tmp_path / "cut")
    np.savez(tmp_path / "v.npz", **vhap_params(rng, 2))
    (tmp_path / "v_cut.npz").write_bytes((tmp_path / "v.npz").read_bytes()[:300])
    with pytest.raises(FlameFileError, match="v_cut.npz"):
        read_tracked(tmp_path / "v_cut.npz", tracker="vhap")

    # Wrong formats.
    (tmp_path / "text.frame").write_text("hello")
    with pytest.raises(FlameFileError, match="text.frame: not a torch.save zip archive"):
        read_tracked(tmp_path / "text.frame")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(FlameFileError, match="text.npz: not an .npz archive"):
        read_tracked(tmp_path / "text.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(TrackerOutputError, match="other.npz: not a known tracker output"):
        read_tracked(tmp_path / "other.npz")
    zipped = tmp_path / "plain_zip.frame"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("readme.txt", "not torch")
    with pytest.raises(FlameFileError, match="plain_zip.frame: not a torch.save archive"):
        read_tracked(zipped)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrackerOutputError, match="empty: no tracker output found"):
        read_tracked(tmp_path / "empty")
    with pytest.raises(TrackerOutputError, match="no such file"):
        read_tracked(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown tracker"):
        read_tracked(tmp_path / "v.npz", tracker="facewarehouse")
    assert not marker.exists()


def test_missing_keys_wrong_shapes_and_dtypes_are_named(tmp_path, no_torch):
    rng = np.random.default_rng(10)
    frame = metrical_frame(rng, 0, np.zeros(300))
    del frame["flame"]["jaw"]
    torch_save_zip(tmp_path / "00000.frame", frame)
    with pytest.raises(TrackerOutputError, match=r"00000.frame: missing 'flame.jaw'"):
        read_tracked(tmp_path / "00000.frame")
    torch_save_zip(tmp_path / "00001.frame", {"exp": np.zeros(3)})
    with pytest.raises(TrackerOutputError, match="00001.frame: not a tracker checkpoint"):
        read_tracked(tmp_path / "00001.frame")

    data = vhap_params(rng, 3)
    data["jaw_pose"] = np.zeros((3, 6), np.float32)
    np.savez(tmp_path / "tracked_flame_params_1.npz", **data)
    with pytest.raises(TrackerOutputError, match=r"'jaw_pose' has shape \(3, 6\), expected \(3, 3\)"):
        read_tracked(tmp_path / "tracked_flame_params_1.npz")
    data = vhap_params(rng, 3)
    data["expr"] = np.array([["a"] * 4] * 3)
    np.savez(tmp_path / "tracked_flame_params_2.npz", **data)
    with pytest.raises(TrackerOutputError, match="'expr' has dtype <U1, expected real numbers"):
        read_tracked(tmp_path / "tracked_flame_params_2.npz")
    data = vhap_params(rng, 3)
    del data["eyes_pose"]
    np.savez(tmp_path / "tracked_flame_params_3.npz", **data)
    with pytest.raises(TrackerOutputError, match="tracked_flame_params_3.npz: missing 'eyes_pose'"):
        read_tracked(tmp_path / "tracked_flame_params_3.npz", tracker="vhap")
