"""Proposing Simon-Says holds (flamejax.holds) on the tiny synthetic world's takes as OS1 and OS2
tracked them, against the true hold labels; lost frames; takes that do not split into the
prompts; and the entry point (experiments/label_simon_says.py) on a VHAP file end to end."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from flamejax.holds import HoldProposalError, motion_signal, proposal_table, propose_holds
from flamejax.io import read_tracked
from flamejax.io.labels import read_labels
from flamejax.synthetic.world import tracked_geometry

CONF = Path(__file__).resolve().parent.parent / "conf"
TAKES = [(tracker, performer) for tracker in ("OS1", "OS2") for performer in ("performer00", "performer01")]


def take(world, tracker, performer):
    """(expression (T, E), jaw (T, 3), true hold (T,)) of a performer's Simon-Says take."""
    seq = world.tracked[tracker][performer]["simon_says"]
    return (np.asarray(seq.expression, np.float64), np.asarray(seq.jaw_pose, np.float64),
            world.sequences[performer]["simon_says"].hold)


def agreement(hold, true, n_expr):
    """Per expression: precision (proposed frames in the true hold of the same expression) and
    recall (true hold frames proposed)."""
    precision = np.array([np.mean(true[hold == e] == e) if np.any(hold == e) else np.nan for e in range(n_expr)])
    recall = np.array([np.mean(hold[true == e] == e) for e in range(n_expr)])
    return precision, recall


