"""Evaluation: every metric against a known value, the metric networks' loaders with random
weights of the real architectures, the report in a browser, and `talkinghead eval` end to end."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.evaluation import beat_align, quality
from talkinghead.evaluation.motion_stats import detect_blinks


@pytest.fixture(scope="module")
def generated(tmp_path_factory, portrait_path, speech_path) -> Path:
    """The main job's output for the bundled sample (4 s)."""
    from talkinghead.pipelines.generate import GeneratePipeline

    out = tmp_path_factory.mktemp("eval") / "sample.mp4"
    GeneratePipeline()(portrait_path, speech_path, out, progress=False)
    return out


def _frames(path: Path) -> list[np.ndarray]:
    from talkinghead.io.video import iter_frames

    return list(iter_frames(path))


def _save_random(model: torch.nn.Module, path: Path) -> Path:
    """Random weights of the architecture, saved the way the public files are (torch.save)."""
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    torch.save(model.state_dict(), path)
    return path


# --- image, distribution and motion measures against known values ----------------------------

def test_identical_images_psnr_inf_ssim_one_and_ssim_matches_skimage(portrait):
    from skimage.metrics import structural_similarity

    noisy = np.clip(portrait + np.random.default_rng(0).normal(0, 8, portrait.shape), 0, 255).astype(np.uint8)
    assert quality.psnr(portrait, portrait) == float("inf")
    assert quality.ssim(portrait, portrait) == pytest.approx(1.0)
    mse = np.mean((portrait.astype(float) - noisy) ** 2)
    assert quality.psnr(portrait, noisy) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    ref = structural_similarity(portrait, noisy, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert quality.ssim(portrait, noisy) == pytest.approx(ref, abs=1e-9)


def test_cpbd_ranks_blurred_images_below_the_original(portrait):
    import cv2

    scores = [quality.cpbd(portrait)] + [quality.cpbd(cv2.GaussianBlur(portrait, (0, 0), s))
                                         for s in (1.0, 2.0)]
    assert scores[0] > scores[1] > scores[2] >= 0.0
    assert 0.1 < scores[0] < 1.0


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean moved by d: FD = |d|^2
    assert quality.frechet_distance(a, a + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)
    # covariance S vs 4S: Tr(S + 4S - 2 * 2S) = Tr(S)
    b = rng.normal(size=(1000, 3))
    assert quality.frechet_distance(b, 2 * (b - b.mean(0)) + b.mean(0)) == pytest.approx(
        np.trace(np.cov(b, rowvar=False)), rel=1e-6)


def test_synthetic_blink_sequence_gives_its_count():
    rng = np.random.default_rng(0)
    signal = 0.05 + 0.01 * rng.normal(size=500)
    starts = [20, 90, 150, 260, 300, 420, 470]
    for s, width in zip(starts, [3, 4, 5, 3, 6, 4, 3]):
        signal[s:s + width] = rng.uniform(0.6, 0.9)
    blinks = detect_blinks(signal)
    assert len(blinks) == len(starts)
    assert [a for a, _ in blinks] == starts


def test_beat_align_score_known_values():
    beats = np.array([10, 40, 80, 120])
    assert beat_align.beat_align_score(beats, beats) == pytest.approx(1.0)
    assert beat_align.beat_align_score(beats, beats + 3) == pytest.approx(np.exp(-0.5))
    assert beat_align.beat_align_score(beats, np.array([500])) < 1e-6
    # motion beats are the minima of head speed: a yaw swinging with period 20 frames
    t = np.arange(200)
    rotation = np.stack([10 * np.sin(2 * np.pi * t / 20), 0 * t, 0 * t], 1)
    mb = beat_align.motion_beats(rotation, fps=25.0, smooth_s=1 / 25)
    assert np.all(np.abs(np.diff(mb) - 10) <= 1)          # speed is lowest at every turning point


# --- lip sync: offsets and the SyncNet LSE computation --------------------------------------

def test_offset_search_recovers_a_known_shift():
    from talkinghead.evaluation.lse import offset_search

    audio = torch.randn(120, 64)
    for k in (4, 0, -6):
        r = offset_search(torch.roll(audio, k, 0), audio)          # video frame i shows audio i - k
        assert r.offset_frames == k
        assert r.lse_d < 0.5 and r.lse_c > 5
        assert len(r.mean_distance) == 31


def test_video_shifted_against_its_audio_gives_that_offset(generated, speech_path, tmp_path):
    from talkinghead.evaluation.runner import EvalConfig, evaluate
    from talkinghead.io.video import write_video

    k = 3
    frames = _frames(generated)
    shifted = write_video(tmp_path / "late.mp4", [frames[0]] * k + frames[:-k], 25.0,
                          audio=speech_path, num_frames=len(frames))
    on_time = evaluate([generated], EvalConfig(cpbd_stride=50, identity_stride=50), progress=False)
    late = evaluate([tmp_path / "late.mp4"], EvalConfig(cpbd_stride=50, identity_stride=50), progress=False)
    assert shifted == len(frames)
    assert on_time.videos[0].metrics["lip_offset_frames"] == 0
    assert late.videos[0].metrics["lip_offset_frames"] == k


# --- the metric networks: real architectures, public key names, random weights --------------

def test_syncnet_loads_public_keys_and_scores_a_video(generated, tmp_path):
    from talkinghead.evaluation.lse import SyncScorer, syncnet_crop
    from talkinghead.evaluation.nets.syncnet import SyncNet, load_syncnet
    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.audio import read_audio

    net = SyncNet()
    keys = set(net.state_dict())
    assert {"netcnnaud.0.weight", "netcnnaud.18.weight", "netcnnaud.19.running_var", "netfcaud.3.weight",
            "netcnnlip.0.weight", "netcnnlip.18.weight", "netfclip.1.running_mean"} <= keys
    assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    loaded = load_syncnet(_save_random(net, tmp_path / "syncnet_v2.model"))
    scorer = SyncScorer(loaded, batch=8)
    frames = _frames(generated)[:40]
    with FaceLandmarker(video=True) as lm:
        for i, f in enumerate(frames):
            faces = lm.detect(f, timestamp_ms=i * 40)
            scorer.add(f, faces[0] if faces else None)
    assert syncnet_crop(frames[0], (200, 150, 320, 300)).shape == (224, 224, 3)
    clip = read_audio(generated)
    clip.samples = clip.samples[:, : 40 * 640]
    r = scorer.score(clip)
    assert np.isfinite(r.lse_d) and r.lse_c >= 0 and -15 <= r.offset_frames <= 15
    assert len(r.mean_distance) == 31


def test_arcface_iresnet_loads_and_embeds_an_aligned_face(portrait, portrait_face, tmp_path):
    from talkinghead.evaluation.nets.arcface import ArcFaceIdentity, IResNet, align_face

    net = IResNet("r100")
    assert sum(p.numel() for p in net.parameters()) == 65_156_160
    assert "layer3.29.bn3.running_var" in net.state_dict()
    ident = ArcFaceIdentity(_save_random(IResNet("r18"), tmp_path / "backbone.pth"), depth="r18")
    chip = align_face(portrait, portrait_face.landmarks)
    assert chip.shape == (112, 112, 3)
    e = ident.embed(portrait, portrait_face.landmarks)
    assert e.shape == (512,)
    assert ident.similarity(e, e) == pytest.approx(1.0)
    with pytest.raises(InputError, match="not ArcFace IResNet-100 weights"):
        ArcFaceIdentity(tmp_path / "backbone.pth", depth="r100")


def test_inception_and_i3d_load_public_keys_and_give_feature_shapes(tmp_path):
    from talkinghead.evaluation.nets.i3d import InceptionI3d, load_i3d
    from talkinghead.evaluation.nets.inception import FIDInception, load_inception

    inc = FIDInception()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_6e.branch7x7dbl_5.bn.running_mean",
            "Mixed_7c.branch3x3dbl_3b.conv.weight", "fc.weight"} <= set(inc.state_dict())
    assert inc.fc.out_features == 1008
    inc = load_inception(_save_random(inc, tmp_path / "pt_inception.pth"))
    with torch.no_grad():
        assert inc(torch.rand(2, 3, 128, 128)).shape == (2, 2048)
    i3d = InceptionI3d()
    assert {"Conv3d_1a_7x7.conv3d.weight", "Mixed_5c.b3b.bn.running_var", "logits.conv3d.bias"} <= set(i3d.state_dict())
    i3d = load_i3d(_save_random(i3d, tmp_path / "rgb_imagenet.pt"))
    with torch.no_grad():
        assert i3d(torch.rand(1, 3, 16, 224, 224) * 2 - 1).shape == (1, 400)
    with pytest.raises(InputError, match="not I3D"):
        load_i3d(tmp_path / "pt_inception.pth")


