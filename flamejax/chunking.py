"""Fixed-size chunks over the frame axis: one compilation serves every sequence length.

    out, = map_chunks(lambda x: (jitted(x),), (frames,), chunk=256)

A jitted function is compiled once per input shape, so calling it on whole sequences of varying
length T compiles it once per T (seconds each at mesh size). Running it on chunks of a fixed
size -- the last one padded by repeating its final frame, the padding dropped from the outputs --
compiles it once, and bounds memory as well. The chunks are cut, padded and joined on the host
(NumPy): eager JAX slicing, repeating and concatenating would itself compile once per distinct
length (~0.1 s each, hundreds of them for a synthetic world's takes).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np


def padded_length(t: int, chunk: int) -> int:
    """``t`` rounded up to a whole number of chunks (a bucket: one compilation per bucket)."""
    return -(-t // chunk) * chunk


def map_chunks(fn: Callable, arrays: Sequence, chunk: int) -> list:
    """Apply ``fn(*parts) -> tuple of arrays`` to chunks of ``chunk`` frames of ``arrays`` (each
    (T, ...), same T) and concatenate each output along the frame axis (outputs must be (C, ...)).
    Returns a list with one (T, ...) JAX array per output of ``fn``."""
    arrays = [np.asarray(a) for a in arrays]
    t = arrays[0].shape[0]
    if t == 0:
        raise ValueError("map_chunks needs at least one frame")
    outs = []
    for start in range(0, t, chunk):
        part = [a[start:start + chunk] for a in arrays]
        n = part[0].shape[0]
        if n < chunk:
            part = [np.concatenate([a, np.repeat(a[-1:], chunk - n, 0)]) for a in part]
        outs.append([np.asarray(o)[:n] for o in fn(*part)])
    return [jnp.asarray(np.concatenate(o)) for o in zip(*outs)]
