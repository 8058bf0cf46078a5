"""Bad input gets one line on stderr, a non-zero exit, no traceback and no output file."""

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def assert_clean_failure(r, out, pattern):
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".part" in p.name]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, portrait):
    import cv2

    d = tmp_path_factory.mktemp("bad")
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(d / "noface.png")
    tiny = np.full((200, 200, 3), 128, np.uint8)
    tiny[35:165, 35:165] = cv2.resize(portrait, (130, 130), interpolation=cv2.INTER_AREA)
    Image.fromarray(tiny).save(d / "tiny.png")
    Image.fromarray(portrait).save(d / "good.jpg")
    data = (d / "good.jpg").read_bytes()
    (d / "corrupt.jpg").write_bytes(data[:2000])
    (d / "notes.png").write_text("this is text, not a picture\n")
    import av

    with av.open(str(d / "empty.wav"), "w") as c:
        c.add_stream("pcm_s16le", rate=16000, layout="mono")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(3000))
    group = np.full((512, 1024, 3), 255, np.uint8)
    group[:, :512] = portrait
    group[46:466, 560:980] = cv2.resize(portrait, (420, 420))
    Image.fromarray(group).save(d / "group.png")
    return d


@pytest.mark.parametrize("image,extra,pattern", [
    ("noface.png", [], "no face found"),
    ("tiny.png", [], "too small"),
    ("corrupt.jpg", [], "corrupt"),
    ("notes.png", [], "not an image"),
    ("missing.png", [], "not found"),
    ("good.jpg", ["--audio", "empty.wav"], "empty"),
    ("good.jpg", ["--audio", "corrupt.wav"], "not a readable audio"),
])
def test_bad_inputs(bad, carphone_path, tmp_path, image, extra, pattern):
    out = tmp_path / "out.mp4"
    extra = [str(bad / e) if e.endswith(".wav") else e for e in extra]
    r = run_cli("drive", "--image", bad / image, "--video", carphone_path, "-o", out, *extra)
    assert_clean_failure(r, out, pattern)


def test_bad_driving_video(bad, tmp_path):
    out = tmp_path / "out.mp4"
    r = run_cli("drive", "--image", bad / "good.jpg", "--video", bad / "noface.png", "-o", out)
    assert_clean_failure(r, out, "")
    r = run_cli("drive", "--image", bad / "good.jpg", "--video", bad / "corrupt.wav", "-o", out)
    assert_clean_failure(r, out, "")


def test_unwritable_output(bad, carphone_path, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    out = locked / "out.mp4"
    try:
        if os.access(locked, os.W_OK) and os.geteuid() == 0:
            # root ignores permission bits: use a path whose parent is a file instead
            out = bad / "good.jpg" / "out.mp4"
        r = run_cli("drive", "--image", bad / "good.jpg", "--video", carphone_path, "-o", out)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "error: " in r.stderr
        assert not out.exists()
    finally:
        locked.chmod(0o700)


def test_read_only_filesystem_dir(bad, carphone_path, tmp_path):
    """A directory we cannot create files in (a read-only bind would need root; /proc works)."""
    out = "/proc/talkinghead-out.mp4"
    r = run_cli("drive", "--image", bad / "good.jpg", "--video", carphone_path, "-o", out)
    assert r.returncode != 0 and "not writable" in r.stderr and "Traceback" not in r.stderr


def test_several_faces_warns_and_works(bad, carphone_path, tmp_path):
    out = tmp_path / "group.mp4"
    r = run_cli("drive", "--image", bad / "group.png", "--video", carphone_path, "-o", out,
                "--crop", "--size", "128", "-q")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "2 faces" in r.stderr and out.exists()


@pytest.mark.parametrize("image,audio,extra,pattern", [
    ("noface.png", None, [], "no face found"),
    ("good.jpg", "empty.wav", [], "empty"),
    ("good.jpg", "corrupt.wav", [], "not a readable audio"),
    ("good.jpg", "missing.wav", [], "not found"),
    ("good.jpg", None, ["--motion-model", "nosuch"], "unknown motion model"),
    ("good.jpg", None, ["--ref-pose", "missing.mp4"], "reference video not found"),
])
def test_generate_bad_inputs(bad, speech_path, tmp_path, image, audio, extra, pattern):
    out = tmp_path / "g.mp4"
    audio = bad / audio if audio else speech_path
    r = run_cli("generate", "--image", bad / image, "--audio", audio, "-o", out, *extra)
    assert_clean_failure(r, out, pattern)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_main_job_runs_offline(tmp_path, portrait_path, carphone_path, speech_path):
    """The README's main job with no network at all (unshare -n)."""
    import sys

    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n not permitted here")
    for name, job in (("generate", ["--audio", str(speech_path)]),
                      ("drive", ["--video", str(carphone_path), "--audio", str(speech_path)])):
        out = tmp_path / f"offline-{name}.mp4"
        r = subprocess.run(["unshare", "-n", sys.executable, "-m", "talkinghead", name, "--image",
                            str(portrait_path), *job, "-o", str(out), "-q"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert out.stat().st_size > 10_000
