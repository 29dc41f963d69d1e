"""flamejax.render against independent references: a brute-force ray/triangle intersection per
pixel (Moeller-Trumbore in world coordinates, not the renderer's screen-space barycentrics), exact
pixel counts of axis-aligned squares, depth order, Lambert's law, back faces, framing, errors."""

from __future__ import annotations

import numpy as np
import pytest

from flamejax import render as R


def _pixel_rays(camera: R.Camera):
    """World-space origins (H, W, 3) (far behind the scene) of the rays through the pixel centres,
    and the common direction (toward the scene, i.e. away from the viewer), computed from the
    Camera's documented convention."""
    h, w = camera.size
    rot = np.eye(3) if camera.rotation is None else np.asarray(camera.rotation)
    right, up, toward = rot                       # camera axes in world coordinates
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    u = (cols - w / 2) / camera.scale
    v = -(rows - h / 2) / camera.scale
    origins = np.asarray(camera.centre) + u[..., None] * right + v[..., None] * up + 100.0 * toward
    return origins, -toward


def brute_force(vertices, faces, camera, edge_tol=1e-6):
    """Per pixel the nearest triangle hit by its ray (-1 if none), its depth along the camera's z,
    and whether the decision is close (a hit within ``edge_tol`` of an edge, or a second hit
    within 1e-9 m in depth)."""
    origins, direction = _pixel_rays(camera)
    h, w = camera.size
    best = np.full((h, w), -1)
    best_t = np.full((h, w), np.inf)
    second_t = np.full((h, w), np.inf)
    close = np.zeros((h, w), bool)
    for i, (a, b, c) in enumerate(np.asarray(vertices)[np.asarray(faces)]):
        e1, e2 = b - a, c - a
        pvec = np.cross(direction, e2)
        det = e1 @ pvec
        if abs(det) < 1e-15:
            continue
        tvec = origins - a
        u = (tvec @ pvec) / det
        qvec = np.cross(tvec, e1)
        v = (qvec @ direction) / det
        t = (qvec @ e2) / det
        hit = (u >= 0) & (v >= 0) & (u + v <= 1)
        near_edge = (np.abs(u) < edge_tol) | (np.abs(v) < edge_tol) | (np.abs(1 - u - v) < edge_tol)
        grazing = (u > -edge_tol) & (v > -edge_tol) & (u + v < 1 + edge_tol)
        close |= grazing & near_edge
        nearer = hit & (t < best_t)
        second_t = np.where(nearer, best_t, np.where(hit, np.minimum(second_t, t), second_t))
        best = np.where(nearer, i, best)
        best_t = np.where(nearer, t, best_t)
    with np.errstate(invalid="ignore"):           # inf - inf where nothing was hit
        close |= np.abs(second_t - best_t) < 1e-9
    depth = np.where(best >= 0, 100.0 - best_t, -np.inf)   # camera z = 100 - distance travelled
    return best, depth, close


def random_mesh(seed, n_vertices=40, n_faces=60):
    rng = np.random.default_rng(seed)
    v = rng.uniform(-1, 1, size=(n_vertices, 3))
    f = np.stack([rng.choice(n_vertices, 3, replace=False) for _ in range(n_faces)])
    return v, f


@pytest.mark.parametrize("seed, rotation", [(0, None), (1, R.yaw_rotation(0.7)), (2, None)])
def test_matches_brute_force_ray_casting(seed, rotation):
    v, f = random_mesh(seed)
    camera = R.fit_camera(v, (37, 53), rotation=rotation)
    raster = R.rasterize(v, f, camera)
    ref, depth, close = brute_force(v, f, camera)
    assert raster.face.shape == (37, 53) and raster.face.dtype == np.int32
    assert (ref >= 0).sum() > 200                       # the scene covers a good part of the image
    differ = raster.face != ref
    assert not np.any(differ & ~close), np.argwhere(differ & ~close)
    assert differ.sum() <= 3                            # only edge / tie pixels may differ
    same = ~differ & (ref >= 0)
    np.testing.assert_allclose(raster.depth[same], depth[same], atol=1e-9)
    # the barycentrics reproduce the pixel centre's position on the winning triangle
    p = camera.project(v)[f]                             # (F, 3, 3)
    ids = np.argwhere(raster.mask)
    bary = raster.bary[ids[:, 0], ids[:, 1]]
    xy = np.einsum("pi,pic->pc", bary, p[raster.face[ids[:, 0], ids[:, 1]], :, :2])
    np.testing.assert_allclose(xy, ids[:, ::-1] + 0.5, atol=1e-6)
    np.testing.assert_allclose(bary.sum(1), 1.0)


