"""Rotation conversions against scipy.spatial.transform.Rotation, round trips, gradients, broadcasting."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flamejax import rotations as _rot

RNG_SEED = 1234

# Jitted once per module: op-by-op (eager) dispatch of these small graphs costs seconds per test.
_NAMES = ["axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_quaternion", "quaternion_to_axis_angle",
          "rotation_6d_to_matrix", "matrix_to_rotation_6d", "euler_xyz_to_matrix", "matrix_to_euler_xyz"]


class _Jitted:
    def __init__(self):
        for name in _NAMES:
            setattr(self, name, jax.jit(getattr(_rot, name)))
        self.face_calibration_jaw_to_matrix = jax.jit(_rot.face_calibration_jaw_to_matrix,
                                                      static_argnames="transposed")


rot = _Jitted()


@functools.cache
def _jac(f, mode="rev"):
    """One jitted Jacobian per (function, mode), shared by every test that needs it."""
    return jax.jit((jax.jacrev if mode == "rev" else jax.jacfwd)(f))


def _random_rotvecs(rng, n, max_angle=np.pi):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=(n, 1))
    return axis * angle


def _special_rotvecs():
    """Angles near 0, near pi, exactly pi, beyond pi, along axes and oblique directions."""
    rng = np.random.default_rng(7)
    axes = np.concatenate([np.eye(3), -np.eye(3), rng.normal(size=(4, 3))])
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = [0.0, 1e-12, 1e-9, 1e-6, 9.9e-5, 1.01e-4, 1e-3, 0.3, 1.5, np.pi - 1e-3,
              np.pi - 1e-6, np.pi, np.pi + 1e-4, 4.0, 2 * np.pi - 0.1]
    return np.concatenate([axes * a for a in angles])


def _fd_jacobian(f, x, eps=1e-6):
    """Central finite-difference Jacobian of f: R^n -> R^m (flattened), in float64.

    All 2n perturbed points go through f in one batched call.
    """
    x = np.asarray(x, np.float64)
    steps = eps * np.eye(x.size).reshape((x.size,) + x.shape)
    out = np.asarray(jax.vmap(f)(jnp.asarray(np.concatenate([x + steps, x - steps]))), np.float64)
    out = out.reshape(2, x.size, -1)
    return ((out[0] - out[1]) / (2 * eps)).T


def _same_rotvec(a, b, atol):
    """Axis-angle vectors equal, allowing the sign flip that is ambiguous at angle pi."""
    a, b = np.asarray(a), np.asarray(b)
    direct = np.max(np.abs(a - b), axis=-1)
    flipped = np.max(np.abs(a + b), axis=-1)
    at_pi = np.abs(np.linalg.norm(b, axis=-1) - np.pi) < 1e-3
    ok = (direct < atol) | (at_pi & (flipped < atol))
    assert ok.all(), f"max mismatch {np.max(np.where(ok, 0, direct))}"


# ---------------------------------------------------------------- axis-angle <-> matrix


def test_axis_angle_to_matrix_matches_scipy_random():
    rv = _random_rotvecs(np.random.default_rng(RNG_SEED), 500, max_angle=2 * np.pi)
    got = np.array(rot.axis_angle_to_matrix(jnp.asarray(rv, jnp.float32)))
    np.testing.assert_allclose(got, Rotation.from_rotvec(rv).as_matrix(), atol=2e-6)


def test_axis_angle_to_matrix_matches_scipy_special_angles_float64(x64):
    rv = _special_rotvecs()
    got = np.array(rot.axis_angle_to_matrix(jnp.asarray(rv, jnp.float64)))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, Rotation.from_rotvec(rv).as_matrix(), atol=1e-13)


def test_axis_angle_to_matrix_special_angles_float32():
    rv = _special_rotvecs()
    got = np.array(rot.axis_angle_to_matrix(jnp.asarray(rv, jnp.float32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, Rotation.from_rotvec(rv).as_matrix(), atol=2e-6)


def test_axis_angle_to_matrix_is_a_rotation():
    rv = _random_rotvecs(np.random.default_rng(3), 200, max_angle=3 * np.pi)
    m = np.array(rot.axis_angle_to_matrix(jnp.asarray(rv, jnp.float32)), np.float64)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=2e-6)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=2e-6)


def test_axis_angle_exact_zero_is_identity():
    m = rot.axis_angle_to_matrix(jnp.zeros(3))
    np.testing.assert_array_equal(np.asarray(m), np.eye(3))


def test_matrix_to_axis_angle_matches_scipy_float64(x64):
    rv = np.concatenate([_random_rotvecs(np.random.default_rng(RNG_SEED), 300), _special_rotvecs()])
    mats = Rotation.from_rotvec(rv).as_matrix()
    got = np.array(rot.matrix_to_axis_angle(jnp.asarray(mats)))
    ref = Rotation.from_matrix(mats).as_rotvec()  # angle in [0, pi]
    assert np.all(np.linalg.norm(got, axis=-1) <= np.pi + 1e-12)
    _same_rotvec(got, ref, atol=1e-9)
    np.testing.assert_allclose(Rotation.from_rotvec(got).as_matrix(), mats, atol=1e-12)


def test_matrix_to_axis_angle_float32_near_pi_and_zero():
    rv = _special_rotvecs()
    mats = Rotation.from_rotvec(rv).as_matrix()
    got = np.array(rot.matrix_to_axis_angle(jnp.asarray(mats, jnp.float32)), np.float64)
    assert np.all(np.isfinite(got))
    # Compare the rotations: near pi the vector itself is ill-conditioned in float32.
    np.testing.assert_allclose(Rotation.from_rotvec(got).as_matrix(), mats, atol=5e-6)


def test_axis_angle_round_trip_float64(x64):
    rv = _random_rotvecs(np.random.default_rng(5), 300, max_angle=np.pi - 1e-3)
    back = np.array(rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(jnp.asarray(rv))))
    np.testing.assert_allclose(back, rv, atol=1e-10)


def test_axis_angle_round_trip_reduces_angles_beyond_pi(x64):
    # Angle 2pi - 0.5 about an axis is angle 0.5 about the opposite axis.
    axis = np.array([0.6, 0.0, 0.8])
    back = np.array(rot.matrix_to_axis_angle(rot.axis_angle_to_matrix(jnp.asarray(axis * (2 * np.pi - 0.5)))))
    np.testing.assert_allclose(back, -0.5 * axis, atol=1e-12)


# ---------------------------------------------------------------- quaternions


def test_matrix_to_quaternion_matches_scipy(x64):
    rv = np.concatenate([_random_rotvecs(np.random.default_rng(11), 300), _special_rotvecs()])
    mats = Rotation.from_rotvec(rv).as_matrix()
    got = np.array(rot.matrix_to_quaternion(jnp.asarray(mats)))
    ref = Rotation.from_matrix(mats).as_quat(scalar_first=True, canonical=True)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-14)
    assert np.all(got[:, 0] >= 0)
    # q and -q are the same rotation; only w == 0 (angle pi) leaves the sign free.
    err = np.minimum(np.abs(got - ref).max(-1), np.abs(got + ref).max(-1))
    direct = np.abs(got - ref).max(-1)
    np.testing.assert_array_less(err, 1e-12)
    np.testing.assert_array_less(direct[np.abs(ref[:, 0]) > 1e-6], 1e-12)


def test_matrix_to_quaternion_each_shepperd_branch(x64):
    # Rotations whose largest quaternion component is w, x, y and z in turn.
    for axis in (None, 0, 1, 2):
        if axis is None:
            rv = np.array([0.1, -0.2, 0.3])
        else:
            rv = np.zeros(3)
            rv[axis] = 2.9
            rv[(axis + 1) % 3] = 0.2
        mat = Rotation.from_rotvec(rv).as_matrix()
        got = np.array(rot.matrix_to_quaternion(jnp.asarray(mat)))
        ref = Rotation.from_rotvec(rv).as_quat(scalar_first=True, canonical=True)
        np.testing.assert_allclose(got, ref, atol=1e-14)


def test_quaternion_to_axis_angle_matches_scipy(x64):
    rng = np.random.default_rng(13)
    q = rng.normal(size=(300, 4))  # not normalised, both signs of w
    q[:5] = [[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [1, 1e-9, 0, 0], [-1, 0, -1e-7, 0]]
    got = np.array(rot.quaternion_to_axis_angle(jnp.asarray(q)))
    ref = Rotation.from_quat(q, scalar_first=True).as_rotvec()
    _same_rotvec(got, ref, atol=1e-10)
    assert np.all(np.linalg.norm(got, axis=-1) <= np.pi + 1e-12)


def test_quaternion_round_trip(x64):
    rv = _random_rotvecs(np.random.default_rng(17), 200, max_angle=np.pi - 1e-3)
    q = rot.matrix_to_quaternion(rot.axis_angle_to_matrix(jnp.asarray(rv)))
    np.testing.assert_allclose(np.array(rot.quaternion_to_axis_angle(q)), rv, atol=1e-10)


# ---------------------------------------------------------------- 6D


def _gram_schmidt_rows(d6):
    """Reference 6D -> matrix: the 6 numbers are two rows, orthonormalised (pytorch3d convention)."""
    out = []
    for v in np.asarray(d6, np.float64).reshape(-1, 6):
        a1, a2 = v[:3], v[3:]
        b1 = a1 / np.linalg.norm(a1)
        b2 = a2 - b1.dot(a2) * b1
        b2 /= np.linalg.norm(b2)
        out.append(np.stack([b1, b2, np.cross(b1, b2)]))
    return np.stack(out).reshape(np.shape(d6)[:-1] + (3, 3))


def test_matrix_to_rotation_6d_is_first_two_rows():
    mats = Rotation.from_rotvec(_random_rotvecs(np.random.default_rng(19), 50)).as_matrix()
    got = np.array(rot.matrix_to_rotation_6d(jnp.asarray(mats, jnp.float32)))
    np.testing.assert_allclose(got, mats[:, :2, :].reshape(-1, 6), atol=1e-7)
    np.testing.assert_allclose(got[:, :3], mats[:, 0, :], atol=1e-7)  # rows, not columns


def test_rotation_6d_round_trip(x64):
    mats = Rotation.from_rotvec(np.concatenate(
        [_random_rotvecs(np.random.default_rng(23), 200), _special_rotvecs()])).as_matrix()
    back = np.array(rot.rotation_6d_to_matrix(rot.matrix_to_rotation_6d(jnp.asarray(mats))))
    np.testing.assert_allclose(back, mats, atol=1e-13)


def test_rotation_6d_non_orthonormal_input(x64):
    rng = np.random.default_rng(29)
    d6 = rng.normal(size=(200, 6)) * rng.uniform(0.2, 5.0, size=(200, 1))
    got = np.array(rot.rotation_6d_to_matrix(jnp.asarray(d6)))
    np.testing.assert_allclose(got, _gram_schmidt_rows(d6), atol=1e-12)
    np.testing.assert_allclose(got @ np.swapaxes(got, -1, -2), np.broadcast_to(np.eye(3), got.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(got), 1.0, atol=1e-12)
    # First row is the normalised first 3-vector; the second lies in the plane of both.
    a1 = d6[:, :3] / np.linalg.norm(d6[:, :3], axis=-1, keepdims=True)
    np.testing.assert_allclose(got[:, 0], a1, atol=1e-12)
    assert np.all(np.einsum("ni,ni->n", got[:, 1], d6[:, 3:]) > 0)
    # Invariant to scaling either half by a positive number and to adding a1 to a2.
    scaled = np.concatenate([3.0 * d6[:, :3], 0.5 * d6[:, 3:] + 2.0 * d6[:, :3]], -1)
    np.testing.assert_allclose(np.array(rot.rotation_6d_to_matrix(jnp.asarray(scaled))), got, atol=1e-12)


def test_rotation_6d_float32():
    rng = np.random.default_rng(31)
    d6 = rng.normal(size=(100, 6))
    got = np.array(rot.rotation_6d_to_matrix(jnp.asarray(d6, jnp.float32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _gram_schmidt_rows(d6), atol=5e-6)


# ---------------------------------------------------------------- Euler XYZ


def test_euler_xyz_matches_scipy_intrinsic_xyz(x64):
    rng = np.random.default_rng(37)
    ang = rng.uniform(-np.pi, np.pi, size=(300, 3))
    got = np.array(rot.euler_xyz_to_matrix(jnp.asarray(ang)))
    np.testing.assert_allclose(got, Rotation.from_euler("XYZ", ang).as_matrix(), atol=1e-14)
    # R = Rx Ry Rz, spelled out.
    rx = Rotation.from_euler("x", ang[:, 0:0 + 1]).as_matrix()
    ry = Rotation.from_euler("y", ang[:, 1:1 + 1]).as_matrix()
    rz = Rotation.from_euler("z", ang[:, 2:2 + 1]).as_matrix()
    np.testing.assert_allclose(got, rx @ ry @ rz, atol=1e-14)


def test_euler_xyz_single_axes_are_right_handed():
    for i in range(3):
        a = np.zeros(3)
        a[i] = 0.7
        got = np.array(rot.euler_xyz_to_matrix(jnp.asarray(a, jnp.float32)))
        np.testing.assert_allclose(got, Rotation.from_rotvec(a).as_matrix(), atol=1e-6)


def test_matrix_to_euler_xyz_matches_scipy(x64):
    rng = np.random.default_rng(41)
    ang = np.stack([rng.uniform(-np.pi, np.pi, 300), rng.uniform(-1.5, 1.5, 300),
                    rng.uniform(-np.pi, np.pi, 300)], -1)
    mats = Rotation.from_euler("XYZ", ang).as_matrix()
    got = np.array(rot.matrix_to_euler_xyz(jnp.asarray(mats)))
    np.testing.assert_allclose(got, Rotation.from_matrix(mats).as_euler("XYZ"), atol=1e-10)
    np.testing.assert_allclose(got, ang, atol=1e-10)
    np.testing.assert_allclose(np.array(rot.euler_xyz_to_matrix(jnp.asarray(got))), mats, atol=1e-13)


def test_face_calibration_jaw_to_matrix(x64):
    rng = np.random.default_rng(43)
    ang = rng.uniform(-0.5, 0.5, size=(50, 3))
    r = Rotation.from_euler("XYZ", ang).as_matrix()
    default = np.array(rot.face_calibration_jaw_to_matrix(jnp.asarray(ang)))
    np.testing.assert_allclose(default, np.swapaxes(r, -1, -2), atol=1e-14)
    np.testing.assert_allclose(default, Rotation.from_euler("XYZ", ang).inv().as_matrix(), atol=1e-14)
    explicit = np.array(rot.face_calibration_jaw_to_matrix(jnp.asarray(ang), transposed=True))
    np.testing.assert_array_equal(explicit, default)
    textbook = np.array(rot.face_calibration_jaw_to_matrix(jnp.asarray(ang), transposed=False))
    np.testing.assert_allclose(textbook, r, atol=1e-14)


# ---------------------------------------------------------------- gradients


def _skew_np(v):
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def test_axis_angle_to_matrix_gradient_at_zero_is_generators():
    jac = np.asarray(_jac(rot.axis_angle_to_matrix, "fwd")(jnp.zeros(3)))  # (3, 3, 3)
    assert np.all(np.isfinite(jac))
    for i in range(3):
        np.testing.assert_allclose(jac[..., i], _skew_np(np.eye(3)[i]), atol=1e-7)
    jac_rev = np.asarray(_jac(rot.axis_angle_to_matrix)(jnp.zeros(3)))
    np.testing.assert_allclose(jac_rev, jac, atol=1e-7)


def test_second_derivative_at_zero_is_finite():
    hess = jax.jit(jax.hessian(lambda v: jnp.sum(rot.axis_angle_to_matrix(v) * jnp.arange(9.0).reshape(3, 3))))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(hess)))


@pytest.mark.parametrize("name", ["axis_angle_to_matrix", "matrix_to_axis_angle_identity",
                                  "matrix_to_quaternion_identity", "quaternion_to_axis_angle_identity",
                                  "rotation_6d_identity", "euler_zero"])
def test_gradients_finite_at_exact_zero_rotation(name):
    f, x = {
        "axis_angle_to_matrix": (rot.axis_angle_to_matrix, jnp.zeros(3)),
        "matrix_to_axis_angle_identity": (rot.matrix_to_axis_angle, jnp.eye(3)),
        "matrix_to_quaternion_identity": (rot.matrix_to_quaternion, jnp.eye(3)),
        "quaternion_to_axis_angle_identity": (rot.quaternion_to_axis_angle, jnp.array([1.0, 0, 0, 0])),
        "rotation_6d_identity": (rot.rotation_6d_to_matrix, jnp.array([1.0, 0, 0, 0, 1, 0])),
        "euler_zero": (rot.euler_xyz_to_matrix, jnp.zeros(3)),
    }[name]
    for jac in (_jac(f, "fwd")(x), _jac(f)(x)):
        assert np.all(np.isfinite(np.asarray(jac))), name


def test_matrix_to_axis_angle_gradient_at_identity_is_vee(x64):
    # d/dR of log(R) at I, restricted to skew perturbations, is the "vee" map.
    jac = np.asarray(_jac(rot.matrix_to_axis_angle)(jnp.eye(3)))  # (3, 3, 3)
    for i in range(3):
        k = _skew_np(np.eye(3)[i])
        np.testing.assert_allclose(np.einsum("aij,ij->a", jac, k), np.eye(3)[i], atol=1e-12)


def test_axis_angle_to_matrix_float32_jacobian_accurate_at_small_angles():
    """float32 Jacobian vs the float64 one for angles 1e-5 .. 3 rad.

    Fails if (1 - cos t) / t^2 is evaluated by direct subtraction just above the series threshold:
    in float32 1 - cos t cancels for t ~ 1e-4 .. 1e-2 and the Jacobian is off by up to ~1e-4
    (0.5 * (sin(t/2) / (t/2))^2 keeps it at ~1e-7).
    """
    direction = np.array([0.6, -0.48, 0.64])
    angles = np.array([1e-5, 9e-5, 1.1e-4, 2e-4, 5e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.3, 1.0, 3.0])
    jac = jax.jit(jax.vmap(jax.jacrev(rot.axis_angle_to_matrix)))
    j32 = np.asarray(jac(jnp.asarray(direction * angles[:, None], jnp.float32)), np.float64)
    # Exact Jacobian by float64 central differences of scipy's matrix.
    eps = 1e-7
    j_ref = np.stack([
        np.stack([(Rotation.from_rotvec(direction * a + eps * e).as_matrix()
                   - Rotation.from_rotvec(direction * a - eps * e).as_matrix()) / (2 * eps) for e in np.eye(3)], -1)
        for a in angles])
    err = np.abs(j32 - j_ref).max(axis=(1, 2, 3))
    assert np.all(err < 1e-6), dict(zip(angles.tolist(), err.tolist()))


def test_quaternion_to_axis_angle_reverse_gradient_finite_at_angle_pi():
    """w == 0 (a rotation by exactly pi) is an ordinary point for the xyz part of the map, and forward
    mode is finite there; reverse mode must not turn the unused small-angle branch (2 / w) into NaN."""
    for q in ([0.0, 1.0, 0.0, 0.0], [0.0, 0.6, 0.0, -0.8]):
        q = jnp.asarray(q)
        rev = np.asarray(_jac(rot.quaternion_to_axis_angle)(q))
        fwd = np.asarray(_jac(rot.quaternion_to_axis_angle, "fwd")(q))
        assert np.all(np.isfinite(fwd))
        assert np.all(np.isfinite(rev)), rev
        np.testing.assert_allclose(rev, fwd, atol=1e-6)


def test_matrix_to_axis_angle_reverse_gradient_finite_at_angle_pi():
    """Same root cause as above, through matrix -> quaternion -> axis-angle (e.g. diag(1, -1, -1))."""
    m = jnp.diag(jnp.array([1.0, -1.0, -1.0]))
    rev = np.asarray(_jac(rot.matrix_to_axis_angle)(m))
    assert np.all(np.isfinite(rev)), rev


FD_POINTS = {
    "axis_angle_to_matrix": (rot.axis_angle_to_matrix,
                             [np.zeros(3), np.array([1e-5, -2e-5, 3e-6]), np.array([0.3, -1.2, 0.7]),
                              np.array([0.0, 3.0, 0.1]), np.array([2.5, 2.0, -1.0])]),
    "matrix_to_axis_angle": (rot.matrix_to_axis_angle,
                             [Rotation.from_rotvec(v).as_matrix() for v in
                              ([0.2, -0.4, 0.5], [0.0, 2.8, 0.3], [1e-3, 0, 0])]),
    "matrix_to_quaternion": (rot.matrix_to_quaternion,
                             [Rotation.from_rotvec(v).as_matrix() for v in
                              ([0.2, -0.4, 0.5], [2.9, 0.2, 0.0], [0.0, 0.2, 2.9])]),
    "quaternion_to_axis_angle": (rot.quaternion_to_axis_angle,
                                 [np.array([0.9, 0.1, -0.3, 0.2]), np.array([0.1, 0.7, -0.5, 0.3]),
                                  np.array([1.0, 1e-6, 0.0, -1e-6])]),
    "rotation_6d_to_matrix": (rot.rotation_6d_to_matrix,
                              [np.array([1.0, 0, 0, 0, 1, 0]), np.array([0.3, -1.2, 0.8, 0.5, 0.9, -0.4])]),
    "matrix_to_rotation_6d": (rot.matrix_to_rotation_6d, [Rotation.from_rotvec([0.3, 0.2, 0.1]).as_matrix()]),
    "euler_xyz_to_matrix": (rot.euler_xyz_to_matrix, [np.zeros(3), np.array([0.4, -1.1, 2.5])]),
    "matrix_to_euler_xyz": (rot.matrix_to_euler_xyz,
                            [Rotation.from_euler("XYZ", [0.4, -1.1, 2.5]).as_matrix()]),
    "face_calibration_jaw_to_matrix": (rot.face_calibration_jaw_to_matrix, [np.array([0.2, -0.1, 0.05])]),
}


@pytest.mark.parametrize("name", sorted(FD_POINTS))
def test_gradients_match_central_finite_differences(name, x64):
    f, points = FD_POINTS[name]
    for x in points:
        x = np.asarray(x, np.float64)
        ad = np.asarray(_jac(f)(jnp.asarray(x))).reshape(-1, x.size)
        fd = _fd_jacobian(f, x)
        assert np.all(np.isfinite(ad))
        np.testing.assert_allclose(ad, fd, atol=1e-7, rtol=1e-6, err_msg=f"{name} at {x.ravel()}")
        fwd = np.asarray(_jac(f, "fwd")(jnp.asarray(x))).reshape(ad.shape)  # forward mode agrees with reverse
        np.testing.assert_allclose(fwd, ad, atol=1e-12)


# ---------------------------------------------------------------- broadcasting


def test_broadcasting_over_leading_axes():
    rng = np.random.default_rng(47)
    rv = jnp.asarray(_random_rotvecs(rng, 24).reshape(2, 3, 4, 3), jnp.float32)
    mats = rot.axis_angle_to_matrix(rv)
    assert mats.shape == (2, 3, 4, 3, 3)
    one = jnp.stack([rot.axis_angle_to_matrix(v) for v in rv.reshape(-1, 3)]).reshape(mats.shape)
    np.testing.assert_allclose(np.asarray(mats), np.asarray(one), atol=1e-7)

    assert rot.matrix_to_quaternion(mats).shape == (2, 3, 4, 4)
    assert rot.matrix_to_axis_angle(mats).shape == (2, 3, 4, 3)
    np.testing.assert_allclose(np.array(rot.matrix_to_axis_angle(mats)), np.asarray(rv), atol=2e-5)
    assert rot.quaternion_to_axis_angle(rot.matrix_to_quaternion(mats)).shape == (2, 3, 4, 3)
    d6 = rot.matrix_to_rotation_6d(mats)
    assert d6.shape == (2, 3, 4, 6)
    assert rot.rotation_6d_to_matrix(d6).shape == (2, 3, 4, 3, 3)
    eul = rot.matrix_to_euler_xyz(mats)
    assert eul.shape == (2, 3, 4, 3)
    assert rot.euler_xyz_to_matrix(eul).shape == (2, 3, 4, 3, 3)
    assert rot.face_calibration_jaw_to_matrix(eul).shape == (2, 3, 4, 3, 3)
    np.testing.assert_allclose(np.array(rot.face_calibration_jaw_to_matrix(eul)),
                               np.swapaxes(np.array(rot.euler_xyz_to_matrix(eul)), -1, -2), atol=1e-7)


@pytest.mark.parametrize("name", ["axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_quaternion",
                                  "quaternion_to_axis_angle", "rotation_6d_to_matrix",
                                  "matrix_to_rotation_6d", "euler_xyz_to_matrix", "matrix_to_euler_xyz"])
def test_vmap_and_jit_equal_broadcasting(name):
    f, points = FD_POINTS[name]
    x = jnp.asarray(np.stack(points * 2), jnp.float32)
    looped = np.stack([np.asarray(f(xi)) for xi in x])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(f))(x)), looped, atol=1e-6)


def test_scalar_single_rotation_shapes():
    assert rot.axis_angle_to_matrix(jnp.zeros(3)).shape == (3, 3)
    assert rot.matrix_to_quaternion(jnp.eye(3)).shape == (4,)
    assert rot.matrix_to_rotation_6d(jnp.eye(3)).shape == (6,)
