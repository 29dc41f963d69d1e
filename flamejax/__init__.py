"""flamejax: identity-calibrated, semantic FLAME face rigs in JAX.

    import flamejax as fj
    model = fj.synthetic.make_flame(seed=0)          # or fj.load_flame("generic_model.pkl")
    out = fj.flame_forward(model, fj.FlameParams(expression=psi, jaw_pose=jaw))
    out.vertices, out.joints, out.landmarks
"""

from flamejax import io, landmarks, rotations, semantic, synthetic
from flamejax.flame import (
    FixedIdentityFlame,
    FlameModel,
    FlameOutput,
    FlameParams,
    bind_identity,
    flame_forward,
    flame_forward_fixed,
)
from flamejax.io import load_flame

__all__ = [
    "FixedIdentityFlame",
    "FlameModel",
    "FlameOutput",
    "FlameParams",
    "bind_identity",
    "flame_forward",
    "flame_forward_fixed",
    "io",
    "landmarks",
    "load_flame",
    "rotations",
    "semantic",
    "synthetic",
]
