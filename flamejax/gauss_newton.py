"""Gauss-Newton normal equations of FLAME in (expression, jaw), without a per-frame Jacobian.

    grams = make_grams(fixed, n_expr=100)                     # once per model / identity / mask
    h, g, r = normal_equations(fixed, grams, psi, jaw, poses, target)
    # h (n+3, n+3) = J^T W J / sum(w), g (n+3,) = J^T W r / sum(w), r (V, 3) = FLAME - target

Used by everything that fits FLAME's expression and jaw to geometry (the simulated trackers,
rig-inversion tracking). Why it is fast: at fixed poses vertex v moves with the expression
coefficients psi by J_v psi, J_v = sum_j w_j(v) (W_j B_v + D_j), where B_v (3, n) is the
expression basis at v, W_j the joints' world rotations and D_j (3, n) how the joints' skinning
translations move with psi (through the joint regressor). So J^T W J for the expression block is
a contraction of per-model grams sum_v m_v w_j w_k B_v^T B_v (m_v the vertex weights) with
W_j^T W_k and D_j -- no (3V x n) Jacobian per frame -- and J^T W r is one pass of the basis over
M_v^T (m_v r_v). Only the jaw's 3 columns are differentiated (forward mode). Grams are built over
the *active* joints only (those whose weights touch a vertex the basis moves; FLAME's eye joints
are not), which is exact.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FixedIdentityFlame, FlameParams, _pose_matrices, _world_transforms, flame_forward_fixed


class Grams(NamedTuple):
    """Per-model constants (A active joints, n expression modes, V vertices, J joints):
    g (A*3, A*3, n, n) = sum_v m_v w_j w_k B_v[a]^T B_v[b] at [(j, a), (k, b)]; h (A, A, 3, n) =
    sum_v m_v w_j w_k B_v; s (J, J) = sum_v m_v w_j w_k; basis (n, 3, V) the B_v; joints (A,)
    int32 the active joints; weights (V,) the vertex weights m_v."""

    g: jnp.ndarray
    h: jnp.ndarray
    s: jnp.ndarray
    basis: jnp.ndarray
    joints: jnp.ndarray
    weights: jnp.ndarray


def active_joints(fixed: FixedIdentityFlame, n_expr: int) -> tuple[int, ...]:
    """Joints whose skinning weights overlap a vertex the first ``n_expr`` expression modes move
    (reads concrete arrays: decide it once per model, outside compiled code)."""
    moving = np.any(np.asarray(fixed.blenddirs[:n_expr]) != 0, axis=(0, 1))
    return tuple(int(j) for j in np.flatnonzero(np.any(np.asarray(fixed.weights)[:, moving] != 0, axis=1)))


def grams(fixed: FixedIdentityFlame, n_expr: int, joints: Optional[tuple[int, ...]] = None,
          weights: Optional[jnp.ndarray] = None) -> Grams:
    """The grams over ``joints`` (default: all; exact whenever they include :func:`active_joints`)
    with vertex weights ``weights`` (V,) (default ones). Traceable (use under jit)."""
    joints = tuple(range(fixed.weights.shape[0])) if joints is None else tuple(joints)
    basis = fixed.blenddirs[:n_expr]                                  # (n, 3, V)
    m = jnp.ones(basis.shape[-1], basis.dtype) if weights is None else jnp.asarray(weights, basis.dtype)
    w = fixed.weights
    wa = w[jnp.asarray(joints)]                                        # (A, V)
    x = (wa[:, None, None, :] * jnp.swapaxes(basis, 0, 1)[None]).reshape(len(joints) * 3, n_expr, -1)
    hi = jax.lax.Precision.HIGHEST
    g = jnp.einsum("pmv,qnv,v->pqmn", x, x, m, precision=hi)
    h = jnp.einsum("jv,kv,mav,v->jkam", wa, wa, basis, m, precision=hi)
    s = jnp.einsum("jv,kv,v->jk", w, w, m, precision=hi)
    return Grams(g, h, s, basis, jnp.asarray(joints, jnp.int32), m)


_grams_jit = jax.jit(grams, static_argnums=(1, 2))


def make_grams(fixed: FixedIdentityFlame, n_expr: int, weights: Optional[jnp.ndarray] = None) -> Grams:
    """:func:`grams` over the model's active joints, compiled (call outside jit)."""
    return _grams_jit(fixed, n_expr, active_joints(fixed, n_expr), weights)


