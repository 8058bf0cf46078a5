"""Audio-driven animation: portrait + speech -> talking video (the product's main job).

Stages: check inputs; analyse the portrait and calibrate the renderer; audio -> per-frame
features (Whisper-base by default); features -> relative Motion through a motion model
(FD2Talk's diffusion transformers by default), the mouth rested where the audio is quiet;
optional reference pose/blink from videos;
render and encode, streaming frame by frame so memory does not grow with the audio's length.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError
from talkinghead.face.canvas import MAX_SIZE
from talkinghead.face.landmarker import CachedLandmarker
from talkinghead.io.audio import read_audio
from talkinghead.io.video import Background, check_video_output, write_video
from talkinghead.data.visemes import MOUTH_CHANNELS
from talkinghead.motion.filters import gate_mouth, speech_gate, still
from talkinghead.motion.generate import MOTION_MODELS, MotionControls, get_motion_model
from talkinghead.pipelines.drive import Portrait, cv2_threads, library_threads, load_portrait, timed
from talkinghead.render.base import RenderInputs, RenderOptions, get_renderer
from talkinghead.render.enhance.face import enhance_stage
from talkinghead.render.geometric import RenderConfig
from talkinghead.types import BS, AudioClip, Motion
from talkinghead.audio.features import SAMPLE_RATE, AudioFeatures, num_frames

MIN_SECONDS = 0.2
# motion models that run without torch (numpy ports, with their Whisper features); the pipeline
# imports torch up front for the others
TORCH_FREE_MOTION = ("fd2talk",)


@dataclass(frozen=True)
class GenerateConfig:
    fps: float = 25.0
    mode: str = "full"               # "full": paste back into the whole image; "crop"
    crop_size: int = 512
    motion_model: str = "fd2talk"
    expression_scale: float = 1.0
    pose_scale: float = 1.0
    still: bool = False
    ref_pose: str | None = None      # video: its head motion replaces the generated pose
    ref_blink: str | None = None     # video: its blinks replace the generated blinks
    # fit the rig's eyelids to the face model (so blinks read back as blinks); the jaw keeps the
    # rig's own linear scale: calibrating it (as `drive` does) maps the motion model's small
    # resting values onto visibly parted lips, because the face model barely reads a slight jaw
    calibrate: tuple[str, ...] = ("eyeBlink",)
    gate: bool = True                # rest the mouth where the audio is quiet (speech_gate)
    max_size: int | None = MAX_SIZE  # cap on the full output's longer side (None: keep)
    enhance: str | None = None       # Real-ESRGAN model: the face upscaled x2 after rendering (render/enhance)
    # generated bilabials (mouthPress) seal the lips, also over teeth the portrait shows at rest;
    # `drive` leaves this off (a driving face's own lips already close in its jaw/lip motion)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(seal_gain=2.5))
    renderer: str = "geometric"      # a name in render.base.renderer_names(): geometric, dawn, sadtalker
    dawn_checkpoint: str | None = None
    dawn_steps: int = 10             # DDIM steps of the A2V-FDM
    sadtalker_checkpoints: str | None = None  # SadTalker's released checkpoint folder
    sadtalker_pose_style: int | None = None   # the released PoseVAE's style 0..45 drives head pose
    renderer_checkpoint: str | None = None    # the picked renderer's checkpoint (difftalk, fd2talk)
    prompt: str | None = None        # text prompt steering the expression (motion/prompt.py)
    prompt_checkpoint: str | None = None      # prompt model folder (default: the shipped one)
    prompt_guidance: float = 1.0     # classifier-free guidance on the prompt


@dataclass
class GenerateOutput:
    path: Path
    num_frames: int
    fps: float
    motion: Motion                   # the relative motion that was rendered
    portrait: Portrait
    timings: dict[str, float]


def load_speech(path: str | Path) -> AudioClip:
    """Read audio for generation: 16 kHz mono, at least MIN_SECONDS long."""
    clip = read_audio(path)
    if clip.duration < MIN_SECONDS:
        raise InputError(f"{path}: audio is {clip.duration:.2f} s long; need at least {MIN_SECONDS} s")
    return clip


def _reference(video: str, length: int, fps: float) -> Motion:
    """Relative motion of a reference video, re-timed and looped (mirrored) to `length` frames."""
    from talkinghead.face.extract import extract_video_motion

    ref = extract_video_motion(video, progress=False)
    ref = ref.relative_to(ref[0]).resample(fps)
    if len(ref) >= length:
        return ref[:length]
    cycle = np.concatenate([np.arange(len(ref)), np.arange(len(ref) - 2, 0, -1)])  # ping-pong
    return ref[np.resize(cycle, length)]


def apply_references(motion: Motion, ref_pose: str | None, ref_blink: str | None,
                     refs: dict[str, Motion] | None = None, start: int = 0) -> Motion:
    """Reference pose/blinks over `motion`; `refs`: the references already re-timed to the whole
    clip (`references`), of which `motion` holds frames [start, start + len(motion))."""
    if refs is None:
        refs = references(len(motion), motion.fps, ref_pose, ref_blink)
    span = slice(start, start + len(motion))
    if ref_pose:
        ref = refs[ref_pose][span]
        motion = replace(motion, rotation=ref.rotation, translation=ref.translation, scale=ref.scale)
    if ref_blink:
        ref = refs[ref_blink][span]
        blend = motion.blendshapes.copy()
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            blend[:, BS[name]] = ref.blendshapes[:, BS[name]]
        motion = replace(motion, blendshapes=blend)
    return motion


def references(length: int, fps: float, ref_pose: str | None, ref_blink: str | None) -> dict[str, Motion]:
    return {v: _reference(v, length, fps) for v in {ref_pose, ref_blink} if v}


class GeneratePipeline:
    def __init__(self, config: GenerateConfig = GenerateConfig()) -> None:
        self.config = config
        self.renderer = get_renderer(config.renderer, RenderOptions(
            mode=config.mode, crop_size=config.crop_size, calibrate=config.calibrate,
            geometric=config.render, steps=config.dawn_steps, pose_style=config.sadtalker_pose_style,
            checkpoints={"dawn": config.dawn_checkpoint, "sadtalker": config.sadtalker_checkpoints,
                         **({config.renderer: config.renderer_checkpoint} if config.renderer_checkpoint else {})}))
        if config.motion_model not in MOTION_MODELS:
            get_motion_model(config.motion_model)                     # the unknown-name error
        if config.motion_model not in TORCH_FREE_MOTION:
            import torch  # noqa: F401 - before the loads and the call: skip_init, torch_threads act
        self._motion_model = None
        if config.prompt is not None:  # its module imports torch: not on the default path
            from talkinghead.motion.prompt import prompted_motion

            self._motion_model = prompted_motion(config.motion_model, config.prompt,
                                                 config.prompt_checkpoint, config.prompt_guidance)
        self._extractor = None
        self._lock = threading.RLock()

    @property
    def motion_model(self):
        """Loaded on first use (in `generate`, by the worker thread, while the portrait is analysed)."""
        with self._lock:
            if self._motion_model is None:
                with skip_init():  # every parameter is then loaded strictly
                    self._motion_model = get_motion_model(self.config.motion_model)
        return self._motion_model

    @property
    def extractor(self):
        """Loaded on first use (in `generate`, by the worker thread, while the portrait is analysed)."""
        with self._lock:
            if self._extractor is None:
                from talkinghead.audio.features import get_extractor

                kind = self.motion_model.feature
                with skip_init():  # every parameter is then loaded strictly (whisper, mel)
                    self._extractor = get_extractor(kind)
        return self._extractor

    def prefetch_models(self) -> threading.Thread:
        """Load the motion model and the feature extractor in a background thread (each at most
        once: the properties' lock). The streamed call's worker then finds them loaded instead of
        loading them beside the portrait's analysis, where their 0.06 CPU s took 0.17 s of wall
        (the two threads take turns at the GIL). Two 12-pair A/Bs of the sample's whole process
        (cached face readings, load 0.8-1.9): first frame 2.98 -> 2.86 s and 3.26 -> 3.10 s;
        cold: 3.46 -> 3.13 s and 3.31 -> 3.50 s. A failure here is left for the worker's own
        load to raise. The call joins it before it returns or raises: a daemon thread left
        loading inside torch while the process exited after a bad-audio error aborted it
        ("terminate called without an active exception" after the one-line error)."""
        def load() -> None:
            try:
                self.motion_model, self.extractor
            except Exception:  # noqa: BLE001 - raised again by the worker's load
                pass

        thread = threading.Thread(target=load, name="talkinghead-prefetch")
        thread.start()
        return thread

    def motion(self, clip: AudioClip, controls: MotionControls = MotionControls(),
               features: AudioFeatures | None = None) -> Motion:
        """Audio clip -> relative Motion (features, motion model, references, scales, still)."""
        cfg = self.config
        if features is None:
            features = self.extractor(clip, cfg.fps)
        motion = self.motion_model(features, controls)
        gate = speech_gate(clip.mono(), len(motion), cfg.fps) if cfg.gate else None
        return self._finish(motion, gate, None)

    def _finish(self, motion: Motion, gate: np.ndarray | None, refs: dict[str, Motion] | None,
                start: int = 0) -> Motion:
        """The pipeline's steps after the motion model, on frames [start, start + len(motion))."""
        cfg = self.config
        if gate is not None:
            # a prompt's smile is an expression, not speech: it stays through pauses
            mouth = [BS[c] for c in MOUTH_CHANNELS if not (cfg.prompt and c.startswith("mouthSmile"))]
            motion = gate_mouth(motion, gate[start:start + len(motion)], mouth)
        motion = apply_references(motion, cfg.ref_pose, cfg.ref_blink, refs, start)
        motion = motion.scaled(cfg.expression_scale, cfg.pose_scale)
        return still(motion) if cfg.still else motion

    def motion_chunks(self, clip: AudioClip, controls: MotionControls, timings: dict[str, float],
                      finish: bool = True) -> Iterator[Motion]:
        """`motion`, chunk by chunk as the features arrive (concatenated, the same up to rounding:
        FD2TalkMotion.stream). Worker seconds (wall and thread CPU) go to timings. Without
        `finish`: the motion model's chunks, for the caller to `_finish` (gate, references...)."""
        cfg = self.config
        if clip.sample_rate != SAMPLE_RATE:
            raise InputError(f"features need {SAMPLE_RATE} Hz audio, got {clip.sample_rate} Hz")
        samples = clip.samples[0] if clip.samples.shape[0] == 1 else clip.mono()  # no copy if mono
        total = num_frames(len(samples), cfg.fps)
        for k in ("features", "motion", "features_cpu", "motion_cpu"):
            timings[k] = 0.0
        t0, c0 = time.perf_counter(), time.thread_time()
        gate = speech_gate(samples, total, cfg.fps) if finish and cfg.gate else None
        refs = references(total, cfg.fps, cfg.ref_pose, cfg.ref_blink) if finish else None

        def features() -> Iterator[np.ndarray]:
            chunks = self.extractor.frame_chunks(samples, cfg.fps, total)  # no second mono copy
            while True:
                t, c = time.perf_counter(), time.thread_time()
                rows = next(chunks, None)
                timings["features"] += time.perf_counter() - t
                timings["features_cpu"] += time.thread_time() - c
                if rows is None:
                    return
                yield rows

        start = 0
        for m in self.motion_model.stream(features(), total, cfg.fps, controls):
            m = self._finish(m, gate, refs, start) if finish else m
            start += len(m)
            timings["motion"] = time.perf_counter() - t0 - timings["features"]
            timings["motion_cpu"] = time.thread_time() - c0 - timings["features_cpu"]
            yield m

    def __call__(self, image: str | Path, audio: str | Path, output: str | Path,
                 controls: MotionControls = MotionControls(), progress: bool = True) -> GenerateOutput:
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # 1. Check inputs and the output path before any work
        output = check_video_output(output, {"portrait": image, "audio": audio,
                                             "reference pose video": cfg.ref_pose,
                                             "reference blink video": cfg.ref_blink}, audio=True)
        for ref in (cfg.ref_pose, cfg.ref_blink):
            if ref and not Path(ref).is_file():
                raise InputError(f"{ref}: reference video not found")
        # the models load while the speech is read and the streamed call starts
        prefetch = self.prefetch_models() if self.renderer.name == "geometric" else None
        try:
            clip = load_speech(audio)
            if self.renderer.name != "geometric":
                return self._whole(image, clip, audio, output, controls, progress, timings, t0)
            return self._streamed(image, clip, audio, output, controls, progress, timings, t0)
        finally:
            if prefetch is not None:  # no thread left behind, also when the call fails
                prefetch.join()

    def _portrait(self, image: str | Path) -> tuple[Portrait, object]:
        """Analyse the portrait (and calibrate the renderer's response to it). The face model's
        readings are cached by image content (CachedLandmarker): a portrait seen before needs
        no MediaPipe."""
        cfg = self.config
        with CachedLandmarker() as landmarker:
            mode = "full" if self.renderer.crops_itself else cfg.mode
            portrait = load_portrait(image, landmarker, mode, cfg.crop_size, cfg.max_size)
            return portrait, self.renderer.prepare(portrait.image, portrait.face, landmarker)

    def _streamed(self, image, clip: AudioClip, audio, output, controls: MotionControls,
                  progress: bool, timings: dict[str, float], t0: float) -> GenerateOutput:
        """Geometric renderer: features and motion computed chunk by chunk in a worker thread
        (from the start, alongside the portrait's analysis), each chunk rendered and encoded as
        soon as it exists. Torch runs one thread meanwhile: render and encode have the cores.
        The speech gate and references are computed here after the portrait, while the worker
        samples the first chunk (the gate's scipy import was 0.19 CPU s on the worker's path to
        the first frame; the portrait's analysis has imported scipy by then)."""
        from threadpoolctl import threadpool_limits

        cfg, parts, c0 = self.config, [], time.process_time()
        total = num_frames(clip.samples.shape[-1], cfg.fps)
        # one BLAS thread too: the calibration's TPS solves spun two OpenBLAS threads against the
        # worker (the sample's analysis took 1.3 CPU s at load 19, 0.2-0.7 with one thread); and
        # one OpenCV thread (its pool's worker spun between jobs: cv2_threads)
        with torch_threads(1), threadpool_limits(1), cv2_threads(1):
            chunks = Background(self.motion_chunks(clip, controls, timings, finish=False), depth=2,
                                name="talkinghead-motion")
            try:
                portrait, state = self._portrait(image)
                timings["portrait"] = time.perf_counter() - t0
                samples = clip.samples[0] if clip.samples.shape[0] == 1 else clip.mono()
                gate = speech_gate(samples, total, cfg.fps) if cfg.gate else None
                refs = references(total, cfg.fps, cfg.ref_pose, cfg.ref_blink)
                t3 = time.perf_counter()

                def frames() -> Iterator[np.ndarray]:  # runs in write_video's frame thread
                    timings["render_cpu"] = 0.0
                    for m in chunks:
                        m = self._finish(m, gate, refs, sum(map(len, parts)))
                        parts.append(m)
                        for i in range(len(m)):
                            c = time.thread_time()
                            frame = self.renderer.render(state, m[i])
                            timings["render_cpu"] += time.thread_time() - c
                            yield frame

                bar = progress_bar(frames(), total) if progress else frames()
                frames_out = enhance_stage(timed(portrait.paste(iter(bar), state), timings),
                                           portrait, cfg.enhance, timings)
                n = write_video(output, frames_out, cfg.fps, audio=audio, num_frames=total)
            finally:
                chunks.close()
        timings["encode"] = time.perf_counter() - t3 - timings["render"] - timings.get("enhance", 0.0)
        timings["total"], timings["cpu"] = time.perf_counter() - t0, time.process_time() - c0
        return GenerateOutput(Path(output), n, cfg.fps, Motion.concatenate(parts), portrait, timings)

    def _whole(self, image, clip: AudioClip, audio, output, controls: MotionControls,
               progress: bool, timings: dict[str, float], t0: float) -> GenerateOutput:
        """Renderers that take the whole clip's motion (and features) at once."""
        cfg, c0 = self.config, time.process_time()
        portrait, state = self._portrait(image)
        timings["portrait"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        features = self.extractor(clip, cfg.fps)
        timings["features"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        motion = self.motion(clip, controls, features)
        timings["motion"] = time.perf_counter() - t2
        # render and encode, streaming, with the speech as the soundtrack
        t3 = time.perf_counter()
        inputs = RenderInputs(clip, cfg.fps, features, controls.seed, progress)
        frames = enhance_stage(timed(portrait.paste(self.renderer.frames(state, motion, inputs), state),
                                     timings), portrait, cfg.enhance, timings)
        n = write_video(output, frames, motion.fps, audio=audio, num_frames=len(motion))
        timings["encode"] = time.perf_counter() - t3 - timings["render"] - timings.get("enhance", 0.0)
        timings["total"], timings["cpu"] = time.perf_counter() - t0, time.process_time() - c0
        return GenerateOutput(Path(output), n, cfg.fps, motion, portrait, timings)


_INIT_FILLERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_",
                 "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                 "kaiming_normal_", "orthogonal_", "sparse_")
_init_state = threading.local()
_init_lock = threading.Lock()
_init_users = [0, {}]  # threads inside skip_init, the original fillers while patched


@contextmanager
def skip_init():
    """torch.nn.init's fillers leave their tensor as it is, in this thread only, while it lasts.

    For models built to be loaded at once with weights that overwrite every parameter (strict
    loads): the random initialisation they skip was 0.13 CPU s of the Whisper encoder's 0.19 s
    load and most of FD2Talk's, on the path to a cold start's first frame. Other threads keep
    the real fillers; the loaded models are identical (tests/test_speed_paths.py). Without torch
    loaded it does nothing: the default models run without it (numpy ports), and importing it
    here would cost a cold start 1.2-1.3 CPU s (GeneratePipeline imports it up front for the
    motion models that need it: TORCH_FREE_MOTION).
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch.nn.init as init

    def skipping(name: str):
        original = _init_users[1][name]

        def filler(tensor, *args, **kwargs):
            if getattr(_init_state, "skip", False):
                return tensor
            return original(tensor, *args, **kwargs)

        return filler

    with _init_lock:
        if _init_users[0] == 0:
            _init_users[1] = {n: getattr(init, n) for n in _INIT_FILLERS if hasattr(init, n)}
            for n in _init_users[1]:
                setattr(init, n, skipping(n))
        _init_users[0] += 1
    before, _init_state.skip = getattr(_init_state, "skip", False), True
    try:
        yield
    finally:
        _init_state.skip = before
        with _init_lock:
            _init_users[0] -= 1
            if _init_users[0] == 0:
                for n, f in _init_users[1].items():
                    setattr(init, n, f)


def progress_bar(frames: Iterator[np.ndarray], total: int) -> Iterator[np.ndarray]:
    """tqdm's bar over the frames (shown on a terminal). Imported only when asked for: 0.036 s
    of a quiet `generate`'s path to the first frame, once torch was gone from it."""
    from tqdm import tqdm

    return tqdm(frames, total=total, disable=None, desc="rendering", unit="frame", leave=False)


def torch_threads(n: int):
    """torch's intra-op threads set to `n` while it lasts (process-wide); nothing while torch is
    not loaded (the default path never imports it: skip_init)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return nullcontext()
    return library_threads(torch.get_num_threads, torch.set_num_threads, n)