def test_lpips_merges_its_two_public_files(tmp_path):
    from talkinghead.evaluation.nets.lpips import LPIPS, load_lpips

    full = LPIPS()
    _save_random(full, tmp_path / "all.pth")
    sd = torch.load(tmp_path / "all.pth", weights_only=True)
    torch.save({k: v.abs() for k, v in sd.items() if k.startswith("lin")}, tmp_path / "alex.pth")
    torch.save({k: v for k, v in sd.items() if k.startswith("features")}, tmp_path / "alexnet-owt.pth")
    net = load_lpips([tmp_path / "alexnet-owt.pth", tmp_path / "alex.pth"])
    a, b = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert float(net(a, a)) == 0.0
        assert float(net(a, b)) > 0.0
    with pytest.raises(InputError, match="lin0"):
        load_lpips([tmp_path / "alexnet-owt.pth"])


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/talkinghead-pwned",))


def test_weight_files_never_run_code(tmp_path):
    from talkinghead.evaluation.nets.weights import read_state_dict

    Path("/tmp/talkinghead-pwned").unlink(missing_ok=True)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Boom()}, f, protocol=2)
    with pytest.raises(InputError, match="not a plain weight file"):
        read_state_dict(evil)
    assert not Path("/tmp/talkinghead-pwned").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(InputError, match="safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")


