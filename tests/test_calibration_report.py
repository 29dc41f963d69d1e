"""The calibration report (experiments/calibration_report.py) and the calibrated FLAME file's layout.

The report is written here for a made-up calibration of conftest's tiny world (the generic basis
plus a known change, numbers computed here), so that every number it shows can be checked against
an independent computation; tests/test_experiment_stages.py runs ``experiments.calibrate`` itself
and checks its report and FLAME files with :func:`check_report` and :func:`read_flame_pickle` /
:func:`check_flame2020_layout` below. The Markdown table is parsed here by a parser of its own,
the pickle read by a plain ``pickle.Unpickler`` restricted to an allow-list.
"""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from PIL import Image

from experiments.calibration_report import (FILES, CalibrationRun, control_change, coverage, expression_rows,
                                            pick_faces, solver_status, without_coefficients, write_report)
from flamejax.calibrate import CalibratedRig, SimonSaysData, calibrated_model
from flamejax.evaluate import calibration_samples
from flamejax.io import load_flame, save_flame
from flamejax.semantic.rig import SemanticRig, rig_vertices_frames

PERFORMER = "performer00"

# ---------------------------------------------------------------- checks shared with test_experiment_stages

# FLAME 2020's generic_model.pkl holds exactly these keys; flamejax adds its two component counts
FLAME2020_KEYS = {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "J",
                  "bs_style", "bs_type"}
FLAMEJAX_KEYS = {"flamejax_n_shape", "flamejax_n_expr"}
# what a FLAME pickle may name: NumPy arrays and dtypes (numpy 1.x and 2.x module paths), the
# CSC J_regressor (SciPy's old and new module paths); anything else (chumpy, code) is refused
ALLOWED_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("scipy.sparse._csc", "csc_matrix"),
                   ("scipy.sparse.csc", "csc_matrix"), ("scipy.sparse", "csc_matrix"), ("_codecs", "encode")}


class AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a FLAME model file")
        return super().find_class(module, name)


def read_flame_pickle(path) -> dict:
    """A FLAME .pkl read as FLAME code reads it (``pickle.load(f, encoding="latin1")``), restricted
    to :data:`ALLOWED_GLOBALS`."""
    with open(path, "rb") as fh:
        return AllowListUnpickler(fh, encoding="latin1").load()


