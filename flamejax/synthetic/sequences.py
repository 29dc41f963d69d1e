"""Synthetic capture sequences: intended controls per frame (the ground truth) and head motion.

    seq = simon_says_sequence(cs, rng)            # the 20 prompted expressions, holds labelled
    rom1 = rom_sequence(cs, np.random.default_rng(1)); rom2 = rom_sequence(cs, np.random.default_rng(2))
    pan = pangram_sequence(cs, rng)               # speech: visemes -> mouth/jaw, blinks, brows
    verts = performer_vertices(model, rig, performer, seq.controls, seq.global_pose, seq.neck_pose)

A :class:`Sequence` holds what the performer *intends*; what their face does is the performer's
business (:mod:`.performers`). Controls are in [0, 1]. Head motion (global and neck axis-angle,
radians) is a sum of a few slow sinusoids: small (a few degrees) and smooth (C-infinity, a small
per-frame change), as a seated performer in front of a camera.

Viseme -> control table (:data:`VISEMES`; stems expand to all sides, e.g. ``mouthFunnel`` ->
UL, UR, DL, DR): the 15 Oculus/MPEG-4-style visemes, each a mouth/jaw pose in MetaHuman raw
controls. Phonemes (ARPAbet) come from a small pronouncing dictionary of the shipped pangrams
(:data:`PRONUNCIATIONS`) with a letter-rule fallback for other words. Co-articulation follows
Cohen & Massaro's dominance model: each phoneme has a target at its centre time and a dominance
kernel exp(-((t - t_i) / (width_i * dur_i))^2) * dominance_i; the controls at time t are the
dominance-weighted mean of the viseme targets (silence at both ends), so neighbouring visemes
blend smoothly and lip closures (P/B/M, F/V) dominate their neighbours, as in speech.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence as Seq

import numpy as np


class Sequence(NamedTuple):
    """name; controls (T, K) float32 intended controls in [0, 1] (ground truth); hold (T,) int32
    index of the Simon-Says expression on labelled hold frames, else -1; global_pose and
    neck_pose (T, 3) float32 axis-angle radians; fps frames per second."""

    name: str
    controls: np.ndarray
    hold: np.ndarray
    global_pose: np.ndarray
    neck_pose: np.ndarray
    fps: float


@dataclasses.dataclass(frozen=True)
class SequenceConfig:
    """Lengths (seconds) and sizes of the generated sequences. Defaults: a calm, ~40 s
    Simon-Says capture (ramps of 0.4 s read as deliberate; 0.8 s holds give ~24 labelled frames
    per expression), ROM takes of ~1 min (2,900 frames), pangram at ~11 phonemes/s (conversational speech).

    fps: frame rate. ramp, hold, rest: Simon-Says event timing. rom_timing_jitter: ROM events'
    durations are scaled by U(1 - j, 1 + j). rom_singles, rom_pairs: number of single/paired
    control events in a ROM take; rom_intensity: their peak range. phoneme_s: mean phoneme
    duration; blink_interval_s: mean time between blinks; blink_s: a blink's length.
    head_global, head_neck: amplitude (radians) of the global / neck sway per axis.
    head_freq: range (Hz) of the sway's sinusoids. text: the pangram(s) spoken.
    """

    fps: float = 30.0
    ramp: float = 0.4
    hold: float = 0.8
    rest: float = 0.4
    rom_timing_jitter: float = 0.4
    rom_singles: int = 20
    rom_pairs: int = 10
    rom_intensity: tuple = (0.3, 1.0)
    phoneme_s: float = 0.09
    blink_interval_s: float = 3.0
    blink_s: float = 0.2
    head_global: float = 0.04
    head_neck: float = 0.025
    head_freq: tuple = (0.05, 0.4)
    text: str = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."


# ---------------------------------------------------------------------------------------------
# Building blocks


def _frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def _envelope(n_in: int, n_hold: int, n_out: int) -> np.ndarray:
    """(n_in + n_hold + n_out,) smoothstep ramp up, flat 1, smoothstep ramp down."""
    def ramp(n):
        t = (np.arange(n) + 1.0) / (n + 1.0)
        return t * t * (3.0 - 2.0 * t)
    return np.concatenate([ramp(n_in), np.ones(n_hold), ramp(n_out)[::-1]])


def _expand(names: Seq[str], stem: str) -> list[int]:
    """Indices of the controls named ``stem`` or ``stem`` + a side suffix (L R UL UR DL DR)."""
    sides = ("", "L", "R", "UL", "UR", "DL", "DR")
    idx = [i for i, n in enumerate(names) if n in {stem + s for s in sides}]
    if not idx:
        raise KeyError(f"no control for {stem!r} in this control set (MetaHuman names expected)")
    return idx


def _vector(names: Seq[str], table: dict) -> np.ndarray:
    """(K,) control vector from {stem: value}."""
    c = np.zeros(len(names))
    for stem, value in table.items():
        c[_expand(names, stem)] = value
    return c


def head_motion(n: int, cfg: SequenceConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(global (n, 3), neck (n, 3)) axis-angle: per axis, 3 sinusoids of frequency in
    ``head_freq`` with random phases, normalised to the configured amplitude."""
    t = np.arange(n) / cfg.fps
    out = []
    for amp in (cfg.head_global, cfg.head_neck):
        freq = rng.uniform(*cfg.head_freq, size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, size=(3, 3))
        weight = rng.uniform(0.3, 1.0, size=(3, 3))
        motion = np.einsum("aw,awt->ta", weight, np.sin(2 * np.pi * freq[..., None] * t + phase[..., None]))
        out.append((amp * motion / weight.sum(1)).astype(np.float32))
    return out[0], out[1]


