"""Issue #2 acceptance: astronaut driven by the real carphone clip, judged on the OUTPUT video
re-analysed by the face model (motion), dlib (identity) and pixels (background)."""

import numpy as np
import pytest

from talkinghead.face.extract import extract_video_motion, motion_from_face
from talkinghead.io.video import iter_frames, video_info
from talkinghead.pipelines.drive import DriveConfig, DrivePipeline


@pytest.fixture(scope="module")
def driven(tmp_path_factory, portrait_path, carphone_path):
    out = tmp_path_factory.mktemp("drive") / "out.mp4"
    result = DrivePipeline(DriveConfig())(portrait_path, carphone_path, out, progress=False)
    return result, extract_video_motion(out, progress=False)


def pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_output_video(driven):
    result, measured = driven
    info = video_info(result.path)
    assert (info.width, info.height) == (512, 512) and abs(info.fps - 25) < 1e-6
    assert info.num_frames == len(result.motion) == 100  # 4.0 s at 25 fps
    assert not info.has_audio  # the carphone clip has none
    assert measured.valid.all()


def test_motion_recovered_from_output(driven):
    result, measured = driven
    want = result.motion                                   # what the driving video asked for
    got = measured.relative_to(motion_from_face(result.portrait.face))
    # 0.82 where #2 was first measured; 0.74-0.76 while the head turned about a neck pivot and
    # the jaw calibration's inverse opened the mouth on the driver's small readings; 0.82 since
    assert pearson(want.channel("jawOpen"), got.channel("jawOpen")) >= 0.8
    assert pearson(want.blink.mean(1), got.blink.mean(1)) >= 0.8
    err = np.median(np.abs(want.rotation - got.rotation), axis=0)
    assert np.all(err <= 3.0), err                         # yaw, pitch, roll in degrees


def test_identity_kept(driven, landmarker):
    from talkinghead.evaluation.identity import DlibIdentity

    result, _ = driven
    ident = DlibIdentity()
    src = ident.embed(result.portrait.image, result.portrait.face)
    frames = list(iter_frames(result.path))[::8]
    dists = [ident.distance(src, ident.embed(f, landmarker.detect(f)[0])) for f in frames]
    assert np.median(dists) <= 0.4, dists


def test_background_stable(driven, renderer_state_for):
    result, _ = driven
    mask = renderer_state_for(result.portrait).region_mask()
    import cv2

    head = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    frames = iter_frames(result.path)
    first = next(frames).astype(np.int16)
    # frame-to-first-frame change outside the head, in 1/255 units, through H.264 and back
    changes = [np.abs(f.astype(np.int16) - first)[~head].mean() for f in frames]
    assert np.mean(changes) < 2.0 and max(changes) < 2.0, max(changes)
    # against the source portrait only the codec's error remains (JPEG -> H.264 at crf 18)
    codec = np.abs(first - result.portrait.image.astype(np.int16))[~head].mean()
    assert codec < 3.0, codec


@pytest.fixture(scope="module")
def renderer_state_for():
    from talkinghead.render.geometric import GeometricRenderer

    return lambda p: GeometricRenderer().prepare(p.image, p.face)


def test_still_and_scales(tmp_path, portrait_path, carphone_path):
    pipe = DrivePipeline(DriveConfig(still=True, expression_scale=0.0, mode="crop", crop_size=256))
    m = pipe.driving_motion(carphone_path, progress=False)
    assert np.all(m.rotation == 0) and np.all(m.translation == 0) and np.all(m.blendshapes == 0)
    out = pipe(portrait_path, carphone_path, tmp_path / "still.mp4", progress=False)
    info = video_info(out.path)
    assert (info.width, info.height) == (256, 256)
    first = next(iter_frames(out.path)).astype(int)
    last = list(iter_frames(out.path))[-1].astype(int)
    assert np.abs(first - last).mean() < 1.0  # nothing moves


def test_drive_keeps_driving_audio(tmp_path, portrait_path, carphone_path, speech_path):
    from talkinghead.io.video import write_video

    talking = tmp_path / "talking.mp4"  # a driving video WITH audio: carphone frames + speech
    write_video(talking, iter_frames(carphone_path), fps=29.97, audio=speech_path)
    out = DrivePipeline(DriveConfig(mode="crop", crop_size=128, calibrate=False))(
        portrait_path, talking, tmp_path / "o.mp4", progress=False)
    info = video_info(out.path)
    assert info.has_audio
    from talkinghead.io.audio import read_audio

    assert abs(read_audio(out.path).duration - out.num_frames / 25) < 0.1
