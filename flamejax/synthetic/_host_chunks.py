"""Fixed-size frame chunks cut and padded on the host (NumPy), for the synthetic world.

:func:`flamejax.chunking.map_chunks` slices and pads JAX arrays eagerly; each eager slice,
repeat and concatenate is compiled once per distinct shape, i.e. once per sequence length and per
last-chunk size (a world's takes all have different lengths: ~0.1 s of compilation each, hundreds
of them per world). Here the slicing, padding and concatenation happen in NumPy, so only the
chunked function itself is compiled (once). The chunked function sees the same values, so the
results are bit-for-bit those of ``map_chunks``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np


def padded_length(t: int, chunk: int) -> int:
    """``t`` rounded up to a whole number of chunks (a bucket: one compilation per bucket)."""
    return -(-t // chunk) * chunk


def host_map_chunks(fn: Callable, arrays: Sequence, chunk: int) -> list:
    """:func:`flamejax.chunking.map_chunks` with the chunks cut, padded (the last one by
    repeating its final frame) and the outputs joined on the host. Returns JAX arrays."""
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