def frame_vertices(fixed: FixedIdentityFlame, expression, jaw, global_pose, neck_pose, translation):
    """(V, 3) FLAME of a bound identity at expression (n,), jaw/global/neck axis-angle (3,), translation (3,)."""
    return flame_forward_fixed(fixed, FlameParams(expression=expression, jaw_pose=jaw, global_pose=global_pose,
                                                  neck_pose=neck_pose, translation=translation)).vertices


def normal_equations(fixed: FixedIdentityFlame, grams: Grams, psi, jaw, global_pose, neck_pose, translation,
                     target):
    """Gauss-Newton quantities of E(psi, jaw) = sum_v m_v |FLAME_v - target_v|^2 / sum_v m_v at
    one point: psi (n,), jaw (3,) axis-angle, poses (3,) each, target (V, 3) metres.

    Returns h (n+3, n+3) = J^T M J / sum(m), g (n+3,) = J^T M r / sum(m) (half E's gradient) and
    r (V, 3) = FLAME - target, with columns ordered (psi, jaw)."""
    n_expr = psi.shape[0]
    dtype = target.dtype
    w = fixed.weights
    m = grams.weights
    total = jnp.sum(m)

    def verts(jaw_):
        return frame_vertices(fixed, psi, jaw_, global_pose, neck_pose, translation)

    rot = _pose_matrices(FlameParams(global_pose=global_pose, neck_pose=neck_pose, jaw_pose=jaw), dtype)

    def skin_t(psi_):
        joints = fixed.j_rest + jnp.einsum("jxe,e->jx", fixed.j_exprdirs[..., :n_expr], psi_)
        world_r_, world_t = _world_transforms(rot, joints, fixed.parents)
        return world_t - jnp.einsum("jab,jb->ja", world_r_, joints)

    world_r, _ = _world_transforms(rot, fixed.j_rest, fixed.parents)
    d = jax.jacfwd(skin_t)(jnp.zeros((n_expr,), dtype))                # (J, 3, n), exact (linear)

    def jt(u):
        """J_psi^T u for u (..., V, 3) -> (..., n)."""
        m_rot = jnp.einsum("jv,jxa->vxa", w, world_r)                   # (V, 3, 3) blended rotations
        mu = jnp.einsum("vxa,...vx->...av", m_rot, u)
        wu = jnp.einsum("jv,...vx->...jx", w, u)
        # the basis (n, 3V) as the left operand: as the right one XLA copies it transposed per call
        flat = mu.reshape(mu.shape[:-2] + (-1,))
        return (jnp.matmul(grams.basis.reshape(n_expr, -1), flat.T).T
                + jnp.einsum("jxn,...jx->...n", d, wu))

    v, dv = jax.vmap(lambda t: jax.jvp(verts, (jaw,), (t,)), out_axes=(None, 0))(jnp.eye(3, dtype=dtype))
    r = v - target
    ra, da = world_r[grams.joints], d[grams.joints]
    c = jnp.einsum("jxa,kxb->jakb", ra, ra).reshape(grams.g.shape[0], grams.g.shape[1])
    cross = jnp.einsum("jkam,jxa,kxn->mn", grams.h, ra, da)
    h_pp = jnp.einsum("pq,pqmn->mn", c, grams.g) + cross + cross.T + jnp.einsum("jk,jxm,kxn->mn", grams.s, d, d)
    h_pj = jt(m[None, :, None] * dv).T                                 # (n, 3)
    h_jj = jnp.einsum("ivx,v,kvx->ik", dv, m, dv)
    h = jnp.block([[h_pp, h_pj], [h_pj.T, h_jj]]) / total
    g = jnp.concatenate([jt(m[:, None] * r), jnp.einsum("ivx,v,vx->i", dv, m, r)]) / total
    return h, g, r
