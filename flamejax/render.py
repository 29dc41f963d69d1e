"""A shaded z-buffer triangle rasteriser in NumPy: pictures of meshes without OpenGL or a GPU.

    camera = fit_camera(meshes, size=(512, 512))        # frames one mesh (V, 3) or many (..., V, 3)
    image = render(vertices, faces, camera)              # (512, 512, 3) uint8, Lambert shading
    raster = rasterize(vertices, faces, camera)          # per pixel: winning face, depth, barycentrics
    strip = side_by_side([image_a, image_b])             # panels in a row

Conventions (flamejax's): metres, +y up, +z toward the face, so the default camera looks at the
face from the front, down -z. The camera is orthographic: a world point p maps to camera
coordinates q = R (p - centre), to the pixel column ``W / 2 + scale * q_x`` and row
``H / 2 - scale * q_y`` (row 0 at the top; pixel (r, c) covers [c, c + 1) x [r, r + 1) and is
sampled at its centre), and its depth is q_z (larger = nearer the viewer).

How it is fast (a 10k-triangle head at 512 x 512 in tens of milliseconds on a 2-core CPU, see
``scripts/bench_render.py``): every step is vectorised over triangles or pixels, never a Python
loop. Each triangle's bounding box is expanded into its pixel centres with ``np.repeat`` and
index arithmetic, the three barycentric coordinates and the depth of every candidate are affine
functions of the pixel position whose coefficients are computed once per triangle, and the depth
test is one ``np.maximum.at`` into the z-buffer followed by a comparison (the winner of a pixel is
the candidate whose depth equals the buffer's). Candidates are processed in chunks of triangles
to bound memory; shading then runs once per covered pixel.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

DEFAULT_LIGHT = (0.35, 0.45, 1.0)   # camera frame: from the viewer's upper left, toward the face
DEFAULT_COLOR = (0.78, 0.74, 0.70)  # a neutral clay
# candidate (triangle, pixel) pairs per chunk: bounds the temporary arrays to ~100 MB
_CHUNK_CANDIDATES = 1 << 21
# a pixel centre on an edge shared by two triangles must not fall between them through rounding
_INSIDE_EPS = 1e-7


class Camera(NamedTuple):
    """An orthographic camera.

    centre (3,): the world point (metres) imaged at the image centre; scale: pixels per metre;
    size (H, W): image size in pixels; rotation (3, 3): world -> camera rotation (rows are the
    camera's right, up and toward-viewer axes in world coordinates); None = identity (looking
    down the world's -z, +y up)."""

    centre: tuple
    scale: float
    size: tuple
    rotation: Optional[np.ndarray] = None

    def to_camera(self, points) -> np.ndarray:
        """(..., 3) world points (metres) -> (..., 3) camera coordinates (metres)."""
        q = np.asarray(points, np.float64) - np.asarray(self.centre, np.float64)
        return q if self.rotation is None else q @ np.asarray(self.rotation, np.float64).T

    def project(self, points) -> np.ndarray:
        """(..., 3) world points -> (..., 3): pixel column x, pixel row y (continuous, pixel
        centres at i + 0.5) and depth (camera z, metres, larger = nearer)."""
        q = self.to_camera(points)
        h, w = self.size
        return np.stack([w / 2 + self.scale * q[..., 0], h / 2 - self.scale * q[..., 1], q[..., 2]], -1)


def _size(size) -> tuple[int, int]:
    if np.ndim(size) == 0:
        size = (size, size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be a positive int or (H, W) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def yaw_rotation(angle: float) -> np.ndarray:
    """(3, 3) world -> camera rotation of a camera moved ``angle`` radians around the world's +y
    axis (positive: the camera moves toward the face's left, i.e. world +x), still looking at the
    centre: use as ``Camera.rotation`` / ``fit_camera(rotation=...)`` for a three-quarter view."""
    c, s = np.cos(angle), np.sin(angle)
    # the camera's axes in world coordinates are R_y(angle) applied to x, y, z; R = their transpose
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def fit_camera(vertices, size=(512, 512), *, margin: float = 0.05, rotation=None) -> Camera:
    """A camera framing every given point: vertices (..., V, 3) metres (one mesh, a sequence or
    several meshes of equal vertex count; or a list of (V_i, 3) arrays); size: int or (H, W)
    pixels; margin: fraction of the image left empty on each side; rotation: as
    :class:`Camera`. The points' camera-frame bounding box is centred and scaled to fit."""
    h, w = _size(size)
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    if isinstance(vertices, (list, tuple)):
        points = np.concatenate([np.asarray(v, np.float64).reshape(-1, 3) for v in vertices])
    else:
        points = np.asarray(vertices, np.float64)
        if points.ndim < 2 or points.shape[-1] != 3:
            raise ValueError(f"vertices must be (..., V, 3), got shape {points.shape}")
        points = points.reshape(-1, 3)
    if len(points) == 0 or not np.all(np.isfinite(points)):
        raise ValueError("vertices must be non-empty and finite")
    rot = None if rotation is None else np.asarray(rotation, np.float64)
    q = points if rot is None else points @ rot.T
    lo, hi = q.min(0), q.max(0)
    mid = (lo + hi) / 2
    centre = mid if rot is None else rot.T @ mid             # back to world coordinates
    extent = np.maximum(hi - lo, 1e-9)
    scale = (1 - 2 * margin) * min(w / extent[0], h / extent[1])
    return Camera(tuple(float(c) for c in centre), float(scale), (h, w), rot)


def _check_mesh(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got shape {f.shape}")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be integer vertex ids, got dtype {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertices out of range: ids in [{f.min()}, {f.max()}], "
                         f"{len(v)} vertices")
    if not np.all(np.isfinite(v)):
        raise ValueError("vertices contain NaN or inf")
    return v, f.astype(np.int64)


class Raster(NamedTuple):
    """What each pixel sees: face (H, W) int32 the nearest triangle's index (-1: background);
    depth (H, W) float64 its camera z (metres, larger = nearer; -inf: background); bary (H, W, 3)
    float64 the pixel centre's barycentric coordinates in that triangle (0 on background)."""

    face: np.ndarray
    depth: np.ndarray
    bary: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by the mesh."""
        return self.face >= 0


def _affine_coefficients(p: np.ndarray):
    """p (F, 3 corners, 3) screen x, y, depth -> per triangle the coefficients (F, 4, 3) of the
    three barycentric coordinates and the depth as ``a x + b y + c`` (rows: bary 0..2, depth;
    columns: a, b, c), and the signed doubled area (F,) in pixel^2."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    safe = np.where(area == 0, 1.0, area)
    coef = np.empty((len(p), 4, 3))
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        # bary_i is the doubled area of the sub-triangle (pixel, corner j, corner k) over the whole
        coef[:, i, 0] = (y[:, j] - y[:, k]) / safe
        coef[:, i, 1] = (x[:, k] - x[:, j]) / safe
        coef[:, i, 2] = (x[:, j] * y[:, k] - x[:, k] * y[:, j]) / safe
    coef[:, 3] = np.einsum("fi,fic->fc", z, coef[:, :3])   # depth is affine in the barycentrics
    return coef, area


def rasterize(vertices, faces, camera: Camera, *, cull_backfaces: bool = False) -> Raster:
    """Z-buffer rasterisation: vertices (V, 3) metres, faces (F, 3) int vertex ids, camera ->
    :class:`Raster` (H, W). A pixel is covered by a triangle when its centre lies inside or on
    the triangle's edges; the nearest (largest camera z, interpolated at the pixel centre) wins.
    cull_backfaces: skip triangles whose corners run clockwise on screen (their outward normal,
    for a counter-clockwise mesh like FLAME's, points away from the viewer); by default they are
    drawn, so the inside of an open mouth or the neck's opening is visible."""
    v, f = _check_mesh(vertices, faces)
    h, w = camera.size
    face_buf = np.full(h * w, -1, np.int64)
    zbuf = np.full(h * w, -np.inf)
    if len(f) == 0:
        return Raster(face_buf.reshape(h, w).astype(np.int32), zbuf.reshape(h, w), np.zeros((h, w, 3)))
    p = camera.project(v)[f]                                 # (F, 3, 3)
    coef, area = _affine_coefficients(p)
    # screen y grows downwards, so a counter-clockwise (front-facing) triangle has area < 0
    keep = (area < 0) if cull_backfaces else (area != 0)
    # bounding box in pixel indices: pixel i has its centre at i + 0.5
    x0 = np.maximum(np.ceil(p[..., 0].min(1) - 0.5), 0)
    x1 = np.minimum(np.floor(p[..., 0].max(1) - 0.5), w - 1)
    y0 = np.maximum(np.ceil(p[..., 1].min(1) - 0.5), 0)
    y1 = np.minimum(np.floor(p[..., 1].max(1) - 0.5), h - 1)
    bw = np.where(keep, x1 - x0 + 1, 0).clip(0).astype(np.int64)
    bh = np.where(keep, y1 - y0 + 1, 0).clip(0).astype(np.int64)
    count = bw * bh
    tris = np.flatnonzero(count)
    x0, y0, bw, count = x0.astype(np.int64)[tris], y0.astype(np.int64)[tris], bw[tris], count[tris]
    # per triangle, the coefficients as contiguous rows: gathering 1-D arrays is cheaper than (N, 4, 3)
    ca, cb, cc = (np.ascontiguousarray(coef[tris, :, col].T) for col in range(3))   # each (4, F')
    # chunks of whole triangles with at most _CHUNK_CANDIDATES candidates each (a triangle larger
    # than that is a chunk of its own)
    ends = np.cumsum(count)
    start = 0
    while start < len(tris):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK_CANDIDATES, side="right")), start + 1)
        n = count[start:stop]
        local = np.repeat(np.arange(start, stop), n)                     # candidate -> triangle
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        width = bw[local]
        py = offset // width
        px = offset - py * width + x0[local]
        py += y0[local]
        xc, yc = px + 0.5, py + 0.5
        # the inside test first (about a third of the candidates pass), then depth for those only
        inside = ca[0, local] * xc + cb[0, local] * yc + cc[0, local] >= -_INSIDE_EPS
        inside &= ca[1, local] * xc + cb[1, local] * yc + cc[1, local] >= -_INSIDE_EPS
        inside &= ca[2, local] * xc + cb[2, local] * yc + cc[2, local] >= -_INSIDE_EPS
        local, px, py, xc, yc = local[inside], px[inside], py[inside], xc[inside], yc[inside]
        pix = py * w + px
        z = ca[3, local] * xc + cb[3, local] * yc + cc[3, local]
        np.maximum.at(zbuf, pix, z)
        won = z == zbuf[pix]
        # a later chunk overwrites a pixel only where it raised (or tied) the buffer's depth
        face_buf[pix[won]] = tris[local[won]]
        start = stop
    covered = face_buf >= 0
    bary = np.zeros((h * w, 3))
    if covered.any():
        # recompute the winners' barycentrics once per covered pixel (cheaper than carrying them)
        ids = np.flatnonzero(covered)
        pf = p[face_buf[ids]]
        cf, _ = _affine_coefficients(pf)
        xc, yc = ids % w + 0.5, ids // w + 0.5
        b = cf[:, :3, 0] * xc[:, None] + cf[:, :3, 1] * yc[:, None] + cf[:, :3, 2]
        bary[ids] = np.clip(b, 0.0, 1.0) / np.clip(b, 0.0, 1.0).sum(1, keepdims=True).clip(1e-12)
    return Raster(face_buf.reshape(h, w).astype(np.int32), zbuf.reshape(h, w), bary.reshape(h, w, 3))


