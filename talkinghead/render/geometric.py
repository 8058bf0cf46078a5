"""Geometric renderer: the weight-free CPU default. Source portrait + relative Motion -> frames.

Follows the decoupling all five papers share (motion vs appearance; SadTalker's 3D-aware face
render, sadtalker.txt Sec. 3.3, drives a warp from explicit 3D coefficients) without learned
weights:
  1. the detected landmarks are the canonical 468-vertex mesh fitted to the portrait (3D);
  2. the expression rig (rig.py) displaces the mesh; head rotation/translation/scale move it
     about a neck pivot;
  3. a backward thin-plate spline (tps.py) through the moved vertices, a rigid head/hair ring,
     a partly-following neck and a fixed outer ring gives a dense warp of face, hair, ears and
     neck; it is exactly zero beyond the head region, so the background never moves;
  4. eyelids close in source space (eyes.py); the mouth interior is painted where the mouth
     opens wider than in the source (mouth.py).
The warp is computed only inside the head region and written back into the full-resolution
frame, so paste-back is seamless by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from talkinghead.face import regions as R
from talkinghead.face.extract import face_frame
from talkinghead.face.pose import FLIP, euler_to_matrix, matrix_to_euler
from talkinghead.render.background import Backdrop, composite, make_backdrop
from talkinghead.render.eyes import Eyelid, close_eyelid, make_eyelid
from talkinghead.render.mouth import MouthStyle, inner_gap, mouth_style, paint_mouth
from talkinghead.render.rig import ExpressionRig, RigConfig
from talkinghead.render.tps import tps_backward
from talkinghead.types import BS, FaceAnalysis, Motion


@dataclass(frozen=True)
class RenderConfig:
    """Geometry of the warp, in units of the face oval's radius unless said otherwise."""

    grid_cells: int = 48                 # coarse warp grid along the longer side of the region
    head_ring: float = 1.3               # control ring that moves rigidly with the head (hair)
    outer_ring: float = 2.1              # control ring that stays put (background)
    falloff: tuple[float, float] = (1.5, 2.0)  # warp fades to exactly zero over this range
    neck_follow: float = 0.4             # how much the bottom of the head ring follows the head
    ring_expression: float = 0.8         # how much the head ring follows the face outline
    # head rotations turn about the canonical origin, where the face model measures the head's
    # translation (a neck pivot counted the rotation's swing twice: 8.9 -> 3.5 % of the face
    # width landmark error on the Wolfgang dev clip, #10)
    pivot_cm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    blink_gamma: float = 0.8             # blendshape delta -> lid closure curve
    seal_gain: float = 0.0               # mouthPress delta -> share of the lip gap closed (0: off)
    regularization: float = 2e-4
    still_background: bool = True        # head over a still background plate (background.py)
    # lips part as far as the face model reads mouthUpperUp/LowerDown on real smiles; the lower
    # lip drops less (0.8 cm per unit read as jawOpen on turned heads: drive round trip, #10)
    rig: RigConfig = RigConfig(lip_raise_cm=0.8, lip_lower_cm=0.5)


@dataclass
class SourceState:
    """Everything about the portrait that does not change from frame to frame."""

    image: np.ndarray          # (H, W, 3) uint8 source
    work: np.ndarray           # source with eyelids applied (rewritten per frame, eye boxes only)
    out: np.ndarray            # output buffer; only the region box changes
    landmarks: np.ndarray      # (478, 3) px
    blendshapes: np.ndarray    # (52,)
    rotation: np.ndarray       # (3,) source yaw/pitch/roll, degrees (face-model frame)
    scale_px: float            # px per cm of the fitted canonical mesh
    rot_img: np.ndarray        # (3, 3) canonical -> image rotation
    pivot: np.ndarray          # (3,) px
    ring_head: np.ndarray      # (K, 3) px
    ring_follow: np.ndarray    # (K,) how much each head-ring point follows the head
    ring_fixed: np.ndarray     # (M, 2) px
    box: tuple[int, int, int, int]  # region x0, y0, x1, y1
    grid: np.ndarray           # (G, 2) normalised coarse grid points
    grid_shape: tuple[int, int]
    falloff: np.ndarray        # (gh, gw) 1 inside the head, 0 beyond
    active: tuple[int, int, int, int]  # ax0, ay0, ax1, ay1 in the box: where a frame can differ
    base: np.ndarray           # (ay1 - ay0, ax1 - ax0, 2) pixel x, y there, float32
    norm: float                # px per normalised unit
    eyelids: tuple[Eyelid, Eyelid]  # subject's left, right
    mouth: MouthStyle
    mouth_gap: float           # source inner-lip gap, px
    # measured response of the face model to the rig: (rig levels, measured deltas) per channel
    response: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    backdrop: Backdrop | None = None  # foreground mask and background plate (background.py)
    # per-frame constants of the warp (source controls, grid points inside the falloff), made
    # on the first frame; not copied by dataclasses.replace
    frame_constants: tuple | None = field(default=None, init=False, repr=False)

    def region_mask(self) -> np.ndarray:
        """(H, W) bool: where output pixels may differ from the source."""
        import cv2

        x0, y0, x1, y1 = self.box
        m = np.zeros(self.image.shape[:2], bool)
        fine = cv2.resize(self.falloff.astype(np.float32), (x1 - x0, y1 - y0),
                          interpolation=cv2.INTER_LINEAR)
        m[y0:y1, x0:x1] = fine > 0
        for lid in self.eyelids:
            ex0, ey0, ex1, ey1 = lid.box
            m[ey0:ey1, ex0:ex1] = True
        return m


