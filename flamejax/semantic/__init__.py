"""The semantic rig: named animation controls c in [0, 1]^K -> FLAME parameters.

    theta(c) = B c + g        B (103, K), g (103,): 100 expression coefficients, then jaw Euler x, y, z

- :mod:`.controls`: control sets as data (MetaHuman's 122 raw controls, ARKit's 52), their
  Simon-Says expressions and combination constraints, primary controls vs tweakers;
- :mod:`.rig`: the :class:`SemanticRig` pytree and the rig's FLAME parameters and vertices;
- :mod:`.fit`: fitting B from paired (controls, geometry) data.
"""

from flamejax.semantic.controls import ControlSet, ControlSetError, SimonSays, load_control_set
from flamejax.semantic.fit import SemanticFit, fit_semantic_rig
from flamejax.semantic.rig import (
    SemanticRig,
    make_rig,
    rig_flame_params,
    rig_parameters,
    rig_theta,
    rig_vertices,
    rig_vertices_frames,
    rig_vertices_full,
)

__all__ = [
    "ControlSet",
    "ControlSetError",
    "SemanticFit",
    "SemanticRig",
    "SimonSays",
    "fit_semantic_rig",
    "load_control_set",
    "make_rig",
    "rig_flame_params",
    "rig_parameters",
    "rig_theta",
    "rig_vertices",
    "rig_vertices_frames",
    "rig_vertices_full",
]
