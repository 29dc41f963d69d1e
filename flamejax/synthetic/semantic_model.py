"""The generic synthetic FLAME model *of the semantic world*, and its fitted semantic basis B.

    world = make_generic_semantic_model(seed=0, size="small")
    world.model      # FlameModel: identity basis of make_flame, expression basis rebuilt from the rig
    world.target     # TargetRig: the 122 named deformations (the semantic truth)
    world.rig        # SemanticRig B (103, K), fitted from the target rig (jaw convention "xyz")
    world.residual   # (K,) RMS metres: how well B reproduces each control of the target rig

Why it is built this way: in the real world FLAME's 100 expression modes are a PCA of many
people's scans, so each mode mixes several muscle actions and none is a named control. Here the
"scans" are many people's random sparse activations of the target rig (each person with their
own per-control gains), and the generic expression basis is their PCA (second moment about the
neutral, std-scaled, as :func:`flamejax.synthetic.bases.pca_basis` does). The target rig has
K = 122 controls but FLAME keeps 100 modes, so the basis cannot hold every control exactly: a
semantic basis B fitted to the target rig by :func:`flamejax.semantic.fit_semantic_rig` is good
but not exact, with a per-control residual, as the authors' B is. The rig's jaw *rotation* never
enters the PCA: it stays in FLAME's jaw_pose (B's last three rows), only the jaw controls'
skin offsets (if any) do.

The rig alone spans only ~98 directions (its 122 controls share a lip vocabulary and three are
pure jaw rotations), fewer than FLAME's 100 modes. Real faces also do things no rig control
does, so the population adds ``n_extra`` small random local bumps on the face (signed, sparse):
they fill the tail of the basis and compete with the rig's weakest directions for the 100 slots,
one more reason B is not exact.

Everything is deterministic given the arguments (NumPy generators derived from the seed).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flamejax.flame import FlameModel, FlameParams, bind_identity, flame_forward
from flamejax.semantic import SemanticRig, fit_semantic_rig, load_control_set
from flamejax.synthetic import make_flame, make_head, rigging
from flamejax.synthetic.bases import expression_atoms, pca_basis
from flamejax.synthetic.target_rig import TargetRig, make_target_rig, rig_flame_model, rig_jaw_pose

# Independent streams (spawned from the seed with this tag) so that e.g. the population size
# never changes the target rig. The tag keeps them apart from make_flame's own streams.
_TAG = 0x5E3A
_STREAM_RIG, _STREAM_POPULATION, _STREAM_EXTRA = range(3)


class GenericSemanticModel(NamedTuple):
    """model: the generic FlameModel (n_shape identity + n_expr expression components, metres);
    target: the TargetRig it was built from (K controls); rig: the fitted SemanticRig,
    basis (n_expr + 3, K), jaw convention "xyz", offset 0; residual (K,) RMS vertex error
    (metres, all vertices) of B against each control of the target rig at full activation;
    expr_std (n_expr,) the PCA standard deviations of the expression modes (decreasing);
    activations (N, K) the population's rig-control activations the PCA was taken from (the
    out-of-rig bumps' activations are not kept)."""

    model: FlameModel
    target: TargetRig
    rig: SemanticRig
    residual: np.ndarray
    expr_std: np.ndarray
    activations: np.ndarray


def population_activations(mirror: np.ndarray, n_people: int, frames_per_person: int,
                           rng: np.random.Generator, p_active=0.08,
                           gain_sigma: float = 0.3, p_symmetric: float = 0.6) -> np.ndarray:
    """(n_people * frames_per_person, K) random sparse control activations of many people.

    Each frame switches each control on with probability ``p_active`` (scalar or (K,)) at
    intensity U(0.2, 1);
    a left control that is on brings its mirror twin along with probability ``p_symmetric``
    (faces move mostly symmetrically). Each person scales every control by their own gain
    exp(N(0, gain_sigma)): people differ in how strongly they do things, which is what makes the
    population's modes person-averaged mixtures rather than the rig's own controls.
    mirror (K,): each control's mirror twin index (itself when centred).
    """
    mirror = np.asarray(mirror)
    k = len(mirror)
    n = n_people * frames_per_person
    on = rng.uniform(size=(n, k)) < np.broadcast_to(np.asarray(p_active, float), (k,))
    act = on * rng.uniform(0.2, 1.0, size=(n, k))
    left = np.flatnonzero(mirror > np.arange(k))          # one of each pair (the lower index)
    both = rng.uniform(size=(n, len(left))) < p_symmetric
    twin = mirror[left]
    copied = act[:, left] * rng.uniform(0.8, 1.2, size=(n, len(left)))
    act[:, twin] = np.where(both & (act[:, left] > 0), copied, act[:, twin])
    gains = np.exp(rng.normal(0.0, gain_sigma, size=(n_people, k)))
    return act * np.repeat(gains, frames_per_person, axis=0)


