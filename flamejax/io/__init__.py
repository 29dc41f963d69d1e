"""Reading and writing the files of the FLAME ecosystem, safely and without torch or chumpy.

- :func:`load_flame` / :func:`save_flame`: FLAME 2020 / 2023 model files (``.pkl``, ``.npz``)
  <-> :class:`~flamejax.flame.FlameModel` (:mod:`flamejax.io.flame_file`);
- :func:`load_landmark_embedding` and the per-format readers/writers: DECA-family
  ``landmark_embedding.npy``, RingNet's static/dynamic pair, metrical-tracker's MediaPipe
  ``.npz`` (:mod:`flamejax.io.landmark_files`);
- :func:`load_masks` / :func:`save_masks`: ``FLAME_masks.pkl`` (:mod:`flamejax.io.masks`);
- :func:`read_face_calibration` / :func:`write_face_calibration`: the face-calibration method's
  data folder (controls, semantic basis, identity, Simon-Says masks)
  (:mod:`flamejax.io.face_calibration`);
- :func:`read_tracked` / :func:`to_flame_params`: face trackers' outputs (metrical-tracker,
  Pixel3DMM, VHAP, SMIRK, DECA/EMOCA, our own ``.npz``) as one :class:`TrackedSequence`
  (:mod:`flamejax.io.trackers`);
- :func:`read_labels` / :func:`write_labels`: Simon-Says hold labels (:mod:`flamejax.io.labels`);
- controls CSV / npz and Live Link Face CSV (:mod:`flamejax.io.animation`); OBJ / PLY mesh
  sequences (:mod:`flamejax.io.meshes`).

Pickles are read with an allow-list unpickler (:mod:`flamejax.io.safe_pickle`) that cannot
run code from the file; torch tensors inside them are decoded without torch
(:mod:`flamejax.io.torch_pickle`). Every problem with a file raises :class:`FlameFileError`,
whose message names the file.
"""

from flamejax.io.animation import (
    ControlsTake,
    LiveLinkTake,
    read_controls_csv,
    read_controls_npz,
    read_live_link_csv,
    write_controls_csv,
    write_controls_npz,
    write_live_link_csv,
)
from flamejax.io.errors import FlameFileError, TrackerOutputError
from flamejax.io.face_calibration import read_face_calibration, write_face_calibration
from flamejax.io.flame_file import (
    FlameArrays,
    flame_file_dict,
    load_flame,
    read_flame_arrays,
    save_flame,
)
from flamejax.io.landmark_files import (
    MediapipeEmbedding,
    check_embedding,
    load_deca_embedding,
    load_landmark_embedding,
    load_mediapipe_embedding,
    load_ringnet_embedding,
    save_deca_embedding,
    save_mediapipe_embedding,
    save_ringnet_embedding,
    with_mediapipe,
)
from flamejax.io.labels import mask_invalid, read_labels, write_labels
from flamejax.io.masks import load_masks, save_masks
from flamejax.io.meshes import read_mesh, write_mesh_sequence
from flamejax.io.npy import read_npy, read_npy_object, read_npz
from flamejax.io.safe_pickle import load_pickle
from flamejax.io.trackers import (
    TrackedSequence,
    detect_tracker,
    load_torch_file,
    read_tracked,
    save_tracked,
    to_flame_params,
)

__all__ = [
    "ControlsTake",
    "FlameArrays",
    "FlameFileError",
    "LiveLinkTake",
    "TrackedSequence",
    "TrackerOutputError",
    "MediapipeEmbedding",
    "check_embedding",
    "detect_tracker",
    "flame_file_dict",
    "load_deca_embedding",
    "load_flame",
    "load_landmark_embedding",
    "load_masks",
    "mask_invalid",
    "load_mediapipe_embedding",
    "load_pickle",
    "load_torch_file",
    "load_ringnet_embedding",
    "read_controls_csv",
    "read_controls_npz",
    "read_face_calibration",
    "read_labels",
    "read_flame_arrays",
    "read_live_link_csv",
    "read_mesh",
    "read_npy",
    "read_npy_object",
    "read_npz",
    "read_tracked",
    "save_deca_embedding",
    "save_flame",
    "save_masks",
    "save_tracked",
    "save_mediapipe_embedding",
    "save_ringnet_embedding",
    "to_flame_params",
    "with_mediapipe",
    "write_controls_csv",
    "write_controls_npz",
    "write_face_calibration",
    "write_labels",
    "write_live_link_csv",
    "write_mesh_sequence",
]
