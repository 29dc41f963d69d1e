"""flamejax: identity-calibrated, semantic FLAME face rigs in JAX.

    import flamejax as fj
    model = fj.synthetic.make_flame(seed=0)          # or fj.load_flame("generic_model.pkl")
    out = fj.flame_forward(model, fj.FlameParams(expression=psi, jaw_pose=jaw))
    out.vertices, out.joints, out.landmarks

The method (DESIGN.md section 1): ``fj.calibrate`` (Simon-Says calibration), ``fj.track`` (rig
inversion), ``fj.finetune`` (the tracker's rig through the tracker), ``fj.retarget``,
``fj.metrics``; ``fj.evaluate`` runs them all on a synthetic world.
"""

from flamejax import (calibrate, evaluate, finetune, io, landmarks, metrics, retarget, rotations, semantic,
                      synthetic, track)
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
    "calibrate",
    "evaluate",
    "finetune",
    "flame_forward",
    "flame_forward_fixed",
    "io",
    "landmarks",
    "load_flame",
    "metrics",
    "retarget",
    "rotations",
    "semantic",
    "synthetic",
    "track",
]