def _events_sequence(name: str, names, events, cfg: SequenceConfig, rng) -> Sequence:
    """Sequential events (target (K,), label, n_in, n_hold, n_out, n_rest) -> a Sequence; the
    hold frames of labelled events carry the label. Starts with a rest."""
    n_lead = _frames(cfg.rest, cfg.fps)
    total = n_lead + sum(e[2] + e[3] + e[4] + e[5] for e in events)
    controls = np.zeros((total, len(names)))
    hold = np.full(total, -1, np.int32)
    t = n_lead
    for target, label, n_in, n_hold, n_out, n_rest in events:
        env = _envelope(n_in, n_hold, n_out)
        controls[t:t + len(env)] += env[:, None] * target
        if label >= 0:
            hold[t + n_in:t + n_in + n_hold] = label
        t += len(env) + n_rest
    g, nk = head_motion(total, cfg, rng)
    return Sequence(name, np.clip(controls, 0, 1).astype(np.float32), hold, g, nk, cfg.fps)


# ---------------------------------------------------------------------------------------------
# Simon-Says and range of motion


def simon_says_sequence(control_set, rng: np.random.Generator,
                        cfg: SequenceConfig = SequenceConfig()) -> Sequence:
    """Each Simon-Says expression in file order: ramp in, hold (labelled with its index), ramp
    out, rest. The only randomness is the head motion."""
    f = lambda s: _frames(s, cfg.fps)  # noqa: E731
    events = [(target, e, f(cfg.ramp), f(cfg.hold), f(cfg.ramp), f(cfg.rest))
              for e, target in enumerate(control_set.simon_says.targets)]
    return _events_sequence("simon_says", control_set.names, events, cfg, rng)


def rom_sequence(control_set, rng: np.random.Generator, cfg: SequenceConfig = SequenceConfig(),
                 name: str = "rom") -> Sequence:
    """A range-of-motion take: the Simon-Says expressions (full intensity, shuffled, holds
    labelled) interleaved with ``rom_singles`` single controls and ``rom_pairs`` pairs of
    controls (a mirror pair moves together half the time) at intensities in ``rom_intensity``,
    every event with jittered timing. ROM 1 and ROM 2 are two seeds."""
    names = control_set.names
    k = len(names)
    mirror = control_set.mirror_indices
    j = cfg.rom_timing_jitter

    def timing():
        s = rng.uniform(1 - j, 1 + j, size=4)
        return (_frames(cfg.ramp * s[0], cfg.fps), _frames(cfg.hold * s[1], cfg.fps),
                _frames(cfg.ramp * s[2], cfg.fps), _frames(cfg.rest * s[3], cfg.fps))

    events = [(t, e, *timing()) for e, t in enumerate(control_set.simon_says.targets)]
    for _ in range(cfg.rom_singles):
        c = np.zeros(k)
        i = int(rng.integers(k))
        c[i] = rng.uniform(*cfg.rom_intensity)
        if rng.uniform() < 0.5:       # performers often do both sides at once
            c[mirror[i]] = c[i]
        events.append((c, -1, *timing()))
    for _ in range(cfg.rom_pairs):
        c = np.zeros(k)
        a, b = rng.choice(k, size=2, replace=False)
        c[a], c[b] = rng.uniform(*cfg.rom_intensity, size=2)
        events.append((c, -1, *timing()))
    order = rng.permutation(len(events))
    return _events_sequence(name, names, [events[i] for i in order], cfg, rng)