def extra_fields(mesh, n_extra: int, rng: np.random.Generator) -> np.ndarray:
    """(n_extra, V, 3) small random local bumps on the face (sub-millimetre, metres): the
    population's deformations outside the rig (those of :func:`expression_atoms`)."""
    if n_extra == 0:
        return np.zeros((0,) + mesh.vertices.shape)
    weights = rigging.skinning_weights(mesh)
    joints = rigging.joint_regressor(mesh) @ mesh.vertices
    atoms, _ = expression_atoms(mesh, weights, joints, rng, n_random=n_extra)
    return atoms[-n_extra:]


def target_rig_targets(model: FlameModel, target: TargetRig) -> jnp.ndarray:
    """(K, V, 3) the target rig's mesh with each control fully on (zero identity), metres:
    the per-control targets B is fitted to."""
    rig_model = rig_flame_model(model, target)
    eye = jnp.eye(len(target.names), dtype=model.dtype)

    def one(c):
        jaw = rig_jaw_pose(target, c).astype(model.dtype)
        return flame_forward(rig_model, FlameParams(expression=c, jaw_pose=jaw)).vertices

    return jax.jit(jax.vmap(one))(eye)  # jit: one compilation, not one per primitive


def make_generic_semantic_model(seed: int = 0, size="small", names: Optional[Sequence[str]] = None,
                                *, n_shape: int = 300, n_expr: int = 100, n_people: int = 400,
                                frames_per_person: int = 10, p_active: float = 0.08,
                                gain_sigma: float = 0.3, size_balance: float = 1.0,
                                n_extra: int = 40, p_extra: float = 0.05, ridge: float = 1e-12, n_steps: int = 8,
                                batch_size: Optional[int] = None,
                                dtype=jnp.float32) -> GenericSemanticModel:
    """Build the generic model, the target rig and the fitted semantic basis (see module doc).

    seed: different seeds -> different heads, rigs, populations. size: as :func:`make_flame`.
    names: the K control names (default: the 122 MetaHuman raw controls, in their order).
    n_shape, n_expr: FLAME's identity / expression component counts. n_people x frames_per_person: the
    population (4000 samples by default, enough for a stable 122 x 122 second moment).
    p_active, gain_sigma: see :func:`population_activations`. size_balance: controls whose
    field is larger than the median one fire less often, p_k = p_active (median / |d_k|)^size_balance
    (capped at p_active): big motions (jaw thrust, cheek blow) are rare in real captures, and
    without this the largest field alone would be FLAME's first mode (cosine 0.98 with
    jawForward), a semantic mode FLAME does not have. n_extra, p_extra: number of
    out-of-rig bumps in the population and how often each fires (signed N(0, 1) when on). ridge, n_steps, batch_size:
    passed to :func:`fit_semantic_rig` (batch_size bounds memory at size "full").
    """
    names = tuple(load_control_set("metahuman").names if names is None else names)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, _TAG]).spawn(3)]
    mesh = make_head(seed, size=size)
    target = make_target_rig(mesh, names, rngs[_STREAM_RIG])
    norms = np.linalg.norm(target.deltas.reshape(len(names), -1), axis=1)
    median = np.median(norms[norms > 0])
    rarity = np.clip(median / np.maximum(norms, 1e-30), 0.0, 1.0) ** size_balance
    act = population_activations(target.mirror, n_people, frames_per_person, rngs[_STREAM_POPULATION],
                                 p_active=p_active * rarity, gain_sigma=gain_sigma)
    extra = extra_fields(mesh, n_extra, rngs[_STREAM_EXTRA])
    on = rngs[_STREAM_EXTRA].uniform(size=(len(act), n_extra)) < p_extra
    extra_act = on * rngs[_STREAM_EXTRA].normal(size=(len(act), n_extra))
    comps, std = pca_basis(np.concatenate([target.deltas, extra]),
                           n_expr, np.concatenate([act, extra_act], axis=1))
    # Identity basis, template, skinning and correctives from make_flame (same seed -> same head as
    # make_head above); only its expression basis is replaced by the rig population's PCA.
    base = make_flame(seed, size=size, n_shape=n_shape, n_expr=0, dtype=dtype)
    model = base.with_exprdirs(jnp.asarray(comps, dtype))
    targets = target_rig_targets(model, target)
    fit = fit_semantic_rig(bind_identity(model), targets, jaw_convention="xyz", ridge=ridge,
                           n_steps=n_steps, batch_size=batch_size, controls=names)
    return GenericSemanticModel(model=model, target=target, rig=fit.rig,
                                residual=np.asarray(fit.residual), expr_std=std, activations=act)