def _oval_radius(oval: np.ndarray, center: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Radius of the face-oval polygon in the given directions (interpolated by angle)."""
    d = oval - center
    a = np.arctan2(d[:, 1], d[:, 0])
    r = np.linalg.norm(d, axis=1)
    o = np.argsort(a)
    a, r = a[o], r[o]
    a = np.concatenate([a - 2 * np.pi, a, a + 2 * np.pi])
    r = np.concatenate([r, r, r])
    return np.interp(angles, a, r)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _active(falloff: np.ndarray, box: tuple[int, int, int, int],
            lids: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """(ax0, ay0, ax1, ay1) in `box`: the pixels the warp's upsampled falloff reaches, and the
    eyelid boxes. Beyond it the displacement is exactly 0 and the remap reads the source at
    integer positions, so a frame there is the source."""
    import cv2

    x0, y0, x1, y1 = box
    fine = cv2.resize(falloff, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(fine > 0)
    if not len(xs):
        return 0, 0, x1 - x0, y1 - y0
    ax0, ay0, ax1, ay1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    for lx0, ly0, lx1, ly1 in lids:
        ax0, ay0 = min(ax0, lx0 - x0), min(ay0, ly0 - y0)
        ax1, ay1 = max(ax1, lx1 - x0), max(ay1, ly1 - y0)
    return (int(max(ax0 - 1, 0)), int(max(ay0 - 1, 0)), int(min(ax1 + 1, x1 - x0)),
            int(min(ay1 + 1, y1 - y0)))


class GeometricRenderer:
    """`prepare(image, face)` once, then `render(state, motion_frame)` per frame (or the
    renderer interface's `frames`, render/base.py)."""

    name = "geometric"
    crops_itself = False      # draws into whatever image it is given (the portrait or its crop)

    def __init__(self, config: RenderConfig = RenderConfig(), calibrate: tuple[str, ...] = ()) -> None:
        self.config = config
        self.calibrate_channels = calibrate   # fitted in `prepare` when given a landmarker
        self.rig = ExpressionRig(config.rig)
        self.control = np.array(R.WARP_CONTROL)

    @classmethod
    def from_options(cls, options) -> "GeometricRenderer":
        return cls(options.geometric or RenderConfig(), options.calibrate)

    def frames(self, state: SourceState, motion: Motion, inputs) -> Iterator[np.ndarray]:
        """One full frame per Motion frame (the interface's stream; audio is not used)."""
        from tqdm import tqdm

        steps = tqdm(range(len(motion)), disable=None if inputs.progress else True,
                     desc="rendering", unit="frame", leave=False)
        return (self.render(state, motion[t]) for t in steps)

    def paste(self, state: SourceState, crop: np.ndarray) -> np.ndarray:
        return crop               # frames are drawn into the full image already

    def prepare(self, image: np.ndarray, face: FaceAnalysis, landmarker=None) -> SourceState:
        state = self._prepare(image, face)
        if landmarker is not None and self.calibrate_channels:
            self.calibrate(state, landmarker, self.calibrate_channels)
        return state

    def _prepare(self, image: np.ndarray, face: FaceAnalysis) -> SourceState:
        cfg = self.config
        lm = face.landmarks.astype(np.float32)
        h, w = image.shape[:2]
        s, rot, t = face_frame(face)
        pivot = s * rot @ (np.asarray(cfg.pivot_cm, np.float32)) + t
        oval = lm[list(R.FACE_OVAL), :2]
        center = oval.mean(0)
        up = lm[10, :2] - lm[152, :2]
        up /= np.linalg.norm(up) + 1e-6
        ring_head = np.concatenate([center + cfg.head_ring * (oval - center),
                                    np.full((len(oval), 1), pivot[2])], 1)
        dirs = (oval - center) / (np.linalg.norm(oval - center, axis=1, keepdims=True) + 1e-6)
        follow = cfg.neck_follow + (1 - cfg.neck_follow) * _smoothstep(-0.7, 0.2, dirs @ up)
        ring_fixed = center + cfg.outer_ring * (oval - center)
        r_max = float(np.linalg.norm(oval - center, axis=1).max())
        reach = cfg.outer_ring * r_max
        x0, y0 = int(max(0, np.floor(center[0] - reach))), int(max(0, np.floor(center[1] - reach)))
        x1, y1 = int(min(w, np.ceil(center[0] + reach))), int(min(h, np.ceil(center[1] + reach)))
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32)
        ring_fixed = np.concatenate([ring_fixed, corners])
        bw, bh = x1 - x0, y1 - y0
        cell = max(bw, bh) / cfg.grid_cells
        gw, gh = max(2, int(np.ceil(bw / cell))), max(2, int(np.ceil(bh / cell)))
        # coarse sample positions that cv2.resize(INTER_LINEAR) interpolates exactly
        gx = (np.arange(gw) + 0.5) * bw / gw - 0.5 + x0
        gy = (np.arange(gh) + 0.5) * bh / gh - 0.5 + y0
        gxx, gyy = np.meshgrid(gx, gy)
        pts = np.stack([gxx.ravel(), gyy.ravel()], 1)
        ang = np.arctan2(pts[:, 1] - center[1], pts[:, 0] - center[0])
        rho = np.linalg.norm(pts - center, axis=1) / _oval_radius(oval, center, ang)
        falloff = (1.0 - _smoothstep(*cfg.falloff, rho)).reshape(gh, gw).astype(np.float32)
        norm = float(max(bw, bh))
        eyelids = (make_eyelid(lm, R.LEFT_EYE_UPPER, R.LEFT_EYE_LOWER, (h, w)),
                   make_eyelid(lm, R.RIGHT_EYE_UPPER, R.RIGHT_EYE_LOWER, (h, w)))
        active = _active(falloff, (x0, y0, x1, y1), [lid.box for lid in eyelids])
        ax0, ay0, ax1, ay1 = active
        base = np.stack(np.meshgrid(np.arange(x0 + ax0, x0 + ax1, dtype=np.float32),
                                    np.arange(y0 + ay0, y0 + ay1, dtype=np.float32)), -1)
        return SourceState(
            image=image, work=image.copy(), out=image.copy(), landmarks=lm,
            blendshapes=face.blendshapes.copy(), rotation=matrix_to_euler(face.matrix[:3, :3]),
            scale_px=s, rot_img=rot, pivot=pivot.astype(np.float32), ring_head=ring_head,
            ring_follow=follow.astype(np.float32), ring_fixed=ring_fixed.astype(np.float32),
            box=(x0, y0, x1, y1), grid=((pts - [x0, y0]) / norm).astype(np.float32),
            grid_shape=(gh, gw), falloff=falloff, active=active, base=base, norm=norm,
            eyelids=eyelids, mouth=mouth_style(image, lm), mouth_gap=inner_gap(lm),
            backdrop=make_backdrop(image, lm, (x0, y0, x1, y1), cfg.head_ring)
            if cfg.still_background else None)

    # -- per frame -------------------------------------------------------------------------
    def head_transform(self, state: SourceState, rotation: np.ndarray, translation: np.ndarray,
                       scale: float):
        """A function moving (N, 3) image points with the head, from pose deltas."""
        r_src = euler_to_matrix(*state.rotation)
        r_tgt = euler_to_matrix(*(state.rotation + rotation))
        r_img = FLIP @ (r_tgt @ r_src.T) @ FLIP
        shift = state.scale_px * np.array([translation[0], -translation[1], 0.0], np.float32)
        pivot = state.pivot

        def move(p: np.ndarray) -> np.ndarray:
            return scale * (p - pivot) @ r_img.T + pivot + shift

        return move

    # -- closed-loop calibration -------------------------------------------------------------
    CALIBRATED = {"jawOpen": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6),
                  "eyeBlink": (0.0, 0.3, 0.5, 0.7, 0.85, 1.0)}

    def calibrate(self, state: SourceState, landmarker,
                  channels: tuple[str, ...] = ("jawOpen", "eyeBlink")) -> None:
        """Measure how the face model reads this portrait's rendered jaw and lids, so that a
        requested blendshape delta is rendered at the size the face model reads back.

        Renders about a dozen frames of the portrait itself (no driving data) and stores a
        monotone response curve per channel in `state.response`.
        """
        neutral = Motion(np.zeros((1, 52)), np.zeros((1, 3)), np.zeros((1, 3)), np.ones(1),
                         np.zeros((1, 2)), relative=True)
        state.response = {}
        for name, levels in self.CALIBRATED.items():
            if name not in channels:
                continue
            idx = [BS[c] for c in (["eyeBlinkLeft", "eyeBlinkRight"] if name == "eyeBlink" else [name])]
            read = []
            for level in levels:
                b = neutral.blendshapes.copy()
                b[0, idx] = level
                faces = landmarker.detect(self.render(state, replace(neutral, blendshapes=b)))
                if not faces:
                    read.append(read[-1] if read else 0.0)
                    continue
                read.append(float(np.mean(faces[0].blendshapes[idx])))
            measured = np.maximum.accumulate(np.asarray(read) - read[0])
            if measured[-1] > 0.05:  # a usable curve; otherwise keep the identity
                state.response[name] = (np.asarray(levels, np.float32), measured.astype(np.float32))

    def _rig_level(self, state: SourceState, name: str, value: np.ndarray) -> np.ndarray:
        """Rig level that the face model reads as `value` (identity when uncalibrated)."""
        if name not in state.response:
            return value
        levels, measured = state.response[name]
        top = int(np.argmax(measured))  # beyond the strongest measured level: saturate there
        if name == "jawOpen":
            # one least-squares gain: the face model barely reads a slightly open jaw, so the
            # curve's inverse turned its small, noisy readings of the driver into open mouths
            # (drive round trip jawOpen r 0.79 -> 0.82, #10)
            lv, ms = levels[:top + 1], measured[:top + 1]
            gain = max(float((lv * ms).sum() / max((lv * lv).sum(), 1e-6)), 1e-3)
            return np.sign(value) * np.minimum(np.abs(value) / gain, lv[-1])
        x = measured[:top + 1] + np.arange(top + 1) * 1e-4  # strictly increasing for interp
        out = np.interp(np.abs(value), x, levels[:top + 1])
        return np.sign(value) * out

    def dest_points(self, state: SourceState, frame: Motion) -> tuple[np.ndarray, np.ndarray]:
        """Destination (468, 3) mesh and (K, 2) head ring for a one-frame relative Motion."""
        coeffs = frame.blendshapes[0].copy()
        coeffs[BS["jawOpen"]] = self._rig_level(state, "jawOpen", coeffs[BS["jawOpen"]])
        delta = state.scale_px * self.rig.deform(coeffs) @ state.rot_img.T
        mesh = state.landmarks[:468] + delta
        press = 0.5 * (coeffs[BS["mouthPressLeft"]] + coeffs[BS["mouthPressRight"]])
        seal = float(np.clip(self.config.seal_gain * press, 0.0, 1.0))
        if seal > 0:
            delta = delta + self._lip_seal(mesh, seal)
            mesh = state.landmarks[:468] + delta
        move = self.head_transform(state, frame.rotation[0], frame.translation[0],
                                   float(frame.scale[0]))
        # the head ring carries the expression of its oval vertex (a dropping jaw takes the
        # skin under the chin along) and, partly at the neck, the head motion
        ring = state.ring_head + self.config.ring_expression * delta[list(R.FACE_OVAL)]
        f = state.ring_follow[:, None]
        ring = f * move(ring)[:, :2] + (1 - f) * ring[:, :2]
        return move(mesh), ring

    @staticmethod
    def _lip_seal(mesh: np.ndarray, seal: float) -> np.ndarray:
        """(468, 3) displacement that closes `seal` of the inner-lip gap (bilabials: p, b, m).

        Inner lips meet at their midline; outer lips follow half-way, so lips parted in the
        source (a smile showing teeth) can still close over the teeth.
        """
        out = np.zeros_like(mesh)
        up, lo = list(R.LIPS_INNER_UPPER[1:-1]), list(R.LIPS_INNER_LOWER[1:-1])
        mid = 0.5 * (mesh[up] + mesh[lo])
        out[up] = seal * (mid - mesh[up])
        out[lo] = seal * (mid - mesh[lo])
        out[list(R.LIPS_OUTER_UPPER[1:-1])] = 0.5 * out[up]
        out[list(R.LIPS_OUTER_LOWER[1:-1])] = 0.5 * out[lo]
        return out

    def _frame_constants(self, state: SourceState, offset: np.ndarray):
        """(normalised source controls, grid indices inside the falloff, their grid points):
        the same every frame, made once per portrait (#12)."""
        if state.frame_constants is None:
            src = np.concatenate([state.landmarks[self.control, :2], state.ring_head[:, :2],
                                  state.ring_fixed])
            inside = np.flatnonzero(state.falloff.ravel() > 0)  # the warp is exactly 0 beyond
            state.frame_constants = ((src - offset) / state.norm, inside, state.grid[inside])
        return state.frame_constants

    def render(self, state: SourceState, frame: Motion) -> np.ndarray:
        """One (H, W, 3) uint8 frame for a one-frame *relative* Motion (delta from the source)."""
        import cv2

        if not frame.relative:
            raise ValueError("render() takes relative motion (Motion.relative_to(source))")
        cfg = self.config
        mesh, ring = self.dest_points(state, frame)
        x0, y0, x1, y1 = state.box
        offset = np.array([x0, y0], np.float32)
        dest = np.concatenate([mesh[self.control, :2], ring, state.ring_fixed])
        src, inside, grid = self._frame_constants(state, offset)
        gh, gw = state.grid_shape
        mapped = tps_backward((dest - offset) / state.norm, src, grid, cfg.regularization)
        disp = np.zeros((gh * gw, 2), np.float32)
        disp[inside] = (mapped - grid) * state.norm
        disp = disp.reshape(gh, gw, 2) * state.falloff[..., None]
        fine = cv2.resize(disp, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        # beyond `active` the warp is exactly 0 and the frame is the source: only `active` is
        # drawn, unless the mesh (and so the painted mouth) leaves it
        ax0, ay0, ax1, ay1 = state.active
        lo, hi = mesh[:, :2].min(0) - (x0, y0), mesh[:, :2].max(0) - (x0, y0)
        if lo[0] < ax0 + 4 or lo[1] < ay0 + 4 or hi[0] > ax1 - 4 or hi[1] > ay1 - 4:
            ax0, ay0, ax1, ay1 = 0, 0, x1 - x0, y1 - y0
            base = np.stack(np.meshgrid(np.arange(x0, x1, dtype=np.float32),
                                        np.arange(y0, y1, dtype=np.float32)), -1)
        else:
            base = state.base
        fine = fine[ay0:ay1, ax0:ax1]
        fine += base                                                     # (ah, aw, 2) source x, y
        # 2. eyelids (source space), blink delta -> closure of what the source leaves open
        blink = frame.blendshapes[0, [BS["eyeBlinkLeft"], BS["eyeBlinkRight"]]]
        src_blink = state.blendshapes[[BS["eyeBlinkLeft"], BS["eyeBlinkRight"]]]
        for lid, db, sb in zip(state.eyelids, blink, src_blink):
            if "eyeBlink" in state.response:
                amount = self._rig_level(state, "eyeBlink", np.float32(db))
            else:
                amount = np.clip(db / max(1.0 - sb, 0.2), 0.0, 1.0) ** cfg.blink_gamma
            close_eyelid(state.work, state.image, lid, float(amount), frame.blendshapes[0])
        # 3. dense warp of the head region into the full-resolution frame
        warped = cv2.remap(state.work, fine, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # the head moves over a still background plate: nothing outside it is dragged
        state.out[y0 + ay0:y0 + ay1, x0 + ax0:x0 + ax1] = warped if state.backdrop is None else \
            composite(warped, fine, replace(state.backdrop, plate=state.backdrop.plate[ay0:ay1, ax0:ax1]))
        # 4. mouth interior: teeth, tongue and cavity behind the lips (mouth.py)
        paint_mouth(state.out, mesh, state.mouth_gap, state.mouth)
        return state.out.copy()