def test_chunked_equals_unchunked(monkeypatch):
    v, f = random_mesh(3, n_faces=80)
    camera = R.fit_camera(v, 64)
    whole = R.rasterize(v, f, camera)
    monkeypatch.setattr(R, "_CHUNK_CANDIDATES", 50)     # many chunks, some single-triangle
    chunked = R.rasterize(v, f, camera)
    np.testing.assert_array_equal(chunked.face, whole.face)
    np.testing.assert_array_equal(chunked.depth, whole.depth)


def square(x0, y0, side, z=0.0):
    v = np.array([[x0, y0, z], [x0 + side, y0, z], [x0 + side, y0 + side, z], [x0, y0 + side, z]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def test_unit_square_has_its_pixel_area_and_no_crack():
    # 10 px per metre: the square's edges fall on pixel boundaries, so exactly 10 x 10 pixel centres
    # are inside, and the shared diagonal runs through pixel centres (each must be drawn once)
    v, f = square(0.0, 0.0, 1.0)
    camera = R.Camera((0.0, 0.0, 0.0), 10.0, (40, 40))
    raster = R.rasterize(v, f, camera)
    assert raster.mask.sum() == 100
    rows, cols = np.nonzero(raster.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 19, 20, 29)   # +y up: rows above centre
    assert set(np.unique(raster.face[raster.mask])) == {0, 1}


@pytest.mark.parametrize("seed", range(4))
def test_squares_cover_their_area(seed):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(-0.4, 0.0, 2)
    side = rng.uniform(0.2, 0.4)
    v, f = square(x0, y0, side)
    camera = R.Camera((0.0, 0.0, 0.0), 100.0, (100, 100))
    n = R.rasterize(v, f, camera).mask.sum()
    # pixel centres in a [a, a + s) interval: floor or ceil of s per axis
    s = side * 100
    assert int(np.floor(s)) ** 2 <= n <= int(np.ceil(s)) ** 2


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_near_triangle_occludes_far_one_whatever_the_order(order):
    near = np.array([[-1, -1, 0.2], [1, -1, 0.2], [0, 1, 0.2]])
    far = np.array([[-1, -0.5, -0.3], [1, -0.5, -0.3], [0, 1.5, -0.3]])
    tris = [near, far]
    v = np.concatenate([tris[i] for i in order])
    f = np.array([[0, 1, 2], [3, 4, 5]])
    camera = R.Camera((0.0, 0.0, 0.0), 20.0, (64, 64))
    raster = R.rasterize(v, f, camera)
    near_id = order.index(0)
    centre = raster.face[32, 32]
    assert centre == near_id
    assert raster.depth[32, 32] == pytest.approx(0.2)
    assert (raster.face == 1 - near_id).any()          # the far one shows where the near one is not
    # a triangle crossing another: each wins where it is nearer
    tilted = np.array([[-1, -1, -0.5], [1, -1, 0.5], [0, 1, 0.0]])
    raster = R.rasterize(np.concatenate([near, tilted]), f, camera)
    z_tilted = 0.5 * ((np.arange(64) + 0.5 - 32) / 20.0)   # tilted's depth at each column
    row = raster.face[40]
    covered = row >= 0
    expect = np.where(z_tilted > 0.2, 1, 0)
    boundary = np.abs(z_tilted - 0.2) < 0.05
    assert np.all((row == expect)[covered & ~boundary])


def _plane(normal, size=1.0):
    """A triangle through the origin with the given normal (counter-clockwise seen from it)."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    a = np.cross(n, [0.0, 1.0, 0.0] if abs(n[1]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    v = size * np.stack([a, -0.5 * a + b, -0.5 * a - b])
    f = np.array([[0, 1, 2]])
    if np.cross(v[1] - v[0], v[2] - v[0]) @ n < 0:
        f = f[:, ::-1]
    return v, f


def test_lambert_shading():
    camera = R.Camera((0.0, 0.0, 0.0), 30.0, (64, 64))
    light = (0.0, 0.0, 1.0)
    ambient = 0.2
    values = {}
    for angle in (0.0, 60.0, 85.0):
        t = np.radians(angle)
        v, f = _plane([0.0, np.sin(t), np.cos(t)])
        img = R.render(v, f, camera, color=(1.0, 1.0, 1.0), light=light, ambient=ambient,
                       background=(0.0, 0.0, 0.0))
        values[angle] = img[img.sum(-1) > 0].astype(float).mean(0)
        expect = 255 * (ambient + (1 - ambient) * np.cos(t))
        np.testing.assert_allclose(values[angle], expect, atol=1.0)
    assert values[0.0][0] > values[60.0][0] > values[85.0][0]
    # facing away from the light: ambient only
    v, f = _plane([0.0, 0.0, 1.0])
    img = R.render(v, f, camera, color=(1.0, 0.5, 0.0), light=(0.0, 0.0, -1.0), ambient=ambient,
                   background=(0.0, 0.0, 1.0))
    covered = img[..., 2] == 0
    np.testing.assert_allclose(img[covered].astype(float).mean(0), [255 * ambient, 255 * ambient / 2, 0], atol=1.0)


def test_back_faces_are_culled_on_request_and_otherwise_lit_two_sided():
    v, f = _plane([0.0, 0.0, 1.0])
    back = f[:, ::-1]
    camera = R.Camera((0.0, 0.0, 0.0), 30.0, (64, 64))
    assert R.rasterize(v, f, camera, cull_backfaces=True).mask.sum() > 100
    assert R.rasterize(v, back, camera, cull_backfaces=True).mask.sum() == 0
    front_img = R.render(v, f, camera)
    back_img = R.render(v, back, camera)
    np.testing.assert_array_equal(front_img, back_img)


def test_smooth_normals_vary_across_a_curved_surface_and_flat_ones_do_not():
    # a coarse hemisphere: with vertex normals the shade varies within each triangle
    import trimesh
    sphere = trimesh.creation.icosphere(subdivisions=1, radius=1.0)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    camera = R.fit_camera(v, 96)
    raster = R.rasterize(v, f, camera)
    flat = R.shade(raster, v, f, camera, smooth=False)
    smooth = R.shade(raster, v, f, camera, smooth=True)
    fid = raster.face[raster.mask]
    spread = lambda img: max(np.ptp(img[raster.mask][fid == i, 0]) for i in np.unique(fid))  # noqa: E731
    assert spread(flat) < 1e-12
    assert spread(smooth) > 0.05
    # the brightest pixel faces the light: near the direction of DEFAULT_LIGHT from the centre
    bright = np.unravel_index(np.argmax(np.where(raster.mask, smooth[..., 0], -1)), raster.mask.shape)
    light = np.asarray(R.DEFAULT_LIGHT) / np.linalg.norm(R.DEFAULT_LIGHT)
    expect = camera.project(light)[:2]
    assert np.hypot(bright[1] + 0.5 - expect[0], bright[0] + 0.5 - expect[1]) < 6


def test_per_vertex_colors_are_interpolated():
    v, f = square(-1.0, -1.0, 2.0)
    colors = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])    # red bottom, blue top
    camera = R.Camera((0.0, 0.0, 0.0), 20.0, (48, 48))
    img = R.render(v, f, camera, color=colors, light=(0, 0, 1), ambient=1.0)
    top, bottom, middle = img[5, 24], img[42, 24], img[24, 24]
    assert top[2] > 200 and top[0] < 40 and bottom[0] > 200 and bottom[2] < 40
    assert 100 < middle[0] < 160 and 100 < middle[2] < 160


def test_fit_camera_frames_every_mesh():
    rng = np.random.default_rng(5)
    meshes = rng.normal(size=(3, 50, 3)) * [0.1, 0.3, 0.05] + [[[1.0, 2.0, 0.0]], [[1.5, 2.0, 0.0]], [[1.0, 1.0, 1.0]]]
    for rotation in (None, R.yaw_rotation(-0.5)):
        camera = R.fit_camera(meshes, (120, 200), margin=0.1, rotation=rotation)
        p = camera.project(meshes.reshape(-1, 3))
        h, w = camera.size
        assert (h, w) == (120, 200)
        assert p[:, 0].min() >= 0.1 * w - 1e-6 and p[:, 0].max() <= 0.9 * w + 1e-6
        assert p[:, 1].min() >= 0.1 * h - 1e-6 and p[:, 1].max() <= 0.9 * h + 1e-6
        # the limiting axis touches the margin on both sides
        span = np.array([np.ptp(p[:, 0]) / w, np.ptp(p[:, 1]) / h])
        assert span.max() == pytest.approx(0.8)
    camera = R.fit_camera([meshes[0], meshes[1][:10]], 64)    # a list of meshes of any sizes
    assert camera.size == (64, 64)


def test_head_render_is_a_centred_symmetric_face():
    from flamejax.synthetic import make_flame
    model = make_flame(seed=0, size="tiny")
    v, f = np.asarray(model.v_template, np.float64), np.asarray(model.faces)
    camera = R.fit_camera(v, 96)
    img = R.render(v, f, camera, background=(1.0, 1.0, 1.0))
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    mask = R.rasterize(v, f, camera).mask
    assert 0.2 < mask.mean() < 0.8
    assert np.mean(mask == mask[:, ::-1]) > 0.97        # the synthetic head is left/right symmetric
    assert np.all(img[~mask] == 255) and img[mask].std() > 5
    aa = R.render(v, f, camera, supersample=2)
    assert aa.shape == img.shape
    edge = mask != np.roll(mask, 1, axis=1)
    assert np.mean((aa[edge] != 255) & (aa[edge] != img[edge])) > 0.1   # softened silhouette


def test_side_by_side():
    a = np.zeros((10, 4, 3), np.uint8)
    b = np.full((6, 5, 3), 7, np.uint8)
    out = R.side_by_side([a, b], gap=2)
    assert out.shape == (10, 11, 3)
    assert np.all(out[:, :4] == 0) and np.all(out[:, 4:6] == 255)
    assert np.all(out[2:8, 6:] == 7) and np.all(out[:2, 6:] == 255)


def test_bad_inputs_are_named():
    v, f = square(0, 0, 1)
    camera = R.Camera((0.0, 0.0, 0.0), 10.0, (16, 16))
    with pytest.raises(ValueError, match="out of range"):
        R.rasterize(v, f + 2, camera)
    with pytest.raises(ValueError, match="out of range"):
        R.render(v, f - 1, camera)
    with pytest.raises(ValueError, match=r"vertices must be \(V, 3\)"):
        R.render(v[:, :2], f, camera)
    with pytest.raises(ValueError, match=r"faces must be \(F, 3\)"):
        R.render(v, f[:, :2], camera)
    with pytest.raises(ValueError, match="integer"):
        R.render(v, f.astype(float), camera)
    with pytest.raises(ValueError, match="NaN"):
        R.render(np.where(v == 1, np.nan, v), f, camera)
    with pytest.raises(ValueError, match="color"):
        R.render(v, f, camera, color=np.ones((3, 3)))
    with pytest.raises(ValueError, match="light"):
        R.render(v, f, camera, light=(0, 0, 0))
    with pytest.raises(ValueError, match="size"):
        R.fit_camera(v, (10, 0))
    with pytest.raises(ValueError, match="supersample"):
        R.render(v, f, camera, supersample=0)
    with pytest.raises(ValueError, match="raster"):
        R.shade(R.rasterize(v, f, camera), v, f, camera._replace(size=(8, 8)))
    # an empty mesh renders the background
    assert np.all(R.render(v, np.zeros((0, 3), int), camera) == 255)
