"""Nothing lost, nothing surprising (issue #13), through the real CLI in subprocesses:
an output that is one of the inputs is refused with the input untouched; the container follows
the extension; large portraits are animated in a working crop and pasted back; SIGINT and
SIGTERM leave no file behind; partial files of killed runs are swept after a day."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, portrait_path, speech_path, carphone_path) -> Path:
    """A folder holding a portrait, speech, a 10-frame driving clip with sound, and the same
    portrait at 2048 px (upscaled)."""
    import cv2

    from talkinghead.io.video import iter_frames, write_video

    d = tmp_path_factory.mktemp("inputs")
    (d / "portrait.jpg").write_bytes(portrait_path.read_bytes())
    (d / "speech.wav").write_bytes(speech_path.read_bytes())
    write_video(d / "drive.mp4", itertools.islice(iter_frames(carphone_path), 10), 25.0,
                audio=speech_path, num_frames=10)
    write_video(d / "long.mp4", itertools.islice(iter_frames(carphone_path), 100), 25.0,
                num_frames=100)
    big = cv2.resize(cv2.imread(str(portrait_path)), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(d / "big.jpg"), big)
    return d


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(d.iterdir()) if p.is_file()}


# -- 1. an output that is an input is refused, the input untouched ----------------------------

REFUSED = {
    "audio, same spelling": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav"],
                             "speech.wav", "audio"),
    "audio, ./ spelling": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav"],
                           "./speech.wav", "audio"),
    "audio, ../ spelling": (["drive", "--image", "portrait.jpg", "--video", "drive.mp4",
                             "--audio", "speech.wav"], "../{dir}/speech.wav", "audio"),
    "audio, symlink": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav"],
                       "sym:speech.wav", "audio"),
    "audio, hard link": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav"],
                         "hard:speech.wav", "audio"),
    "portrait": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav"],
                 "portrait.jpg", "portrait"),
    "portrait, symlink": (["drive", "--image", "portrait.jpg", "--video", "drive.mp4"],
                          "sym:portrait.jpg", "portrait"),
    "driving video": (["drive", "--image", "portrait.jpg", "--video", "drive.mp4"],
                      "drive.mp4", "driving video"),
    "driving video, symlink": (["drive", "--image", "portrait.jpg", "--video", "drive.mp4"],
                               "sym:drive.mp4", "driving video"),
    "reference video": (["generate", "--image", "portrait.jpg", "--audio", "speech.wav",
                         "--ref-pose", "drive.mp4"], "./drive.mp4", "reference pose video"),
    "extract input": (["extract", "drive.mp4"], "drive.mp4", "video or image"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_output_that_is_an_input_is_refused(inputs, tmp_path, case):
    args, output, role = REFUSED[case]
    work = tmp_path / "job"
    work.mkdir()
    for p in inputs.iterdir():
        (work / p.name).write_bytes(p.read_bytes())
    if output.startswith(("sym:", "hard:")):
        kind, target = output.split(":")
        output = f"out{Path(target).suffix}"
        if kind == "sym":
            os.symlink(target, work / output)                # relative, as people make them
        else:
            os.link(work / target, work / output)
    output = output.format(dir=work.name)
    before = _snapshot(work)
    r = run_cli(*args, "-o", output, cwd=work, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"is the input {role}" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(work) == before                       # every input's bytes, nothing added
    assert all(not p.is_symlink() or p.resolve().exists() for p in work.iterdir())


def test_save_motion_onto_an_input_is_refused(inputs, tmp_path):
    before = _sha(inputs / "speech.wav")
    r = run_cli("generate", "--image", inputs / "portrait.jpg", "--audio", inputs / "speech.wav",
                "-o", tmp_path / "out.mp4", "--save-motion", inputs / "speech.wav", timeout=60)
    assert r.returncode == 2 and "is the input audio" in r.stderr, r.stderr
    assert _sha(inputs / "speech.wav") == before and not (tmp_path / "out.mp4").exists()


# -- 2. the container follows the extension ---------------------------------------------------

@pytest.mark.parametrize("name", ["out.wav", "out.avi", "out.txt", "out.mp3"])
def test_unsupported_extension_is_refused(inputs, tmp_path, name):
    r = run_cli("generate", "--image", inputs / "portrait.jpg", "--audio", inputs / "speech.wav",
                "-o", tmp_path / name, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert ".mp4, .mov, .mkv, .webm, .gif, .webp" in r.stderr
    assert list(tmp_path.iterdir()) == []


def _decoded(path: Path) -> tuple[str, str | None, int, int]:
    """(video codec, audio codec or None, frames, width) as PyAV decodes the file."""
    import av

    with av.open(str(path)) as c:
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        frames = [f.width for f in c.decode(video=0)]
        return c.streams.video[0].codec_context.name, audio, len(frames), frames[0]


CODECS = {".mp4": (b"ftypisom", "h264", "aac"), ".mov": (b"ftypqt  ", "h264", "aac"),
          ".mkv": (b"matroska", "vp9", "opus"), ".webm": (b"webm", "vp9", "opus"),
          ".gif": (b"GIF89a", "gif", None)}


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".webm", ".gif", ".webp"])
def test_each_extension_gives_its_codec(inputs, tmp_path, ext):
    out = tmp_path / f"out{ext}"
    r = run_cli("drive", "--image", inputs / "portrait.jpg", "--video", inputs / "drive.mp4",
                "-o", out, "-q", timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    assert ("holds no sound" in r.stderr) == (ext in (".gif", ".webp")), r.stderr
    if ext == ".webp":  # FFmpeg decodes still WebP only; Pillow reads the animation
        from PIL import Image

        with Image.open(out) as im:
            assert im.format == "WEBP" and im.is_animated and im.n_frames == 10
            assert im.size == (512, 512)
        return
    magic, vcodec, acodec = CODECS[ext]
    assert magic in out.read_bytes()[:64]
    assert _decoded(out) == (vcodec, acodec, 10, 512)


@pytest.mark.slow
def test_name_without_extension_gets_mp4(inputs, tmp_path):
    """generate on 0.5 s of speech: `-o result` writes result.mp4 and says so."""
    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.types import AudioClip

    clip = read_audio(inputs / "speech.wav")
    write_wav(tmp_path / "short.wav", AudioClip(clip.samples[:, :8000], 16000))
    r = run_cli("generate", "--image", inputs / "portrait.jpg", "--audio", tmp_path / "short.wav",
                "-o", tmp_path / "result", "-q", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "has no extension; writing MP4" in r.stderr
    assert not (tmp_path / "result").exists()
    assert _decoded(tmp_path / "result.mp4") == ("h264", "aac", 13, 512)


# -- 3. large portraits -----------------------------------------------------------------------

@pytest.mark.slow
def test_large_portrait_is_pasted_back_and_capped(inputs, tmp_path):
    """A 2048 px portrait capped to 1536: the output is 1536 px, said on stderr, and away from
    the head it keeps the (scaled) portrait's pixels."""
    import cv2

    from talkinghead.io.video import iter_frames

    out = tmp_path / "big.mp4"
    r = run_cli("drive", "--image", inputs / "big.jpg", "--video", inputs / "drive.mp4", "-o", out,
                "--max-size", "1536", "-q", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "scaled down to 1536x1536 (--max-size 1536)" in r.stderr
    frames = np.stack(list(iter_frames(out)))
    assert frames.shape == (10, 1536, 1536, 3)
    src = cv2.resize(cv2.imread(str(inputs / "big.jpg")), (1536, 1536), interpolation=cv2.INTER_AREA)
    diff = np.abs(frames.astype(np.int16) - src[None, :, :, ::-1]).max(axis=(0, 3))  # (H, W)
    moved = diff > 40
    assert moved[200:900, 350:1200].mean() > 0.01           # the head moves
    assert moved[1100:, :].mean() < 0.001                  # the body and background do not
    assert np.abs(frames[:, 1100:].astype(np.int16) - src[None, 1100:, :, ::-1]).mean() < 2.5


def test_working_crop_of_a_large_portrait(inputs, landmarker):
    from talkinghead.face.canvas import WORK_SIDE
    from talkinghead.pipelines.drive import load_portrait

    small = load_portrait(inputs / "portrait.jpg", landmarker)
    assert small.canvas is None and small.image.shape == (512, 512, 3)
    big = load_portrait(inputs / "big.jpg", landmarker, max_size=1800)
    assert big.canvas.image.shape == (1800, 1800, 3)
    assert max(big.image.shape[:2]) <= WORK_SIDE
    # the crop and the face found in it agree with the small portrait's face, scaled
    x0, y0, x1, y1 = big.canvas.box
    k = big.image.shape[1] / (x1 - x0)
    expect = (np.asarray(small.face.bbox) * 1800 / 512 - [x0, y0, x0, y0]) * k
    assert np.allclose(big.face.bbox, expect, atol=0.03 * big.face.size)
    crop = load_portrait(inputs / "big.jpg", landmarker, mode="crop", crop_size=256)
    assert crop.canvas is None and crop.image.shape == (256, 256, 3)
    # pasting the unchanged working crop back gives the canvas again
    (frame,) = big.canvas.paste(iter([big.image]), np.ones(big.image.shape[:2], bool))
    assert np.abs(frame.astype(np.int16) - big.canvas.image).mean() < 2.0


# -- 4. interrupted runs ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_a_run_leaves_nothing(inputs, tmp_path, sig, code):
    """Signalled while encoding (the partial file exists): exit 130/143, no file left."""
    out = tmp_path / "out.mp4"
    p = subprocess.Popen([sys.executable, "-m", "talkinghead", "drive", "--image", inputs / "big.jpg",
                          "--video", inputs / "long.mp4", "-o", out, "-q", "--max-size", "2048"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # as from a terminal: a suite started in the background (`cmd &` in a
                         # script) ignores SIGINT, and the CLI rightly keeps an inherited SIG_IGN
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(f.name.endswith(".part.mp4") and f.stat().st_size > 0 for f in tmp_path.iterdir()):
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert err.strip().splitlines()[-1] in ("error: interrupted", "error: terminated")
    assert list(tmp_path.iterdir()) == []


def test_stale_partial_files_are_swept(inputs, tmp_path):
    old = time.time() - 2 * 24 * 3600
    stale = [tmp_path / ".out.k2j4h6g8.part.mp4", tmp_path / ".talkinghead-probe-abc_1234"]
    fresh = tmp_path / ".out.aaaabbbb.part.mp4"              # maybe a run still going
    mine = [tmp_path / ".notes.part", tmp_path / "take.part.mp4"]  # not names we make
    for p in stale + [fresh] + mine:
        p.write_bytes(b"x")
    for p in stale + mine:
        os.utime(p, (old, old))
    r = run_cli("extract", inputs / "portrait.jpg", "-o", tmp_path / "m.npz", "-q", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "removed 2 partial file(s)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, "m.npz"] + [p.name for p in mine])
