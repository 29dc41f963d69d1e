"""Control sets: the named animation controls of a semantic rig, and their Simon-Says set.

A *control set* is data (``flamejax/semantic/data/<name>.yaml``): K control names in the
column order of the rig's basis B (103, K), each with a face region and a mirror partner,
plus the Simon-Says calibration expressions (index i of which matches ``masks/i.npy`` of a
face-calibration data folder) and the combination constraints. Two ship with the package:

- ``metahuman``: the 122 MetaHuman raw controls of the face-calibration method;
- ``arkit``: Apple ARKit's 52 blendshapes, with an analogous Simon-Says set.

Everything here is plain NumPy and immutable: a :class:`ControlSet` is built once from its
YAML file and then only read, so it can be closed over by jitted code or used as a static
argument. Primary controls are those some Simon-Says expression asks for; the rest are the
*tweakers* that rig inversion penalises.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
from typing import Any, Mapping, NamedTuple, Union

import numpy as np
import yaml

PathLike = Union[str, "os.PathLike[str]"]

# The face regions a control may belong to. Small on purpose: regions are for grouping
# controls (plots, per-region penalties, reporting), not an anatomical atlas.
REGIONS = ("brow", "eye", "nose", "cheek", "mouth", "jaw", "chin", "tongue")

# Control sets shipped in flamejax/semantic/data/.
BUILTIN_SETS = ("metahuman", "arkit")


class ControlSetError(ValueError):
    """A control-set file (or dict) that is malformed; the message starts with its source."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class Expression(NamedTuple):
    """One Simon-Says expression or combination: a name and its target control values.

    ``controls`` is a tuple of (control name, value) pairs in file order (a tuple, not a
    dict, so that the object is immutable and hashable).
    """

    name: str
    controls: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict[str, float]:
        """The target values by control name (controls not listed are 0)."""
        return dict(self.controls)


def _target_matrix(control_names: tuple[str, ...], index: Mapping[str, int],
                   expressions: tuple[Expression, ...]) -> np.ndarray:
    """(len(expressions), K) float32: row e holds expression e's targets, 0 elsewhere."""
    out = np.zeros((len(expressions), len(control_names)), dtype=np.float32)
    for row, expression in enumerate(expressions):
        for name, value in expression.controls:
            out[row, index[name]] = value
    return out


@dataclasses.dataclass(frozen=True)
class SimonSays:
    """The Simon-Says calibration set of a control set.

    Attributes:
      control_names: (K,) the control set's names (column order of the target matrices).
      expressions: (E,) the prompted expressions; expression i goes with ``masks/i.npy``.
      combinations: (C,) extra constraints whose calibration target is the uncalibrated
        rig's own output (so combinations of controls keep behaving).
    """

    control_names: tuple[str, ...]
    expressions: tuple[Expression, ...]
    combinations: tuple[Expression, ...]
    _index: Mapping[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.control_names)})

    @property
    def expression_names(self) -> tuple[str, ...]:
        """(E,) names of the expressions, in mask order."""
        return tuple(e.name for e in self.expressions)

    @property
    def combination_names(self) -> tuple[str, ...]:
        """(C,) names of the combination constraints."""
        return tuple(c.name for c in self.combinations)

    @property
    def targets(self) -> np.ndarray:
        """(E, K) float32 target controls c_k of the expressions (a fresh array each call)."""
        return _target_matrix(self.control_names, self._index, self.expressions)

    @property
    def combination_targets(self) -> np.ndarray:
        """(C, K) float32 control vectors of the combination constraints."""
        return _target_matrix(self.control_names, self._index, self.combinations)

    @property
    def primary_mask(self) -> np.ndarray:
        """(K,) bool: controls that some expression (not a combination) sets to non-zero.

        Combinations are left out on purpose: they constrain how primary controls combine,
        and the controls only they use (e.g. MetaHuman's mouthLipsTogether*) stay tweakers.
        """
        return np.any(self.targets != 0, axis=0)