# ---------------------------------------------------------------------------------------------
# Speech

# Viseme -> control stems (values at full articulation). Jaw opening is moderate: speech rarely
# opens the jaw past half of jawOpen.
VISEMES: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"mouthLipsTogether": 0.7, "mouthPress": 0.4, "jawOpen": 0.05},      # p b m
    "FF": {"mouthLowerLipBite": 0.6, "mouthUpperLipRaise": 0.15, "jawOpen": 0.1},  # f v
    "TH": {"jawOpen": 0.18, "mouthUpperLipRaise": 0.15, "mouthLowerLipDepress": 0.1},
    "DD": {"jawOpen": 0.2, "mouthStretch": 0.1},                                  # t d
    "kk": {"jawOpen": 0.28, "mouthStretch": 0.05},                                # k g ng
    "CH": {"mouthFunnel": 0.5, "mouthLipsTowards": 0.3, "jawOpen": 0.15},         # ch jh sh zh
    "SS": {"mouthStretch": 0.3, "jawOpen": 0.08, "mouthUpperLipRaise": 0.1},      # s z
    "nn": {"jawOpen": 0.2, "mouthStretch": 0.05},                                 # n l
    "RR": {"mouthLipsPurse": 0.3, "mouthFunnel": 0.2, "jawOpen": 0.15},           # r er
    "aa": {"jawOpen": 0.55, "mouthLowerLipDepress": 0.2},                         # aa ae ah ay aw
    "E":  {"jawOpen": 0.32, "mouthStretch": 0.35, "mouthCornerPull": 0.1},        # eh ey
    "ih": {"jawOpen": 0.22, "mouthStretch": 0.25},                                # ih iy y
    "oh": {"jawOpen": 0.42, "mouthFunnel": 0.5},                                  # ao ow oy
    "ou": {"jawOpen": 0.18, "mouthLipsPurse": 0.55, "mouthLipsTowards": 0.35, "mouthFunnel": 0.25},  # uw uh w
}
# Dominance of each viseme in the co-articulation blend: closures and labio-dentals win.
DOMINANCE = {"sil": 1.0, "PP": 3.0, "FF": 2.5, "CH": 1.5, "ou": 1.5, "oh": 1.2}

PHONEME_VISEME = {
    "P": "PP", "B": "PP", "M": "PP", "F": "FF", "V": "FF", "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD", "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH", "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn", "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa",
    "EH": "E", "EY": "E", "IH": "ih", "IY": "ih", "Y": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh", "UW": "ou", "UH": "ou", "W": "ou",
}

# ARPAbet for the words of the common pangrams (CMU-dictionary style, stress marks dropped).
PRONUNCIATIONS = {
    "the": "DH AH", "quick": "K W IH K", "brown": "B R AW N", "fox": "F AA K S",
    "jumps": "JH AH M P S", "over": "OW V ER", "lazy": "L EY Z IY", "dog": "D AO G",
    "pack": "P AE K", "my": "M AY", "box": "B AA K S", "with": "W IH DH", "five": "F AY V",
    "dozen": "D AH Z AH N", "liquor": "L IH K ER", "jugs": "JH AH G Z",
    "sphinx": "S F IH NG K S", "of": "AH V", "black": "B L AE K", "quartz": "K W AO R T S",
    "judge": "JH AH JH", "vow": "V AW", "how": "HH AW", "vexingly": "V EH K S IH NG L IY",
    "daft": "D AE F T", "zebras": "Z IY B R AH Z", "jump": "JH AH M P",
}
_LETTERS = {"a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH",
            "i": "IH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P",
            "q": "K", "r": "R", "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S",
            "y": "Y", "z": "Z"}