@pytest.mark.parametrize("tracker, performer", TAKES)
def test_proposals_agree_with_the_true_holds(tiny_world, tracker, performer):
    cs = tiny_world.control_set
    expression, jaw, true = take(tiny_world, tracker, performer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # no extra episode to ignore on a clean take
        proposal = propose_holds(expression, jaw, None, cs)
    n = len(cs.simon_says.expression_names)
    precision, recall = agreement(proposal.hold, true, n)
    print(f"\n{tracker} {performer}: precision mean {np.nanmean(precision):.3f} min {np.nanmin(precision):.3f}, "
          f"recall mean {recall.mean():.3f} min {recall.min():.3f}\n" + proposal_table(proposal, cs))
    assert np.all(proposal.n_frames >= 12), proposal.n_frames     # every expression found, half its hold or more
    assert np.all(precision >= 0.8), dict(zip(cs.simon_says.expression_names, precision.round(3)))
    assert np.nanmean(precision) >= 0.95 and recall.mean() >= 0.7
    # The proposal's bookkeeping is consistent with its hold.
    for e in range(n):
        frames = np.flatnonzero(proposal.hold == e)
        assert frames[0] == proposal.first[e] and frames[-1] == proposal.last[e]
        assert len(frames) == proposal.n_frames[e] and proposal.n_invalid[e] == 0
    moving = np.arange(1, n)
    assert np.all(proposal.peak[moving] >= proposal.plateau[moving])
    assert np.all(proposal.plateau[moving] > 2 * proposal.plateau[0])     # Neutral is the quiet one
    assert proposal.units == "noise stds"


def test_from_vertices_and_plain_metric(tiny_world):
    cs = tiny_world.control_set
    _, _, true = take(tiny_world, "OS1", "performer00")
    vertices = tracked_geometry(tiny_world, "OS1", "performer00", "simon_says")
    proposal = propose_holds(vertices=vertices, simon_says=cs)
    precision, recall = agreement(proposal.hold, true, 20)
    assert np.all(precision >= 0.8) and recall.mean() >= 0.7, (precision, recall)
    plain = motion_signal(vertices=vertices, metric="plain")
    assert plain.units == "mm"
    # RMS over the whole head, mm: Jaw Open moves it most, a resting face hardly at all
    jaw_open = true == cs.simon_says.expression_names.index("Jaw Open")
    assert np.median(plain.motion[jaw_open]) > 5 and np.median(plain.motion[true == 0]) < 0.2
    expression, jaw, _ = take(tiny_world, "OS1", "performer00")
    proposal = propose_holds(expression, jaw, None, cs, metric="plain")
    assert proposal.units == "coefficient units"
    assert np.all(agreement(proposal.hold, true, 20)[0] >= 0.8)


def test_lost_frames_are_never_labelled(tiny_world):
    cs = tiny_world.control_set
    expression, jaw, true = take(tiny_world, "OS2", "performer01")
    clean = propose_holds(expression, jaw, None, cs)
    valid = np.ones(len(true), bool)
    lost = np.concatenate([np.flatnonzero(true == e)[[3, 4, 10]] for e in (0, 3, 16)])   # inside holds
    valid[lost] = False
    expression, jaw = expression.copy(), jaw.copy()
    expression[lost[:4]] = np.nan           # as a file has them: NaN (not even marked invalid) ...
    valid[lost[:4]] = True
    expression[lost[4:]], jaw[lost[4:]] = 0.0, 0.0   # ... or zeros marked invalid, as read_tracked leaves them
    proposal = propose_holds(expression, jaw, valid, cs)
    assert (proposal.hold[lost] == -1).all()
    assert proposal.n_invalid[0] == proposal.n_invalid[3] == proposal.n_invalid[16] == 3
    assert proposal.n_invalid.sum() == 9
    precision, _ = agreement(proposal.hold, true, 20)
    assert np.all(precision >= 0.8)
    # Interpolating over the lost frames leaves the proposal as it was elsewhere.
    others = np.setdiff1d(np.arange(len(true)), lost)
    assert np.mean(proposal.hold[others] == clean.hold[others]) > 0.98


def test_fewer_episodes_than_prompts_is_a_clear_error(tiny_world):
    cs = tiny_world.control_set
    expression, jaw, true = take(tiny_world, "OS1", "performer00")
    cut = np.flatnonzero(true == 10)[-1] + 8    # the recording stopped after Mouth Corner Depress
    with pytest.raises(HoldProposalError, match=r"found 10 activity episode\(s\) but 19 prompted expressions "
                                                r"move the face: lower min_activity \(now 0.1\)") as info:
        propose_holds(expression[:cut], jaw[:cut], None, cs)
    assert "min_gap_s" in str(info.value)
    # A too long min_gap_s merges neighbouring prompts: said the same way.
    with pytest.raises(HoldProposalError, match=r"found \d activity episode\(s\) but 19"):
        propose_holds(expression, jaw, None, cs, min_gap_s=0.5)


def test_extra_episodes_small_are_ignored_large_are_an_error(tiny_world):
    cs = tiny_world.control_set
    expression, jaw, true = take(tiny_world, "OS1", "performer00")
    n = len(true)
    # After the last prompt the performer does Jaw Open again (a large extra episode) ...
    again = np.flatnonzero(true == 16)
    extra = np.arange(again[0] - 8, again[-1] + 9)   # from the rest before it to the rest after it
    tail = np.arange(0, 40)                          # a rest after it: the take's first, neutral, frames
    big_e = np.concatenate([expression, expression[extra], expression[tail]])
    big_j = np.concatenate([jaw, jaw[extra], jaw[tail]])
    with pytest.raises(HoldProposalError, match=r"found 20 activity episodes but 19 .*the 1 smallest \(at frames 12\d-1\d\d .*"
                                                r"not clearly smaller than the others"):
        propose_holds(big_e, big_j, None, cs)
    # ... or faintly raises the brows: ignored, with a warning naming where (with min_activity
    # lowered so that it counts as an episode at all: by default it is below the radar).
    neutral = np.median(expression[true == 0], 0), np.median(jaw[true == 0], 0)
    brows = np.flatnonzero(true == 2)
    faint = np.arange(brows[0] - 8, brows[-1] + 9)
    small_e = np.concatenate([expression, neutral[0] + 0.1 * (expression[faint] - neutral[0]), expression[tail]])
    small_j = np.concatenate([jaw, neutral[1] + 0.1 * (jaw[faint] - neutral[1]), jaw[tail]])
    with pytest.warns(UserWarning, match=r"1 small extra activity episode\(s\) ignored at frames \d+-") as info:
        proposal = propose_holds(small_e, small_j, None, cs, min_activity=0.03)
    first = int(re.search(r"at frames (\d+)-", str(info[0].message)).group(1))
    assert n <= first < n + len(faint)
    assert (proposal.hold[n:] == -1).all()
    assert np.all(agreement(proposal.hold[:n], true, 20)[0] >= 0.8)


def test_prompt_order_and_bad_input(tiny_world):
    cs = tiny_world.control_set
    expression, jaw, true = take(tiny_world, "OS1", "performer00")
    # Only the first five prompts asked for: the take shows 19, so that is an error ...
    with pytest.raises(HoldProposalError, match=r"found 19 activity episodes but 4 prompted .*\.\.\. \(15 in all\)"):
        propose_holds(expression, jaw, None, cs, order=range(5))
    # ... unless the take is cut to them.
    cut = np.flatnonzero(true == 4)[-1] + 8
    proposal = propose_holds(expression[:cut], jaw[:cut], None, cs, order=range(5))
    assert np.all(proposal.n_frames[:5] > 10) and not proposal.n_frames[5:].any()
    with pytest.raises(ValueError, match="order must be distinct expression indices"):
        propose_holds(expression, jaw, None, cs, order=[0, 1, 1])
    with pytest.raises(ValueError, match="metric must be one of"):
        propose_holds(expression, jaw, None, cs, metric="cosine")
    with pytest.raises(ValueError, match="expression must be \\(T, E\\) and jaw_pose \\(T, 3\\)"):
        propose_holds(expression, jaw[:-1], None, cs)
    with pytest.raises(HoldProposalError, match="only 0 valid frame"):
        propose_holds(expression, jaw, np.zeros(len(true), bool), cs)


# ---------------------------------------------------------------------------------------------
# The entry point


def write_vhap(path, world, tracker, performer, first_id=1000, nan_frames=()):
    """The take as VHAP's tracked_flame_params_<epoch>.npz (float32, string timestep ids)."""
    seq = world.tracked[tracker][performer]["simon_says"]
    f32 = np.float32
    n = len(seq.expression)
    expr = np.array(seq.expression, f32)
    expr[list(nan_frames)] = np.nan
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "tracked_flame_params_30.npz", rotation=np.asarray(seq.global_pose, f32),
             translation=np.asarray(seq.translation, f32), neck_pose=np.asarray(seq.neck_pose, f32),
             jaw_pose=np.asarray(seq.jaw_pose, f32), eyes_pose=np.zeros((n, 6), f32),
             shape=np.asarray(seq.shape, f32), expr=expr,
             timestep_id=np.array([f"{first_id + i:05d}" for i in range(n)]))
    return path


