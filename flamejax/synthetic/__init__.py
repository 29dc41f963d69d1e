"""The embedded synthetic world. This module: a procedural FLAME model.

    model = flamejax.synthetic.make_flame(seed=0)                 # ~5k vertices, 300 + 100 comps
    model = flamejax.synthetic.make_flame(seed=1, size="tiny")    # a few hundred, for tests

:func:`make_flame` builds a head in FLAME's exact structure (template, shape/expression PCA
bases, pose correctives, joint regressor, skinning weights, faces, 68 + 105 landmark embedding,
region masks), deterministically from the seed, in NumPy, in about a second at full size. It
looks like a head: face, nose, brows, eye sockets with separate eyeball spheres, lips with a
real cut between them (jaw_pose x > 0 opens the mouth), chin, jaw line, ears, an open neck.

Pieces (each usable on its own): :mod:`.head` geometry, :mod:`.rigging` weights/regressor/
correctives, :mod:`.bases` PCA bases (:func:`pca_basis` rebuilds a basis from any rig's
deformation fields and activations), :mod:`.landmarks`, :mod:`.regions` masks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from flamejax.flame import FLAME_PARENTS, FlameModel
from flamejax.landmarks import LandmarkEmbedding
from flamejax.synthetic import bases, fields, head, landmarks, regions, rigging
from flamejax.synthetic.bases import gaussian_pca, pca_basis
from flamejax.synthetic.head import SIZES, HeadMesh, Resolution, resolve_size
from flamejax.synthetic.landmarks import MEDIAPIPE_INDICES
from flamejax.synthetic.regions import MASK_NAMES

__all__ = ["MASK_NAMES", "MEDIAPIPE_INDICES", "SIZES", "HeadMesh", "Resolution", "bases", "fields",
           "gaussian_pca", "head", "landmarks", "make_flame", "make_head", "pca_basis", "regions",
           "rigging"]

# Independent random streams per part, so that e.g. n_shape never changes the expression basis.
_STREAM_SPEC, _STREAM_SHAPE, _STREAM_EXPR, _STREAM_POSE = range(4)


def _streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def make_head(seed: int = 0, *, size="full") -> HeadMesh:
    """The procedural neutral head mesh (NumPy, float64) that :func:`make_flame` rigs, with its
    bookkeeping (surface parameters, cuts, mirror map, eyeballs). ``size``: "full" (~5000
    vertices), "small" (~1200), "tiny" (~500) or a :class:`Resolution`."""
    spec = head.default_spec().jittered(_streams(seed)[_STREAM_SPEC])
    return head.build_head(spec, resolve_size(size))


def make_flame(seed: int = 0, *, size="full", n_shape: int = 300, n_expr: int = 100,
               dtype=jnp.float32) -> FlameModel:
    """A synthetic FLAME model, deterministic given the arguments (bit-identical arrays).

    seed: different seeds give different heads (proportions, features) and different bases.
    size: "full" (~5060 vertices / ~10000 faces, like FLAME 2020's 5023 / 9976), "small"
    (~1170 / ~2300), "tiny" (~500 / ~950) or an explicit :class:`Resolution`.
    n_shape, n_expr: numbers of identity and expression components. The components are a PCA
    of a fixed population, so a smaller n keeps the leading components of a larger one.
    dtype: floating dtype of the model's arrays (ids are int32).

    Units metres, +y up, +z out of the face; joints root, neck, jaw, left eye (+x), right eye.
    """
    if n_shape < 0 or n_expr < 0:
        raise ValueError("n_shape and n_expr must be non-negative")
    rngs = _streams(seed)
    mesh = make_head(seed, size=size)
    n_v = len(mesh.vertices)
    j_reg = rigging.joint_regressor(mesh)
    weights = rigging.skinning_weights(mesh)
    joints = j_reg @ mesh.vertices
    shape = bases.identity_basis(mesh, n_shape, rngs[_STREAM_SHAPE]) if n_shape else np.zeros((0, n_v, 3))
    expr = (bases.expression_basis(mesh, n_expr, weights, joints, rngs[_STREAM_EXPR]) if n_expr
            else np.zeros((0, n_v, 3)))
    posedirs = rigging.pose_correctives(mesh, weights, rngs[_STREAM_POSE])
    emb = landmarks.landmark_embedding(mesh)

    def f(x):
        return jnp.asarray(x, dtype)

    def i(x):
        return jnp.asarray(x, jnp.int32)

    return FlameModel(
        v_template=f(mesh.vertices),
        shapedirs=f(np.concatenate([shape, expr], axis=0)),
        posedirs=f(posedirs),
        j_regressor=f(j_reg),
        weights=f(weights),
        faces=i(mesh.faces),
        landmarks=LandmarkEmbedding(
            static_faces=i(emb["static_faces"]), static_bary=f(emb["static_bary"]),
            dynamic_faces=i(emb["dynamic_faces"]), dynamic_bary=f(emb["dynamic_bary"]),
            mediapipe_faces=i(emb["mediapipe_faces"]), mediapipe_bary=f(emb["mediapipe_bary"])),
        masks={name: i(ids) for name, ids in regions.region_masks(mesh).items()},
        n_shape=n_shape,
        parents=FLAME_PARENTS,
    )
