"""Retargeting: a performer's tracked controls drive another face.

    meshes = retarget(model, rig, controls, shape=avatar_beta)                   # (T, V, 3)
    meshes = retarget(model, rig, controls, shape=beta, exprdirs=calibrated.exprdirs)

The controls carry the performance's semantics; the target's own identity (beta) and its own rig
(the generic expression basis, or a calibrated one for that target) decide the geometry, so the
performer's quirks do not travel. Canonical head pose unless poses are given.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from flamejax.chunking import map_chunks
from flamejax.flame import FlameModel, bind_identity
from flamejax.semantic.rig import SemanticRig, rig_vertices


@jax.jit
def _chunk(fixed, rig, controls, global_pose, neck_pose):
    def one(c, g, n):
        # a rig with neck rows drives the neck itself
        pose = dict(global_pose=g) if rig.has_neck else dict(global_pose=g, neck_pose=n)
        return rig_vertices(fixed, rig, c, **pose)
    return jax.vmap(one)(controls, global_pose, neck_pose)


def retarget(model: FlameModel, rig: SemanticRig, controls, *, shape: Optional[jnp.ndarray] = None,
             exprdirs: Optional[jnp.ndarray] = None, global_pose=None, neck_pose=None,
             chunk: int = 256) -> jnp.ndarray:
    """controls (T, K) in [0, 1] -> the target's meshes (T, V, 3) metres.

    model, rig: the target's FLAME model and semantic rig; shape (<=S,): the target identity;
    exprdirs (E, V, 3): the target's calibrated expression basis (default: the model's);
    global_pose, neck_pose: (T, 3) or (3,) axis-angle, default zero (neck_pose is ignored by a
    rig that drives the neck). chunk: frames per compiled call (flamejax.chunking)."""
    if exprdirs is not None:
        model = model.with_exprdirs(exprdirs)
    fixed = dataclasses.replace(bind_identity(model, shape), landmarks=None)
    dtype = fixed.dtype
    controls = jnp.asarray(controls, dtype)
    if controls.ndim != 2 or controls.shape[1] != rig.n_controls:
        raise ValueError(f"controls must be (T, {rig.n_controls}), got {controls.shape}")
    t = controls.shape[0]
    pose = lambda p: jnp.zeros((t, 3), dtype) if p is None else jnp.broadcast_to(jnp.asarray(p, dtype), (t, 3))  # noqa: E731
    meshes, = map_chunks(lambda c, g, n: (_chunk(fixed, rig, c, g, n),),
                         (controls, pose(global_pose), pose(neck_pose)), chunk)
    return meshes