def face_normals(vertices, faces) -> np.ndarray:
    """(F, 3) unit normals (counter-clockwise corners = outward) of vertices (V, 3), faces (F, 3);
    zero for degenerate triangles."""
    v, f = _check_mesh(vertices, faces)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-30)


def vertex_normals(vertices, faces) -> np.ndarray:
    """(V, 3) unit normals: the area-weighted mean of the adjacent faces' normals (zero on
    vertices no face uses)."""
    v, f = _check_mesh(vertices, faces)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])   # length = 2 x area
    out = np.zeros_like(v)
    for i in range(3):
        np.add.at(out, f[:, i], n)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-30)


def _rgb(value, name: str) -> np.ndarray:
    c = np.asarray(value, np.float64)
    if c.shape[-1:] != (3,):
        raise ValueError(f"{name} must be RGB (3,) floats in [0, 1] or uint8, got shape {c.shape}")
    if np.issubdtype(np.asarray(value).dtype, np.integer):
        c = c / 255.0
    return c.clip(0.0, 1.0)


def shade(raster: Raster, vertices, faces, camera: Camera, *, color=DEFAULT_COLOR, light=DEFAULT_LIGHT,
          ambient: float = 0.25, background=(1.0, 1.0, 1.0), smooth: bool = True) -> np.ndarray:
    """Lambert shading of a :class:`Raster` -> (H, W, 3) float64 RGB in [0, 1].

    color: (3,) one colour, or (V, 3) per vertex (interpolated), floats in [0, 1] or uint8;
    light: (3,) direction *toward* the light in the camera frame (x right, y up, z toward the
    viewer), normalised here; ambient: the brightness of a surface facing away from the light
    (intensity = ambient + (1 - ambient) max(0, n . l)); background: (3,) colour of uncovered
    pixels; smooth: interpolate vertex normals (else flat face normals). Back faces (the inside
    of the surface) are lit two-sided: their normal is flipped toward the viewer."""
    v, f = _check_mesh(vertices, faces)
    h, w = camera.size
    if raster.face.shape != (h, w):
        raise ValueError(f"raster is {raster.face.shape}, the camera's image is {(h, w)}")
    col = _rgb(color, "color")
    if col.ndim == 2 and col.shape[0] != len(v):
        raise ValueError(f"per-vertex color must be ({len(v)}, 3), got {col.shape}")
    if col.ndim > 2:
        raise ValueError(f"color must be (3,) or (V, 3), got {col.shape}")
    lit = np.asarray(light, np.float64)
    if lit.shape != (3,) or not np.linalg.norm(lit) > 0:
        raise ValueError(f"light must be a non-zero (3,) direction, got {light!r}")
    lit = lit / np.linalg.norm(lit)
    if not 0 <= ambient <= 1:
        raise ValueError(f"ambient must be in [0, 1], got {ambient}")
    out = np.empty((h * w, 3))
    out[:] = _rgb(background, "background")
    ids = np.flatnonzero(raster.face.reshape(-1) >= 0)
    if len(ids) == 0:
        return out.reshape(h, w, 3)
    fid = raster.face.reshape(-1)[ids]
    b = raster.bary.reshape(-1, 3)[ids]
    rot = np.eye(3) if camera.rotation is None else np.asarray(camera.rotation, np.float64)
    fn = face_normals(v, f) @ rot.T                                  # camera frame
    if smooth:
        vn = vertex_normals(v, f) @ rot.T
        n = np.einsum("pi,pic->pc", b, vn[f[fid]])
        # near a crease the interpolated normal can vanish: fall back to the face's
        bad = np.linalg.norm(n, axis=1) < 1e-6
        n[bad] = fn[fid[bad]]
    else:
        n = fn[fid]
    # two-sided lighting: a face seen from behind is lit as if its normal faced the viewer
    n = np.where((fn[fid, 2] < 0)[:, None], -n, n)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-30)
    intensity = ambient + (1 - ambient) * np.clip(n @ lit, 0.0, None)
    base = col if col.ndim == 1 else np.einsum("pi,pic->pc", b, col[f[fid]])
    out[ids] = base * intensity[:, None]
    return out.reshape(h, w, 3)


