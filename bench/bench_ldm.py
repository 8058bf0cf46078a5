"""Latent diffusion renderers (DiffTalk, FD2Talk's frame UNet) on CPU: time per frame and memory
in the audio's length. Not a test; figures go to bench/results/ldm.json.

1. Speed: both renderers at the CPU configs' widths (configs/difftalk/vae.cpu.json, configs/
   {difftalk,fd2talk_render}/unet.cpu.json) with random weights (the cost does not depend on
   training), face crops of 64 and 128 px, 10 DDIM steps, through the renderer interface on the
   bundled portrait, pasted back into it: seconds per frame.
2. Memory: peak RSS of a fresh process that streams DiffTalk's frames (progressive reference,
   debug widths, 1 DDIM step so that minutes of audio finish) for a short and a long clip; the
   frames are never held, so the two peaks should match.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEL_DIM = 320


def make_checkpoint(out: Path, renderer: str, size: int, debug: bool = False) -> Path:
    """A random-weight checkpoint (vae/ + unet/) of `renderer` at `size` px from our configs."""
    import torch

    from talkinghead.io.checkpoint import config_from, save_model
    from talkinghead.render.ldm.autoencoder import VAEConfig, build_vae, vae_checkpoint_config
    from talkinghead.training.ldm_tasks import MODEL_NAMES, RENDERERS

    torch.manual_seed(0)
    tag = ".debug" if debug else ".cpu"
    vraw = json.loads((ROOT / f"configs/difftalk/vae{tag}.json").read_text())["model"]
    vcfg = config_from(VAEConfig, {**vraw, "size": size})
    save_model(out / "vae", build_vae(vcfg), vae_checkpoint_config(vcfg))
    folder = "difftalk" if renderer == "difftalk" else "fd2talk_render"
    uraw = json.loads((ROOT / f"configs/{folder}/unet{tag}.json").read_text())["model"]
    cls, model = RENDERERS[renderer]
    f = 2 ** (len(vcfg.channels) - 1)
    cfg = config_from(cls, {**uraw, "latent_channels": vcfg.latent_channels, "latent_size": size // f,
                            **({"audio_dim": MEL_DIM} if renderer == "difftalk" else {})})
    save_model(out / "unet", model(cfg), {**cfg.__dict__, "model": MODEL_NAMES[renderer], "size": size,
                                          "latent_scale": 1.0, "feature": "mel", "crop_expand": 1.6})
    return out


def _inputs(seconds: float):
    from talkinghead.render.base import RenderInputs
    from talkinghead.types import AudioClip, Motion

    n = int(round(seconds * 25))
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    z = np.zeros
    motion = Motion(z((n, 52)), z((n, 3)), z((n, 3)), np.ones(n), np.full((n, 2), 0.3), relative=True)
    return motion, RenderInputs(clip=AudioClip(wave[None], 16000), progress=False)


def _renderer(name: str, ckpt: Path, steps: int):
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.image import read_image
    from talkinghead.render.base import RenderOptions, get_renderer

    image = read_image(ROOT / "talkinghead/assets/sample/portrait.jpg")
    with FaceLandmarker() as lm:
        face = analyze_portrait(image, "portrait", lm)
    r = get_renderer(name, RenderOptions(steps=steps, checkpoints={name: str(ckpt)}))
    return r, r.prepare(image, face)


def speed(work: Path, sizes=(64, 128), frames: int = 8, steps: int = 10) -> list[dict]:
    import torch

    out = []
    for size in sizes:
        for name, reg in (("difftalk", "difftalk"), ("fd2talk-render", "fd2talk")):
            ckpt = make_checkpoint(work / f"{name}{size}", name, size)
            r, state = _renderer(reg, ckpt, steps)
            motion, inputs = _inputs(frames / 25)
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for _ in r.frames(state, motion, inputs))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            params = sum(p.numel() for p in r.model.parameters())
            out.append({"renderer": reg, "size": size, "steps": steps, "frames": n, "unet_params": params,
                        "s_per_frame": wall / n, "cpu_s_per_frame": cpu / n, "threads": torch.get_num_threads()})
            print(f"{reg:9s} {size:4d} px: {wall / n:.3f} s/frame wall, {cpu / n:.3f} s CPU "
                  f"({params / 1e6:.2f} M UNet params)", flush=True)
    return out


def child(seconds: float, ckpt: str) -> None:
    """Run in a fresh process: stream DiffTalk's frames; print peak RSS (MiB) before and after."""
    r, state = _renderer("difftalk", Path(ckpt), 1)
    motion, inputs = _inputs(seconds)
    page = os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * page  # noqa: E731  current MiB
    before, most, n, first = rss(), 0.0, 0, 0.0
    t0 = time.perf_counter()
    for n, _ in enumerate(r.frames(state, motion, inputs), 1):
        if n == 1:                       # the clip's audio features are computed by now
            first = rss()
        if n % 25 == 0:
            most = max(most, rss())
    print(json.dumps({"audio_seconds": seconds, "frames": n, "rss_before_mib": before,
                      "rss_after_first_frame_mib": first,
                      "rss_max_while_streaming_mib": max(most, rss()), "rss_end_mib": rss(),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "wall_s": time.perf_counter() - t0}))


