"""Head pose: the face model's canonical->camera matrix as yaw/pitch/roll, and similarity fits.

Convention (camera frame of the face model: x right, y up, z toward the viewer):
R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees.
"""

from __future__ import annotations

import numpy as np

# Face-model camera frame (y up, z to viewer) <-> image frame (y down, z away from viewer).
FLIP = np.diag([1.0, -1.0, -1.0]).astype(np.float32)


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """(3,) yaw, pitch, roll in degrees from a 3x3 rotation (scale removed first)."""
    u, _, vt = np.linalg.svd(np.asarray(rot, np.float64)[:3, :3])
    r = u @ vt
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.degrees([yaw, pitch, roll]).astype(np.float32)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: s, R, t minimising |s R src + t - dst|^2 over (N, 3) point sets."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    r = u @ np.diag(d) @ vt
    s = float((sig * d).sum() / (a ** 2).sum() * len(src))
    t = md - s * r @ ms
    return s, r.astype(np.float32), t.astype(np.float32)