def _downsample(image: np.ndarray, k: int) -> np.ndarray:
    h, w = image.shape[0] // k, image.shape[1] // k
    return image[:h * k, :w * k].reshape(h, k, w, k, -1).mean((1, 3))


def render(vertices, faces, camera: Camera, *, color=DEFAULT_COLOR, light=DEFAULT_LIGHT, ambient: float = 0.25,
           background=(1.0, 1.0, 1.0), smooth: bool = True, cull_backfaces: bool = False,
           supersample: int = 1) -> np.ndarray:
    """A shaded picture of one mesh: vertices (V, 3) metres, faces (F, 3) int -> (H, W, 3) uint8.

    :func:`rasterize` then :func:`shade` (see both for the options); supersample: render at
    ``supersample`` times the resolution and average down (anti-aliased edges, ~k^2 the cost)."""
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample must be a positive int, got {supersample}")
    k = int(supersample)
    cam = camera if k == 1 else camera._replace(scale=camera.scale * k, size=(camera.size[0] * k, camera.size[1] * k))
    raster = rasterize(vertices, faces, cam, cull_backfaces=cull_backfaces)
    image = shade(raster, vertices, faces, cam, color=color, light=light, ambient=ambient,
                  background=background, smooth=smooth)
    if k > 1:
        image = _downsample(image, k)
    return np.round(image * 255).astype(np.uint8)


def side_by_side(images: Sequence[np.ndarray], *, gap: int = 0,
                 background: Union[int, Sequence[int]] = 255) -> np.ndarray:
    """Panels (H_i, W_i, 3) uint8 in a row -> (max H_i, sum W_i + gap (n - 1), 3) uint8; shorter
    panels are centred vertically on ``background``."""
    if len(images) == 0:
        raise ValueError("side_by_side needs at least one image")
    imgs = [np.asarray(i) for i in images]
    for i, im in enumerate(imgs):
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i} must be (H, W, 3), got shape {im.shape}")
    h = max(im.shape[0] for im in imgs)
    width = sum(im.shape[1] for im in imgs) + gap * (len(imgs) - 1)
    out = np.empty((h, width, 3), np.uint8)
    out[:] = np.asarray(background, np.uint8)
    x = 0
    for im in imgs:
        top = (h - im.shape[0]) // 2
        out[top:top + im.shape[0], x:x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out