def memory(work: Path, lengths: tuple[float, ...], threads: int = 0) -> list[dict]:
    ckpt = make_checkpoint(work / "mem", "difftalk", 64, debug=True)
    out = []
    for s in lengths:
        res = subprocess.run([sys.executable, __file__, "--child", str(s), str(ckpt), "--threads", str(threads)],
                             capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"{s:6.0f} s of audio: {out[-1]['frames']} frames, RSS {out[-1]['rss_before_mib']:.0f} MiB before, "
              f"at most {out[-1]['rss_max_while_streaming_mib']:.0f} MiB while streaming "
              f"({out[-1]['wall_s']:.0f} s)", flush=True)
    return out


def learn(work: Path, vae_steps: int = 300, unet_steps: int = 400) -> dict:
    """A synthetic sanity check, not the issue's learning check on real portraits: DiffTalk (debug
    widths) trained through the shared loop on synthetic faces whose mouth opening is one audio
    feature (tests/test_ldm.py's shards); on the held-out video, rendered with the renderer's own
    sampling (progressive reference, masked z_T) from its first frame, does the darkness of the
    generated mouth follow that feature? Pearson r, and r against a shuffled feature (chance)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_ldm import write_shards

    import torch

    from talkinghead.data.prepare import LIP_BIT
    from talkinghead.render.ldm.autoencoder import encode
    from talkinghead.render.ldm.difftalk import DiffTalkRenderer
    from talkinghead.render.ldm.renderer import LDMSource
    from talkinghead.training.ldm_tasks import train_ldm

    data = write_shards(work / "toy", videos=4, frames=120)
    train = {"batch_size": 8, "lr": 1e-3, "warmup": 20, "eval_every": 100, "save_every": 100,
             "log_every": 50, "ema_decay": 0.99}
    cfgs = {}
    for stage, steps in (("vae", vae_steps), ("unet", unet_steps)):
        raw = json.loads((ROOT / f"configs/difftalk/{stage}.debug.json").read_text())
        raw["train"] = {**train, "steps": steps}
        if stage == "unet":
            raw["task"]["size"] = 32                                     # latent 16 x 16
        cfgs[stage] = work / f"{stage}.json"
        cfgs[stage].write_text(json.dumps(raw))
    t0 = time.perf_counter()
    rv = train_ldm("difftalk", "vae", cfgs["vae"], str(data), work / "ck" / "vae", progress=False)
    ru = train_ldm("difftalk", "unet", cfgs["unet"], str(data), work / "ck" / "unet", vae=str(work / "ck" / "vae"),
                   progress=False)
    train_s = time.perf_counter() - t0
    r = DiffTalkRenderer(work / "ck", steps=10, mode="crop", crop_size=32)
    d = data / "shards" / "clip0"                                       # the held-out video
    frames, masks = np.load(d / "frames.npy"), np.load(d / "masks.npy")
    feats = np.load(d / "features.npy").astype(np.float32)
    crop = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    src = LDMSource(frames[0], (0, 0, 32, 32), crop, encode(r.vae, crop, r.scale), masks[0], {})
    src.extra = r.conditions(src)
    motion, _ = _inputs(len(frames) / 25)
    out = np.concatenate([np.stack(list(r.decode(src, z))) for z in r.latents(src, motion, feats, 0)])
    lips = (masks & LIP_BIT).any(0)
    lips |= np.roll(lips, 1, 0) | np.roll(lips, -1, 0)
    dark = 255 - out[:, lips].mean((1, 2))                               # mouth darkness per frame
    truth = 255 - frames[:, lips].mean((1, 2))
    rng = np.random.default_rng(0)
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    res = {"train_seconds": train_s, "vae_val_loss": rv.history[-1]["val_loss"],
           "unet_val_loss_first": ru.history[0]["val_loss"], "unet_val_loss_last": ru.history[-1]["val_loss"],
           "r_output_vs_feature": corr(dark, feats[:, 0]), "r_truth_vs_feature": corr(truth, feats[:, 0]),
           "r_chance": float(np.mean([corr(dark, rng.permutation(feats[:, 0])) for _ in range(20)]))}
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--frames", type=int, default=8, help="frames timed per renderer and size")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10, 300], help="audio seconds (memory)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 gives "
                    "figures that hold up on a machine loaded by other work")
    ap.add_argument("--learn", action="store_true", help="only the synthetic learning sanity check")
    ap.add_argument("--out", default=str(ROOT / "bench/results/ldm.json"))
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.child:
        return child(float(a.child[0]), a.child[1])
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if a.learn:
        with tempfile.TemporaryDirectory() as tmp:
            res = {"load_average": load, "learn": learn(Path(tmp)), "load_average_end": os.getloadavg()}
        Path(a.out).write_text(json.dumps(res, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        res = {"load_average": load, "speed": speed(Path(tmp), tuple(a.sizes), a.frames),
               "memory": memory(Path(tmp), tuple(a.lengths), a.threads)}
    m = res["memory"]
    key = "rss_max_while_streaming_mib"
    res["memory_ratio_long_vs_short"] = m[-1][key] / m[0][key]
    res["load_average_end"] = os.getloadavg()
    print(f"streaming RSS ratio {m[-1]['audio_seconds']:.0f} s vs {m[0]['audio_seconds']:.0f} s: "
          f"{res['memory_ratio_long_vs_short']:.3f}")
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
