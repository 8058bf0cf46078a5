"""Judge `generate` on real recorded speech, from its OUTPUT video.

Generates a video for the real-speech test set (`testset.real_speech`), re-analyses the frames
with the face model and reports lip sync (vs the pocketsphinx phones) and liveliness (blinks,
head pose). Used by the tests and by bench/bench_motion.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from talkinghead.evaluation.analysis import VideoAnalysis, analyze_video
from talkinghead.evaluation.lipsync import LipSyncReport, lipsync_report
from talkinghead.evaluation.motion_stats import MotionStats, motion_stats
from talkinghead.evaluation.testset import RealSpeech, real_speech
from talkinghead.face.regions import mouth_opening
from talkinghead.io.audio import write_wav


@dataclass
class GeneratedReport:
    lipsync: LipSyncReport
    stats: MotionStats
    analysis: VideoAnalysis
    speech: RealSpeech
    video: Path
    timings: dict[str, float]


def judge_on_real_speech(pipeline, image: str | Path, workdir: str | Path, controls=None,
                         speech: RealSpeech | None = None) -> GeneratedReport:
    from talkinghead.motion.generate import MotionControls

    workdir = Path(workdir)
    speech = speech or real_speech()
    wav = write_wav(workdir / "real_speech.wav", speech.clip)
    out = pipeline(image, wav, workdir / "generated.mp4", controls or MotionControls(), progress=False)
    analysis = analyze_video(out.path)
    rest = mouth_opening(out.portrait.face.landmarks)
    return GeneratedReport(lipsync_report(analysis.opening, speech.phones, out.fps, rest),
                           motion_stats(analysis.motion), analysis, speech, out.path, out.timings)
