"""Typed configs: what the Hydra YAML in conf/ turns into before any library call."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax.numpy as jnp

import flamejax as fj


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """conf/model/*.yaml: the embedded synthetic model or a FLAME file of the user's."""

    kind: str = "synthetic"  # synthetic | file
    seed: int = 0
    size: str = "full"
    path: Optional[str] = None
    landmarks: Optional[Any] = None  # one path, or a list of paths (RingNet static + dynamic)
    mediapipe: Optional[str] = None
    masks: Optional[str] = None
    n_shape: Optional[int] = None
    n_expr: Optional[int] = None

    def build(self, dtype=jnp.float32) -> fj.FlameModel:
        if self.kind == "synthetic":
            kwargs = {k: v for k, v in (("n_shape", self.n_shape), ("n_expr", self.n_expr)) if v is not None}
            return fj.synthetic.make_flame(seed=self.seed, size=self.size, dtype=dtype, **kwargs)
        if self.kind == "file":
            return fj.load_flame(self.path, n_shape=self.n_shape, n_expr=self.n_expr, dtype=dtype,
                                 landmarks=self.landmarks, mediapipe=self.mediapipe, masks=self.masks)
        raise ValueError(f"model.kind must be 'synthetic' or 'file', got {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class ForwardConfig:
    """conf/forward.yaml: the forward-pass demo job."""

    model: ModelConfig
    seed: int = 0
    batch_size: int = 64
    n_meshes: int = 4
    expression_scale: float = 1.0
    benchmark_repeats: int = 10

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ForwardConfig":
        d = {k: v for k, v in d.items() if k != "hydra"}
        return cls(model=ModelConfig(**d.pop("model")), **d)