def label_cli(args):
    return subprocess.run([sys.executable, "-m", "experiments.label_simon_says", *args], capture_output=True,
                          text=True, cwd=CONF.parent, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(CONF.parent)})


def test_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="label_simon_says", overrides=["input=x", "tracked_by=vhap"],
                      return_hydra_config=True)
    assert cfg.tracked_by == "vhap" and cfg.control_set == "metahuman" and cfg.output is None
    assert cfg.hydra.run.dir.startswith("outputs/label_simon_says/")
    assert set(cfg.proposer) == {"metric", "jaw_scale", "smooth_s", "min_gap_s", "min_activity", "min_prominence",
                                 "plateau_fraction", "ramp_slope", "quiet_fraction", "extra_ratio"}


@pytest.mark.slow
def test_entry_point_end_to_end(tiny_world, tmp_path):
    cs = tiny_world.control_set
    true = tiny_world.sequences["performer00"]["simon_says"].hold
    lost = np.flatnonzero(true == 5)[[2, 3]]
    vhap = write_vhap(tmp_path / "vhap_run", tiny_world, "OS2", "performer00", nan_frames=lost)
    output = tmp_path / "labels" / "performer00.yaml"
    out = label_cli([f"input={vhap}", "tracked_by=auto", "control_set=metahuman", f"output={output}",
                     f"hydra.run.dir={tmp_path / 'run'}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"wrote the proposed holds to {output}" in out.stdout
    assert "Jaw Open Extreme" in out.stdout and "(noise stds)" in out.stdout
    text = output.read_text()
    assert text.startswith("# PROPOSAL, to check against the video before calibrating")
    assert "2 lost by the tracker" in text
    seq = read_tracked(vhap)
    labels = read_labels(output, cs, seq.frame_ids)
    assert seq.frame_ids[0] == 1000 and (labels[lost] == -1).all()
    # the file is the library's proposal on the file's take, and agrees with the truth
    expected = propose_holds(seq.expression, seq.jaw_pose, seq.valid, cs)
    assert np.array_equal(labels, expected.hold)
    assert np.all(agreement(labels, true, 20)[0] >= 0.8)
    # A take cut short: exit status 1, the proposer's message, no labels file.
    short = tmp_path / "short"
    short.mkdir()
    data = dict(np.load(vhap / "tracked_flame_params_30.npz"))
    cut = np.flatnonzero(true == 8)[-1] + 8
    np.savez(short / "tracked_flame_params.npz", **{k: (v[:cut] if k != "shape" else v) for k, v in data.items()})
    out = label_cli([f"input={short}", f"output={tmp_path / 'short.yaml'}", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert out.returncode == 1
    assert "label_simon_says: cannot propose holds: found 8 activity episode(s) but 19 prompted" in out.stderr
    assert not (tmp_path / "short.yaml").exists()
    out = label_cli([f"input={vhap}", "+proposer.sigma=2", f"hydra.run.dir={tmp_path / 'run3'}"])
    assert out.returncode == 2 and "label_simon_says: bad config" in out.stderr