# --- the whole harness: identical videos, report, browser, CLI ------------------------------

def test_identical_videos_give_psnr_inf_ssim_one_fid_fvd_efid_zero(generated, portrait_face, tmp_path):
    from talkinghead.evaluation.nets.i3d import InceptionI3d
    from talkinghead.evaluation.nets.inception import FIDInception
    from talkinghead.evaluation.nets.syncnet import SyncNet
    from talkinghead.evaluation.runner import EvalConfig, evaluate
    from talkinghead.io.video import write_video

    # 64 frames: two 32-frame I3D clips, the fewest FVD32 takes. A 256 px crop around the face (the
    # face keeps its size; halved it is below the face model's 64 px): I3D and Inception resize to
    # their own sizes anyway, the per-pixel measures (LPIPS, SSIM, face model) cost 1/4 of 512 px.
    x0, y0, x1, y1 = portrait_face.bbox
    h, w = portrait_face.image_size
    cx, cy = (int(np.clip((a + b) / 2 - 128, 0, n - 256)) for a, b, n in ((x0, x1, w), (y0, y1, h)))
    frames = [f[cy:cy + 256, cx:cx + 256] for f in _frames(generated)[:64]]
    clip = write_video(tmp_path / "clip.mp4", frames, 25.0, num_frames=64)
    assert clip == 64
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "clip.mp4").write_bytes((tmp_path / "clip.mp4").read_bytes())
    cfg = EvalConfig(inception_weights=str(_save_random(FIDInception(), tmp_path / "inc.pth")),
                     i3d_weights=str(_save_random(InceptionI3d(), tmp_path / "i3d.pt")),
                     fid_stride=8, cpbd_stride=16, identity_stride=16)
    r = evaluate([tmp_path / "clip.mp4"], cfg, [ref_dir / "clip.mp4"], progress=False)
    m = r.videos[0].metrics
    assert m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0)
    assert m["csim_dlib"] > 0.95                 # vs reference frame 0, the source by default
    for key in ("fid", "fvd16", "fvd32", "efid"):
        assert r.dataset[key] == pytest.approx(0.0, abs=1e-3), key
    assert m["lpips"] == pytest.approx(0.0, abs=1e-6)    # offline LPIPS-alex, no flag
    assert m["lse_d"].startswith("not computed: needs audio")       # the clip has no soundtrack
    _ = SyncNet  # the SyncNet path is covered with audio in test_syncnet_loads_public_keys...