@dataclasses.dataclass(frozen=True)
class ControlSet:
    """K named controls with regions and mirror partners, and their Simon-Says set.

    Attributes:
      name: the set's name ("metahuman", "arkit", or what its YAML file says).
      names: (K,) control names; position = column of the rig's basis B (103, K).
      regions: (K,) face region of each control, one of :data:`REGIONS`.
      mirror: (K,) index of each control's left/right mirror partner (itself if unpaired);
        an involution: ``mirror[mirror[i]] == i``.
      simon_says: the calibration expressions and combination constraints.
    """

    name: str
    names: tuple[str, ...]
    regions: tuple[str, ...]
    mirror: tuple[int, ...]
    simon_says: SimonSays
    _index: Mapping[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # Built once so that index() is a dict lookup; not part of equality or the repr.
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int:
        """K, the number of controls."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Column of control ``name``; an unknown name raises KeyError suggesting close ones."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(_unknown(name, self.names, self.name)) from None

    def indices(self, names) -> np.ndarray:
        """(n,) int32 columns of the controls ``names``."""
        return np.asarray([self.index(n) for n in names], dtype=np.int32)

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """(K,) float32 control vector with ``values`` by name and 0 elsewhere."""
        out = np.zeros(self.size, dtype=np.float32)
        for name, value in values.items():
            out[self.index(name)] = value
        return out

    def as_dict(self, c, tol: float = 0.0) -> dict[str, float]:
        """The controls of ``c`` (K,) with |value| > tol, by name: the inverse of vector()."""
        c = np.asarray(c)
        if c.shape != (self.size,):
            raise ValueError(f"{self.name}: expected a control vector of shape ({self.size},), "
                             f"got {c.shape}")
        return {self.names[i]: float(c[i]) for i in np.flatnonzero(np.abs(c) > tol)}

    @property
    def mirror_indices(self) -> np.ndarray:
        """(K,) int32 mirror permutation: ``c[..., mirror_indices]`` is the mirrored face."""
        return np.asarray(self.mirror, dtype=np.int32)

    def mirrored(self, c):
        """Controls (..., K) of the mirror-image expression (works on NumPy and JAX arrays)."""
        return c[..., self.mirror_indices]

    def region_indices(self, region: str) -> np.ndarray:
        """(n,) int32 columns of the controls in ``region``."""
        if region not in REGIONS:
            raise KeyError(f"unknown region {region!r}; regions are {', '.join(REGIONS)}")
        return np.asarray([i for i, r in enumerate(self.regions) if r == region], dtype=np.int32)

    @property
    def primary_mask(self) -> np.ndarray:
        """(K,) bool: the controls some Simon-Says expression uses."""
        return self.simon_says.primary_mask

    @property
    def tweaker_mask(self) -> np.ndarray:
        """(K,) bool: the controls no Simon-Says expression uses (penalised by the tracker)."""
        return ~self.primary_mask

    @property
    def primary(self) -> tuple[str, ...]:
        """Names of the primary controls, in column order."""
        return tuple(n for n, p in zip(self.names, self.primary_mask) if p)

    @property
    def tweakers(self) -> tuple[str, ...]:
        """Names of the tweaker controls, in column order."""
        return tuple(n for n, p in zip(self.names, self.primary_mask) if not p)


def _unknown(name: str, known, where: str) -> str:
    """Message for an unknown control name, with the closest known names as a hint."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{where}: unknown control {name!r}{hint}"


def _expressions(source: str, raw: Any, key: str, index: Mapping[str, int],
                 names: tuple[str, ...]) -> tuple[Expression, ...]:
    """Validate the list under ``key`` (expressions or combinations) and build Expressions."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ControlSetError(source, f"'{key}' must be a list of {{name, controls}} entries")
    out, seen = [], set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ControlSetError(source, f"{key}[{i}] must be a mapping with a 'name'")
        name = str(entry["name"])
        if name in seen:
            raise ControlSetError(source, f"duplicate {key[:-1]} name {name!r}")
        seen.add(name)
        controls = entry.get("controls") or {}
        if not isinstance(controls, Mapping):
            raise ControlSetError(source, f"{key[:-1]} {name!r}: 'controls' must map control "
                                          f"names to values")
        pairs = []
        for control, value in controls.items():
            if control not in index:
                raise ControlSetError(source, _unknown(control, names, f"{key[:-1]} {name!r}"))
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise ControlSetError(source, f"{key[:-1]} {name!r}: value of {control} must be "
                                              f"a finite number, got {value!r}")
            pairs.append((str(control), float(value)))
        out.append(Expression(name, tuple(pairs)))
    return tuple(out)


def control_set_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ControlSet:
    """Validate the parsed YAML of a control set and build it.

    Layout: ``name``; ``controls``: list of {name, region, mirror (optional: itself)};
    ``expressions`` and ``combinations``: lists of {name, controls: {control: value}}.
    Raises :class:`ControlSetError` (naming ``source``) for duplicate or unknown names, an
    unknown region, or a mirror that is not a left/right pairing (an involution).
    """
    if not isinstance(data, Mapping):
        raise ControlSetError(source, "expected a mapping at the top level")
    raw_controls = data.get("controls")
    if not isinstance(raw_controls, list) or not raw_controls:
        raise ControlSetError(source, "'controls' must be a non-empty list")
    names, regions, partners = [], [], []
    for i, entry in enumerate(raw_controls):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ControlSetError(source, f"controls[{i}] must be a mapping with a 'name'")
        name = str(entry["name"])
        region = entry.get("region")
        if region not in REGIONS:
            raise ControlSetError(source, f"control {name!r}: region {region!r} is not one of "
                                          f"{', '.join(REGIONS)}")
        names.append(name)
        regions.append(region)
        partners.append(str(entry.get("mirror", name)))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ControlSetError(source, f"duplicate control names: {', '.join(duplicates)}")
    names_t = tuple(names)
    index = {n: i for i, n in enumerate(names_t)}

    mirror = []
    for name, partner in zip(names_t, partners):
        if partner not in index:
            raise ControlSetError(source, _unknown(partner, names_t, f"mirror of {name!r}"))
        mirror.append(index[partner])
    for i, j in enumerate(mirror):
        # Mirroring twice must give the face back: a pairing, never a chain or a cycle.
        if mirror[j] != i:
            raise ControlSetError(source, f"bad mirror: {names_t[i]} -> {names_t[j]} but "
                                          f"{names_t[j]} -> {names_t[mirror[j]]}")

    simon_says = SimonSays(
        control_names=names_t,
        expressions=_expressions(source, data.get("expressions"), "expressions", index, names_t),
        combinations=_expressions(source, data.get("combinations"), "combinations", index,
                                  names_t),
    )
    return ControlSet(name=str(data.get("name", source)), names=names_t, regions=tuple(regions),
                      mirror=tuple(mirror), simon_says=simon_says)


def load_control_set(name_or_path: PathLike) -> ControlSet:
    """The control set ``"metahuman"``, ``"arkit"``, or the one in a YAML file at a path."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_SETS:
        resource = importlib.resources.files("flamejax.semantic") / "data" / f"{name_or_path}.yaml"
        return control_set_from_dict(yaml.safe_load(resource.read_text(encoding="utf-8")),
                                     f"{name_or_path}.yaml")
    path = os.fspath(name_or_path)
    if not os.path.isfile(path):
        raise ControlSetError(path, f"no such control-set file (built-in sets: "
                                    f"{', '.join(BUILTIN_SETS)})")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ControlSetError(path, f"not valid YAML: {exc}") from exc
    return control_set_from_dict(data, path)
