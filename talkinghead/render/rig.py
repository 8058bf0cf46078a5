"""Expression rig: blendshape coefficients -> vertex displacements of the canonical face mesh.

Our weight-free stand-in for the 3DMM expression basis that SadTalker's face render is driven by
(sadtalker.txt, Sec. 3.1/3.3): each ARKit-style coefficient moves a region of the 468-vertex
mesh. Units are cm in the canonical frame with image axes (x right, y down, z away from the
viewer). jawOpen is a rotation of the lower face about the jaw hinge; the rest are linear
displacement fields with smooth regional weights. "Left" is the subject's left (+x here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.face import regions as R
from talkinghead.face.mesh import canonical_mesh
from talkinghead.face.pose import FLIP
from talkinghead.types import BS


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class RigConfig:
    jaw_degrees: float = 20.0       # jaw rotation at jawOpen = 1 ...
    jaw_drop_cm: float = 2.0        # ... plus the condyle's slide down (chin drops, not only swings)
    jaw_hinge: tuple[float, float, float] = (0.0, -0.5, 3.0)  # cm, canonical (image axes)
    lip_raise_cm: float = 0.15      # upper lip up per unit of mouthUpperUp ...
    lip_lower_cm: float | None = None  # ... lower lip down per unit of mouthLowerDown (None: same)
    smile_cm: float = 0.45
    brow_cm: float = 0.5


class ExpressionRig:
    """`deform(coefficients)` -> (468, 3) displacement in canonical cm (image axes)."""

    def __init__(self, config: RigConfig = RigConfig()) -> None:
        self.config = config
        v = canonical_mesh().vertices @ FLIP  # (468, 3) x right, y down, z away
        self.vertices = v
        x, y = v[:, 0], v[:, 1]
        n = len(v)
        lower = np.zeros(n, bool)
        lower[list(set(R.LIPS_OUTER_LOWER + R.LIPS_INNER_LOWER))] = True
        upper = np.zeros(n, bool)
        upper[list(set(R.LIPS_OUTER_UPPER + R.LIPS_INNER_UPPER))] = True
        corners = list(R.MOUTH_CORNERS) + [78, 308]
        lower[corners] = upper[corners] = False
        y_mouth = v[[13, 14], 1].mean()
        half_width = abs(v[61, 0] - v[291, 0]) / 2.0
        # jaw weight: the face below the mouth line swings with the jaw, lips by membership
        w = _smoothstep(y_mouth - 1.2, y_mouth + 1.2, y)
        w[upper] = 0.0
        w[lower] = 0.45 + 0.55 * np.clip(1.0 - (x[lower] / half_width) ** 2, 0.0, 1.0)
        w[corners] = 0.4
        self.jaw_weight = w.astype(np.float32)
        self.lower_lip, self.upper_lip = lower, upper
        self.left = _smoothstep(-0.6, 0.6, x).astype(np.float32)  # subject's left = +x
        self.right = 1.0 - self.left
        self.basis = self._linear_basis(v, lower, upper, y_mouth, half_width)

    def _linear_basis(self, v: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                      y_mouth: float, half_width: float) -> np.ndarray:
        """(52, 468, 3) displacement per unit of each linear coefficient."""
        c = self.config
        b = np.zeros((len(BS), len(v), 3), np.float32)
        mouth_c = v[[13, 14, 61, 291]].mean(0)
        d_mouth = np.linalg.norm(v - mouth_c, axis=1)
        near_mouth = np.exp(-(d_mouth / 2.6) ** 2)
        lips = lower | upper
        lip_w = lips.astype(np.float32)
        lip_w[[61, 291, 78, 308]] = 1.0

        def corner_weight(idx: int, sigma: float = 1.1) -> np.ndarray:
            return np.exp(-(np.linalg.norm(v - v[idx], axis=1) / sigma) ** 2)

        for side, corner, sign, sw in (("Left", 291, 1.0, self.left), ("Right", 61, -1.0, self.right)):
            cw = corner_weight(corner)
            b[BS[f"mouthSmile{side}"], :, 0] = sign * c.smile_cm * 0.8 * cw
            b[BS[f"mouthSmile{side}"], :, 1] = -c.smile_cm * cw
            b[BS[f"mouthStretch{side}"], :, 0] = sign * c.smile_cm * cw
            b[BS[f"mouthStretch{side}"], :, 1] = 0.1 * cw
            b[BS[f"mouthFrown{side}"], :, 1] = 0.35 * cw
            b[BS[f"mouthDimple{side}"], :, 0] = sign * 0.2 * cw
            b[BS[f"mouthUpperUp{side}"], :, 1] = -c.lip_raise_cm * upper * sw
            drop = c.lip_raise_cm if c.lip_lower_cm is None else c.lip_lower_cm
            b[BS[f"mouthLowerDown{side}"], :, 1] = drop * lower * sw
            press = 0.12 * sw
            b[BS[f"mouthPress{side}"], :, 1] = press * np.isin(np.arange(len(v)), R.LIPS_OUTER_UPPER) \
                - press * np.isin(np.arange(len(v)), R.LIPS_OUTER_LOWER)
            b[BS[f"cheekSquint{side}"], :, 1] = -0.2 * sw * np.isin(np.arange(len(v)), R.CHEEKS)
            b[BS[f"browOuterUp{side}"], list(R.LEFT_BROW_OUTER if side == "Left" else R.RIGHT_BROW_OUTER), 1] = -c.brow_cm
            brow = list(R.LEFT_BROW if side == "Left" else R.RIGHT_BROW)
            inner = list(R.LEFT_BROW_INNER if side == "Left" else R.RIGHT_BROW_INNER)
            b[BS[f"browDown{side}"], brow, 1] = 0.7 * c.brow_cm
            b[BS[f"browDown{side}"], inner, 0] = -sign * 0.15
            b[BS[f"noseSneer{side}"], :, 1] = -0.15 * sw * corner_weight(98 if sign < 0 else 327, 0.8)
        inner_brows = list(R.LEFT_BROW_INNER + R.RIGHT_BROW_INNER)
        b[BS["browInnerUp"], inner_brows, 1] = -c.brow_cm
        # pucker: lips narrow toward the centre and push forward; funnel: lips flare open
        b[BS["mouthPucker"], :, 0] = -0.6 * (v[:, 0] - mouth_c[0]) / half_width * near_mouth
        b[BS["mouthPucker"], :, 2] = -0.5 * near_mouth
        radial = v[:, :2] - mouth_c[:2]
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-6)
        inner = np.isin(np.arange(len(v)), R.LIPS_INNER_UPPER + R.LIPS_INNER_LOWER)
        b[BS["mouthFunnel"], :, :2] = 0.25 * radial * (inner * 1.0 + lip_w * 0.3)[:, None]
        b[BS["mouthFunnel"], :, 2] = -0.3 * lip_w
        b[BS["mouthRollLower"], :, 1] = -0.12 * lower
        b[BS["mouthRollUpper"], :, 1] = 0.12 * upper
        b[BS["mouthShrugLower"], :, 1] = -0.15 * lower
        b[BS["mouthShrugUpper"], :, 1] = -0.1 * upper
        b[BS["mouthLeft"], :, 0] = 0.4 * near_mouth
        b[BS["mouthRight"], :, 0] = -0.4 * near_mouth
        b[BS["jawLeft"], :, 0] = 0.6 * self.jaw_weight
        b[BS["jawRight"], :, 0] = -0.6 * self.jaw_weight
        b[BS["jawForward"], :, 2] = -0.5 * self.jaw_weight
        cheeks = np.exp(-((np.abs(v[:, 0]) - 4.0) ** 2 + (v[:, 1] - y_mouth + 0.8) ** 2) / 2.0)
        b[BS["cheekPuff"], :, 0] = 0.35 * np.sign(v[:, 0]) * cheeks
        return b

    def deform(self, coefficients: np.ndarray) -> np.ndarray:
        """(468, 3) displacement for (52,) blendshape deltas (relative to the source face)."""
        c = np.asarray(coefficients, np.float32)
        linear = np.tensordot(c, self.basis, axes=1)  # (468, 3)
        theta = np.radians(self.config.jaw_degrees) * c[BS["jawOpen"]]
        hinge = np.asarray(self.config.jaw_hinge, np.float32)
        p = self.vertices - hinge
        ct, st = np.cos(theta), np.sin(theta)
        rotated = np.stack([p[:, 0], p[:, 1] * ct - p[:, 2] * st, p[:, 1] * st + p[:, 2] * ct], 1)
        jaw = rotated - p
        jaw[:, 1] += self.config.jaw_drop_cm * c[BS["jawOpen"]]
        jaw *= self.jaw_weight[:, None]
        # mouthClose: the lips meet while the jaw is open (lower lip follows the upper one)
        close = np.clip(c[BS["mouthClose"]], 0.0, 1.0)
        jaw[self.lower_lip] *= 1.0 - close
        return (linear + jaw).astype(np.float32)