def test_eval_cli_on_the_main_jobs_output_writes_a_report_the_browser_shows(generated, portrait_path, tmp_path):
    from talkinghead.cli import main
    from talkinghead.evaluation.report import check_in_browser, chromium

    out = tmp_path / "report"
    args = ["eval", "--generated", str(generated), "--source", str(portrait_path), "-o", str(out), "-q",
            "--audio", str(portrait_path.parent)]          # a folder: its one audio file (speech.wav)
    assert main(args) == 0
    data = json.loads((out / "metrics.json").read_text())
    v = data["videos"]["sample"]
    assert v["lip_r"] > 0.6 and v["lip_offset_frames"] == 0 and v["csim_dlib"] > 0.9
    assert 0 < v["cpbd"] < 1 and v["blinks_per_second"] >= 0 and v["pose_std_deg"] > 0
    for key in ("lse_d", "lse_c", "csim_arcface", "psnr", "lpips"):
        assert isinstance(v[key], str) and v[key].startswith("not computed: needs --"), key
    for key in ("fid", "fvd16", "fvd32", "efid"):
        assert data["dataset"][key] == "not computed: needs --reference DIR"
    assert "| sample |" in (out / "report.md").read_text()
    assert (out / "plots" / "sample.png").stat().st_size > 10_000
    if chromium() is None:
        pytest.skip("no Chromium to open the report in")
    assert check_in_browser(out / "report.html") == {"plots/sample.png": True}
    (out / "plots" / "sample.png").unlink()
    assert check_in_browser(out / "report.html") == {"plots/sample.png": False}


@pytest.mark.parametrize("args, message", [
    (["--generated", "missing.mp4"], "missing.mp4: not found"),
    (["--generated", "{corrupt}"], "not a readable video file"),
    (["--generated", "{video}", "--syncnet-weights", "nope.model"], "weight file not found"),
    (["--generated", "{video}", "-o", "/proc/report"], "not writable"),
])
def test_eval_bad_inputs_give_one_line_and_no_report(args, message, generated, tmp_path, capsys):
    from talkinghead.cli import main

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 1000)
    args = [a.format(corrupt=corrupt, video=generated) for a in args]
    out = tmp_path / "report"
    if "-o" not in args:
        args += ["-o", str(out)]
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_phone_recognition_fallback_gives_ordered_phones(speech_path):
    from talkinghead.evaluation.lipsync import align_phones, recognize_phones
    from talkinghead.io.audio import read_audio

    clip = read_audio(speech_path)
    pcm = (np.clip(clip.mono(), -1, 1) * 32767).astype(np.int16).tobytes()
    phones = recognize_phones(pcm)
    assert len(phones) > 20
    assert all(a.end <= b.start + 1e-6 for a, b in zip(phones, phones[1:]))
    assert phones[-1].end <= clip.duration + 0.02
    assert {"sil", "p"} & {p.name for p in phones}
    # a transcript the audio cannot be aligned to falls back to recognition instead of failing
    assert len(align_phones(clip, "zebra " * 40)) > 5
