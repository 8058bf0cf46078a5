"""Audio-driven animation: portrait + speech -> talking video (the product's main job).

Stages: check inputs; analyse the portrait and calibrate the renderer; audio -> per-frame
features (Whisper-base by default); features -> relative Motion through a motion model
(FD2Talk's diffusion transformers by default), the mouth rested where the audio is quiet;
optional reference pose/blink from videos;
render and encode, streaming frame by frame so memory does not grow with the audio's length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from talkinghead.errors import InputError
from talkinghead.face.canvas import MAX_SIZE
from talkinghead.face.landmarker import FaceLandmarker
from talkinghead.io.audio import read_audio
from talkinghead.io.video import check_video_output, write_video
from talkinghead.data.visemes import MOUTH_CHANNELS
from talkinghead.motion.filters import gate_mouth, speech_gate, still
from talkinghead.motion.generate import MotionControls, get_motion_model
from talkinghead.pipelines.drive import Portrait, load_portrait, timed
from talkinghead.render.base import RenderInputs, RenderOptions, get_renderer
from talkinghead.render.geometric import RenderConfig
from talkinghead.types import BS, AudioClip, Motion
from talkinghead.audio.features import AudioFeatures

MIN_SECONDS = 0.2


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
    # generated bilabials (mouthPress) seal the lips, also over teeth the portrait shows at rest;
    # `drive` leaves this off (a driving face's own lips already close in its jaw/lip motion)
    render: RenderConfig = field(default_factory=lambda: RenderConfig(seal_gain=2.5))
    renderer: str = "geometric"      # a name in render.base.renderer_names(): geometric, dawn, sadtalker
    dawn_checkpoint: str | None = None
    dawn_steps: int = 10             # DDIM steps of the A2V-FDM
    sadtalker_checkpoints: str | None = None  # SadTalker's released checkpoint folder
    renderer_checkpoint: str | None = None    # the picked renderer's checkpoint (difftalk, fd2talk)


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


def apply_references(motion: Motion, ref_pose: str | None, ref_blink: str | None) -> Motion:
    refs = {v: _reference(v, len(motion), motion.fps) for v in {ref_pose, ref_blink} if v}
    if ref_pose:
        ref = refs[ref_pose]
        motion = replace(motion, rotation=ref.rotation, translation=ref.translation, scale=ref.scale)
    if ref_blink:
        ref = refs[ref_blink]
        blend = motion.blendshapes.copy()
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            blend[:, BS[name]] = ref.blendshapes[:, BS[name]]
        motion = replace(motion, blendshapes=blend)
    return motion


class GeneratePipeline:
    def __init__(self, config: GenerateConfig = GenerateConfig()) -> None:
        self.config = config
        self.renderer = get_renderer(config.renderer, RenderOptions(
            mode=config.mode, crop_size=config.crop_size, calibrate=config.calibrate,
            geometric=config.render, steps=config.dawn_steps,
            checkpoints={"dawn": config.dawn_checkpoint, "sadtalker": config.sadtalker_checkpoints,
                         **({config.renderer: config.renderer_checkpoint} if config.renderer_checkpoint else {})}))
        self.motion_model = get_motion_model(config.motion_model)
        self._extractor = None

    @property
    def extractor(self):
        if self._extractor is None:
            from talkinghead.audio.features import get_extractor

            self._extractor = get_extractor(self.motion_model.feature)
        return self._extractor

    def motion(self, clip: AudioClip, controls: MotionControls = MotionControls(),
               features: AudioFeatures | None = None) -> Motion:
        """Audio clip -> relative Motion (features, motion model, references, scales, still)."""
        cfg = self.config
        if features is None:
            features = self.extractor(clip, cfg.fps)
        motion = self.motion_model(features, controls)
        if cfg.gate:
            gate = speech_gate(clip.mono(), len(motion), cfg.fps)
            motion = gate_mouth(motion, gate, [BS[c] for c in MOUTH_CHANNELS])
        motion = apply_references(motion, cfg.ref_pose, cfg.ref_blink)
        motion = motion.scaled(cfg.expression_scale, cfg.pose_scale)
        return still(motion) if cfg.still else motion

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
        clip = load_speech(audio)
        # 2. Analyse the portrait (and calibrate the renderer's response to it)
        with FaceLandmarker() as landmarker:
            mode = "full" if self.renderer.crops_itself else cfg.mode
            portrait = load_portrait(image, landmarker, mode, cfg.crop_size, cfg.max_size)
            state = self.renderer.prepare(portrait.image, portrait.face, landmarker)
        timings["portrait"] = time.perf_counter() - t0
        # 3. Audio features
        t1 = time.perf_counter()
        features = self.extractor(clip, cfg.fps)
        timings["features"] = time.perf_counter() - t1
        # 4. Motion
        t2 = time.perf_counter()
        motion = self.motion(clip, controls, features)
        timings["motion"] = time.perf_counter() - t2
        # 5. Render and encode, streaming, with the speech as the soundtrack
        t3 = time.perf_counter()
        inputs = RenderInputs(clip, cfg.fps, features, controls.seed, progress)
        frames = timed(portrait.paste(self.renderer.frames(state, motion, inputs), state), timings)
        n = write_video(output, frames, motion.fps, audio=audio, num_frames=len(motion))
        timings["encode"] = time.perf_counter() - t3 - timings["render"]
        return GenerateOutput(Path(output), n, cfg.fps, motion, portrait, timings)