_DIGRAPHS = {"th": "DH", "sh": "SH", "ch": "CH", "ph": "F", "ng": "NG", "oo": "UW", "ee": "IY",
             "ck": "K", "qu": "K W", "ou": "AW", "ow": "OW"}


def phonemes(text: str) -> list[list[str]]:
    """ARPAbet phonemes per word of ``text``: the dictionary, else letter rules (digraphs first,
    doubled letters once)."""
    out = []
    for word in "".join(ch.lower() if ch.isalpha() else " " for ch in text).split():
        if word in PRONUNCIATIONS:
            out.append(PRONUNCIATIONS[word].split())
            continue
        ph, i = [], 0
        while i < len(word):
            if word[i:i + 2] in _DIGRAPHS:
                ph += _DIGRAPHS[word[i:i + 2]].split()
                i += 2
            else:
                if not (i and word[i] == word[i - 1]):
                    ph += _LETTERS[word[i]].split()
                i += 1
        out.append(ph)
    return out


def _coarticulate(names, visemes: list[str], centres: np.ndarray, durations: np.ndarray,
                  n: int, fps: float, width: float = 0.9) -> np.ndarray:
    """(n, K) dominance-weighted blend of viseme targets (Cohen-Massaro); ``visemes`` include
    silences, which pull the mouth back to rest."""
    t = np.arange(n) / fps
    targets = np.stack([_vector(names, VISEMES[v]) for v in visemes])            # (P, K)
    dom = np.array([DOMINANCE.get(v, 1.0) for v in visemes])
    w = dom * np.exp(-(((t[:, None] - centres) / (width * durations)) ** 2))     # (n, P)
    return (w @ targets) / np.maximum(w.sum(1, keepdims=True), 1e-12)


def pangram_sequence(control_set, rng: np.random.Generator,
                     cfg: SequenceConfig = SequenceConfig()) -> Sequence:
    """Speech of ``cfg.text``: phonemes -> visemes with jittered durations (word gaps are short
    silences, sentence ends longer ones), co-articulated mouth/jaw controls, blinks (both eyes,
    intervals ~ exponential around ``blink_interval_s``), and brow raises on some stressed words;
    no labelled holds."""
    names = control_set.names
    fps = cfg.fps
    visemes, durs = ["sil"], [0.4]
    words = phonemes(cfg.text)
    sentence_ends = {i for i, w in enumerate(cfg.text.split()) if w.endswith((".", "!", "?"))}
    word_times = []
    for wi, word in enumerate(words):
        word_times.append(sum(durs))
        for p in word:
            visemes.append(PHONEME_VISEME[p])
            durs.append(cfg.phoneme_s * rng.uniform(0.7, 1.4))
        visemes.append("sil")
        durs.append(0.35 if wi in sentence_ends else 0.06)
    durs[-1] = 0.5
    durations = np.array(durs)
    centres = np.cumsum(durations) - 0.5 * durations
    n = _frames(durations.sum(), fps)
    controls = _coarticulate(names, visemes, centres, durations, n, fps)

    # Blinks: a short closing, shorter hold, slower opening.
    blink = _vector(names, {"eyeBlink": 1.0})
    t = rng.exponential(cfg.blink_interval_s) * 0.5
    while (start := _frames(t, fps)) < n:
        env = _envelope(_frames(0.3 * cfg.blink_s, fps), _frames(0.15 * cfg.blink_s, fps),
                        _frames(0.55 * cfg.blink_s, fps))
        end = min(n, start + len(env))
        controls[start:end] += rng.uniform(0.85, 1.0) * env[:end - start, None] * blink
        t += max(1.0, rng.exponential(cfg.blink_interval_s))

    # Brows: raised on about a third of the words (emphasis), a slow bump over the word.
    brows = _vector(names, {"browRaiseIn": 1.0, "browRaiseOuter": 0.7})
    for wt in word_times:
        if rng.uniform() < 0.35:
            env = _envelope(_frames(0.15, fps), _frames(0.1, fps), _frames(0.25, fps))
            s = _frames(wt, fps)
            e = min(n, s + len(env))
            controls[s:e] += rng.uniform(0.2, 0.5) * env[:e - s, None] * brows
    g, nk = head_motion(n, cfg, rng)
    return Sequence("pangram", np.clip(controls, 0, 1).astype(np.float32),
                    np.full(n, -1, np.int32), g, nk, fps)