def check_flame2020_layout(data: dict, n_vertices: int, n_faces: int) -> None:
    """FLAME 2020 generic_model.pkl's keys, types, shapes and dtypes (see FLAME's release and
    smplx.FLAME): shapedirs (V, 3, 300 + 100), posedirs (V, 3, 36), J_regressor a SciPy sparse
    (5, V), weights (V, 5), kintree_table (2, 5) with the root's parent 2**32 - 1, f (F, 3) uint32,
    all floats float64, plain NumPy (no chumpy)."""
    assert FLAME2020_KEYS <= set(data) and set(data) - FLAME2020_KEYS <= FLAMEJAX_KEYS, sorted(data)
    v = n_vertices
    for key, shape in (("v_template", (v, 3)), ("shapedirs", (v, 3, 400)), ("posedirs", (v, 3, 36)),
                       ("weights", (v, 5)), ("J", (5, 3))):
        assert type(data[key]) is np.ndarray, (key, type(data[key]))
        assert data[key].shape == shape and data[key].dtype == np.float64, (key, data[key].shape, data[key].dtype)
    assert type(data["f"]) is np.ndarray and data["f"].shape == (n_faces, 3) and data["f"].dtype == np.uint32
    assert scipy.sparse.issparse(data["J_regressor"]) and data["J_regressor"].format == "csc"
    assert data["J_regressor"].shape == (5, v) and data["J_regressor"].dtype == np.float64
    np.testing.assert_allclose(data["J_regressor"].sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(data["weights"].sum(1), 1, atol=1e-6)
    np.testing.assert_array_equal(data["kintree_table"], [[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    assert data["kintree_table"].dtype.kind in "iu"
    assert (data["bs_style"], data["bs_type"]) == ("lbs", "lrotmin")


def markdown_table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first table after ``heading`` -> (header, rows of cells); escaped pipes unescaped."""
    lines = text.splitlines()
    rows = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    header, separator, *body = rows
    assert all(set(c) <= set("-:") for c in separator)
    return header, body


def check_png(path) -> np.ndarray:
    """A valid PNG with something drawn on it -> its pixels (H, W, 3) uint8."""
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert min(pixels.shape[:2]) >= 200
    assert np.mean(np.any(pixels < 240, -1)) > 0.02                    # not blank
    codes = pixels.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    assert len(np.unique(codes)) > 50                                    # not a flat fill
    return pixels


def check_report(folder: Path, numbers: dict) -> str:
    """report.md and its files in ``folder``: every file of FILES written (no temporary left), the
    residual table's numbers those of ``numbers`` (calibration.json), the figures valid PNGs
    embedded by relative paths -> the Markdown."""
    folder = Path(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES.values())
    text = (folder / FILES["report"]).read_text()
    header, rows = markdown_table(text, "## Residual per Simon-Says expression")
    assert header == ["expression", "samples", "before (mm)", "after (mm)", "improvement (mm)", "improvement (%)"]
    per = numbers["per_expression"]
    assert [r[0] for r in rows] == list(per)          # every expression calibrated on, in Simon-Says order
    for name, samples, before, after, gain, pct in rows:
        assert int(samples) >= 1
        assert float(before) == pytest.approx(per[name]["before_mm"], abs=5.1e-5)   # printed to 0.1 um
        assert float(after) == pytest.approx(per[name]["after_mm"], abs=5.1e-5)
        assert float(gain) == pytest.approx(per[name]["before_mm"] - per[name]["after_mm"], abs=5.1e-5)
        if per[name]["before_mm"] > 1e-3:
            expected = 100 * (1 - per[name]["after_mm"] / per[name]["before_mm"])
            assert float(pct) == pytest.approx(expected, abs=0.051)
    assert f"{numbers['objective_before']:.4f} → {numbers['objective_after']:.4f}" in text
    assert f"in {numbers['iterations']} iterations" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(FILES[k] for k in ("residuals", "objective", "faces", "control_change"))
    for link in links:
        assert not Path(link).is_absolute() and (folder / link).is_file()
        check_png(folder / link)
    return text


# ---------------------------------------------------------------- the helpers


def test_coverage_and_rows():
    names = ("Neutral", "Smile", "Jaw Open", "Pout")
    hold = np.array([-1, 0, 0, -1, 1, 1, -1, 2, -1])
    expression = np.array([0, 1, 2])
    cover = coverage(hold, expression, names)
    assert cover == {"frames": 9, "labelled": 5, "unlabelled": 4, "samples": 3,
                     "expressions": ["Neutral", "Smile", "Jaw Open"], "missing": ["Pout"]}
    numbers = {"per_expression": {"Neutral": {"before_mm": 0.0, "after_mm": 0.0},
                                  "Smile": {"before_mm": 2.0, "after_mm": 0.5},
                                  "Jaw Open": {"before_mm": 1.0, "after_mm": 1.25}}}
    rows = expression_rows(numbers, expression, names)
    assert [(r["expression"], r["samples"], r["improvement_mm"], r["improvement_pct"]) for r in rows] == \
        [("Neutral", 1, 0.0, 0.0), ("Smile", 1, 1.5, 75.0), ("Jaw Open", 1, -0.25, -25.0)]
    assert pick_faces(rows, 1) == [2, 1]          # the worst after calibration, then the most improved
    assert pick_faces(rows, 2) == [2, 1, 0]       # at most 2n rows: all, worst first


def test_solver_status():
    base = {"stalled": False, "gradient_norm": 1e-5, "iterations": 12}
    assert solver_status(base, tol=1e-4, maxiter=30) == "converged"
    assert solver_status({**base, "stalled": True}, tol=1e-4, maxiter=30) == "stalled"
    assert solver_status({**base, "gradient_norm": 1e-2, "iterations": 30}, tol=1e-4, maxiter=30) == \
        "stopped at maxiter"


def test_without_coefficients():
    # 2 expression rows + 3 jaw rows; control 0 drives expression 0, control 1 only the jaw
    basis = np.zeros((5, 2))
    basis[0, 0], basis[2, 1] = 2.0, 0.3
    rig = SemanticRig(jnp.asarray(basis), jnp.zeros(5), n_expr=2)
    controls = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 1.0]])
    names = ("Neutral", "Smile", "Jaw Open", "Smile + Jaw", "Unused")
    assert without_coefficients(rig, controls, np.arange(4), names) == ["Neutral", "Jaw Open"]


def test_control_change_is_each_columns_motion():
    rng = np.random.default_rng(0)
    neutral = rng.normal(size=(2, 7, 3))
    full = neutral[:, None] + rng.normal(size=(2, 4, 7, 3)) * 1e-3
    full[1, 2] = full[0, 2] - neutral[0] + neutral[1]     # control 2's motion unchanged
    c = control_change((neutral[0], neutral[1]), (full[0], full[1]))
    motion = full - neutral[:, None]
    np.testing.assert_allclose(c["peak_before_mm"], np.linalg.norm(motion[0], axis=-1).max(-1) * 1e3)
    np.testing.assert_allclose(c["peak_after_mm"], np.linalg.norm(motion[1], axis=-1).max(-1) * 1e3)
    d = np.linalg.norm(motion[1] - motion[0], axis=-1) * 1e3
    np.testing.assert_allclose(c["peak_change_mm"], d.max(-1))
    np.testing.assert_allclose(c["rms_change_mm"], np.sqrt((d ** 2).mean(-1)))
    assert c["peak_change_mm"][2] < 1e-9


# ---------------------------------------------------------------- the report of a made-up calibration


@pytest.fixture(scope="module")
def made_up(tiny_world):
    """A calibration of performer00 (OS1) with a known result: the generic basis plus a change of
    the first 6 expression components; its numbers computed here. One expression (Eyes Wide)
    left out of the samples (so: missing)."""
    model, rig = tiny_world.generic.model, tiny_world.generic.rig
    names = tiny_world.control_set.simon_says.expression_names
    seq, _, data = calibration_samples(tiny_world, PERFORMER, "OS1")
    keep = np.asarray(data.expression) != names.index("Eyes Wide")
    data = SimonSaysData(*(jnp.asarray(np.asarray(x)[keep]) for x in data))
    delta = np.zeros(model.exprdirs.shape, np.float32)
    delta[:6] = np.random.default_rng(1).normal(0, 2e-4, delta[:6].shape)
    calibrated = CalibratedRig(model.exprdirs + delta, rig)
    beta = jnp.asarray(tiny_world.performers[PERFORMER].beta, model.dtype)

    def residuals(exprdirs):
        meshes = np.asarray(rig_vertices_frames(model, rig, data.controls, shape=beta, exprdirs=exprdirs))
        w = np.asarray(data.weights)
        return np.sqrt((w * ((meshes - np.asarray(data.vertices)) ** 2).sum(-1)).sum(-1) / w.sum(-1))

    before, after = residuals(model.exprdirs), residuals(calibrated.exprdirs)
    expression = np.asarray(data.expression)
    numbers = {"performer": PERFORMER, "tracked_by": "OS1", "iterations": 3, "objective_before": 2.5,
               "objective_after": 1.25, "gradient_norm": 5e-5, "residual_before_mm": float(before.mean() * 1e3),
               "residual_after_mm": float(after.mean() * 1e3), "stalled": False, "combination_drift_max_mm": 0.01,
               "per_expression": {names[e]: {"before_mm": float(before[expression == e][0] * 1e3),
                                             "after_mm": float(after[expression == e][0] * 1e3)} for e in expression},
               "history": [2.5, 1.5, 1.26, 1.25], "seconds": 0.1}
    run = CalibrationRun(PERFORMER, "OS1", model, rig, beta, data, np.asarray(seq.hold), calibrated, numbers,
                         names, tiny_world.control_set.names, (before, after),
                         {"parameters": "exprdirs", "tol": 1e-4, "maxiter": 30, "calibration_frames": "mean"})
    return run, delta


def test_report_shows_the_calibrations_numbers(made_up, tmp_path):
    run, delta = made_up
    paths = write_report(tmp_path / "report", run)
    assert set(paths) == set(FILES) and all(p.parent == tmp_path / "report" for p in paths.values())
    text = check_report(tmp_path / "report", run.numbers)
    assert "**expressions missing**: Eyes Wide (no labelled hold frame)" in text
    assert "**Simon-Says samples used**: 19 " in text and "**converged**" in text
    # the jaw's own expressions are out of an expression-basis calibration's reach
    reach = re.search(r"Out of this calibration's reach: ([^(]*) \(", text).group(1).split(", ")
    assert "Jaw Open" in reach and "Neutral" in reach and "Smile (corner pull)" not in reach
    # the heat maps are drawn: magma colours (red, not grey) in the face figure
    faces = check_png(paths["faces"]).astype(int)
    assert np.sum((faces[..., 0] - faces[..., 2] > 60) & (faces[..., 0] > 150)) > 200

    # control_change.csv: every control, most changed first, each the change of its column's motion
    with open(paths["control_change_csv"]) as fh:
        rows = list(csv.DictReader(fh))
    names = run.control_names
    assert sorted(r["control"] for r in rows) == sorted(names)
    change = [float(r["peak_change_mm"]) for r in rows]
    assert change == sorted(change, reverse=True) and change[0] > 0.01
    k = names.index(rows[0]["control"])
    # rows 0 (neutral) and 1 (control k alone) of an array shaped like the samples' controls:
    # the fixture's compiled program again
    controls = np.zeros(np.shape(run.data.controls))
    controls[1, k] = 1
    meshes = [np.asarray(rig_vertices_frames(run.model, run.rig, jnp.asarray(controls, run.model.dtype),
                                             shape=run.beta, exprdirs=e))
              for e in (run.model.exprdirs, run.calibrated.exprdirs)]
    motion = [m[1] - m[0] for m in meshes]
    assert float(rows[0]["peak_change_mm"]) == pytest.approx(
        np.linalg.norm(motion[1] - motion[0], axis=-1).max() * 1e3, rel=1e-4)
    assert float(rows[0]["peak_before_mm"]) == pytest.approx(np.linalg.norm(motion[0], axis=-1).max() * 1e3, rel=1e-4)
    # a control no expression coefficient of the changed components reaches does not change
    theta = np.asarray(run.rig.basis)[:run.rig.n_expr]
    untouched = [names[i] for i in range(len(names)) if not np.any(theta[:6, i])]
    if untouched:
        assert all(float(r["peak_change_mm"]) < 1e-4 for r in rows if r["control"] in untouched)


def test_saved_pickle_is_flame2020s_layout(made_up, tmp_path):
    """save_flame's .pkl of a calibrated model: FLAME 2020's layout read by plain pickle; the
    expression columns are the calibrated basis, the identity columns the generic ones; the .npz
    and load_flame agree."""
    run, _ = made_up
    model = calibrated_model(run.model, run.calibrated)
    save_flame(model, tmp_path / "flame.pkl")
    save_flame(model, tmp_path / "flame.npz")
    data = read_flame_pickle(tmp_path / "flame.pkl")
    check_flame2020_layout(data, model.n_vertices, len(model.faces))
    n_expr = model.n_expr
    np.testing.assert_array_equal(data["shapedirs"][:, :, 300:300 + n_expr],
                                  np.transpose(np.asarray(run.calibrated.exprdirs, np.float64), (1, 2, 0)))
    np.testing.assert_array_equal(data["shapedirs"][:, :, :model.n_shape],
                                  np.transpose(np.asarray(run.model.shapedirs[:model.n_shape], np.float64), (1, 2, 0)))
    assert not np.any(data["shapedirs"][:, :, 300 + n_expr:])
    npz = np.load(tmp_path / "flame.npz")
    for key in ("v_template", "shapedirs", "posedirs", "weights", "f", "kintree_table"):
        np.testing.assert_array_equal(npz[key], data[key])
    np.testing.assert_array_equal(npz["J_regressor"], data["J_regressor"].toarray())
    for path in (tmp_path / "flame.pkl", tmp_path / "flame.npz"):
        back = load_flame(path)
        for field in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights", "faces"):
            np.testing.assert_array_equal(np.asarray(getattr(back, field)), np.asarray(getattr(model, field)), field)


def test_smplx_loads_the_calibrated_pickle(made_up, tmp_path):
    """smplx.FLAME (optional 'compare' extra) reads the calibrated pkl and puts the calibrated
    basis where FLAME's expression coefficients act."""
    torch = pytest.importorskip("torch", reason="torch not installed (optional 'compare' extra)")
    smplx = pytest.importorskip("smplx", reason="smplx not installed (optional 'compare' extra)")
    from flamejax.io import save_ringnet_embedding

    run, _ = made_up
    model = calibrated_model(run.model, run.calibrated)
    save_flame(model, tmp_path / "FLAME_NEUTRAL.pkl")
    save_ringnet_embedding(model.landmarks, tmp_path / "flame_static_embedding.pkl",
                           tmp_path / "flame_dynamic_embedding.npy")
    expression = np.zeros((1, 100))
    expression[0, :6] = [1.5, -1.0, 0.5, 2.0, -0.5, 1.0]
    flame = smplx.FLAME(model_path=str(tmp_path), num_betas=300, num_expression_coeffs=100, batch_size=1,
                        dtype=torch.float64, static_landmark_embedding_path=str(tmp_path / "flame_static_embedding.pkl"),
                        dynamic_landmark_embedding_path=str(tmp_path / "flame_dynamic_embedding.npy"))
    with torch.no_grad():
        vertices = flame(expression=torch.from_numpy(expression)).vertices.numpy()[0]
    exprdirs = np.asarray(run.calibrated.exprdirs, np.float64)
    expected = np.asarray(model.v_template, np.float64) + np.einsum("e,evx->vx", expression[0, :model.n_expr], exprdirs)
    # zero pose: the mesh is the template plus the expression blend (no rotation acts)
    np.testing.assert_allclose(vertices, expected, atol=1e-6)
