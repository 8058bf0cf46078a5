"""Latent diffusion renderers (DiffTalk, FD2Talk's frame UNet) on CPU: time per frame and memory
in the audio's length. Not a test; figures go to bench/results/ldm.json.

1. Speed: both renderers at the CPU configs' widths (configs/difftalk/vae.cpu.json, configs/
   {difftalk,fd2talk_render}/unet.cpu.json) with random weights (the cost does not depend on
   training), face crops of 64 and 128 px, 10 DDIM steps, through the renderer interface on the
   bundled portrait, pasted back into it: seconds per frame.
2. Memory: peak RSS of a fresh process that streams DiffTalk's frames (progressive reference,
   debug widths, 1 DDIM step so that minutes of audio finish) for a short and a long clip; the
   frames are never held, so the two peaks should match.
3. `--check`: the issue's learning check per renderer on real portraits (bench/results/
   ldm_check.json, docs/ldm_check.jpg): one torch thread, one stage at a time, each bounded by
   process CPU time (TrainConfig.max_cpu_minutes); judged on `generate`'s output video.
4. `--floor`: the held-out teacher clips through the 64 px crop alone and through the trained
   VAE's round trip, judged the same way: what any UNet on that VAE can reach (docs/ldm.md).
5. `--probe`: FD2Talk's trained renderer on the held-out clips driven by the teacher video's
   measured Motion, by the Motion that drove it and by the motion model's (as `generate`):
   which input space its lips follow (docs/ldm.md).
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


def make_checkpoint(out: Path, renderer: str, size: int, debug: bool = False, widths: str = "cpu") -> Path:
    """A random-weight checkpoint (vae/ + unet/) of `renderer` at `size` px from our configs
    (`widths`: "cpu" the .cpu.json configs, "paper" the paper-scale ones; `debug`: .debug.json)."""
    import torch

    from talkinghead.io.checkpoint import config_from, save_model
    from talkinghead.render.ldm.autoencoder import VAEConfig, build_vae, vae_checkpoint_config
    from talkinghead.training.ldm_tasks import MODEL_NAMES, RENDERERS

    torch.manual_seed(0)
    tag = ".debug" if debug else {"cpu": ".cpu", "paper": ""}[widths]
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


def _renderer(name: str, ckpt: Path, steps: int, device: str = "cpu"):
    from talkinghead.io.image import read_image
    from talkinghead.render.base import RenderOptions, get_renderer

    if not os.environ.get("BENCH_LDM_FACE") or not Path(os.environ["BENCH_LDM_FACE"]).exists():
        from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait

    image = read_image(ROOT / "talkinghead/assets/sample/portrait.jpg")
    saved = os.environ.get("BENCH_LDM_FACE")   # .npz of the face analysis: written here, read where mediapipe is absent
    if saved and Path(saved).exists():
        from talkinghead.types import FaceAnalysis

        z = np.load(saved)
        face = FaceAnalysis(z["landmarks"], z["blendshapes"], z["matrix"], tuple(int(v) for v in z["image_size"]))
    else:
        with FaceLandmarker() as lm:
            face = analyze_portrait(image, "portrait", lm)
        if saved:
            np.savez(saved, landmarks=face.landmarks, blendshapes=face.blendshapes, matrix=face.matrix,
                     image_size=np.array(face.image_size))
    r = get_renderer(name, RenderOptions(steps=steps, checkpoints={name: str(ckpt)})).to(device)
    return r, r.prepare(image, face)


def speed(work: Path, sizes=(64, 128), frames: int = 8, steps: int = 10, device: str = "cpu",
          widths: str = "cpu") -> list[dict]:
    """Seconds per frame through the renderer interface (after one warm-up frame)."""
    import torch

    out = []
    for size in sizes:
        for name, reg in (("difftalk", "difftalk"), ("fd2talk-render", "fd2talk")):
            ckpt = make_checkpoint(work / f"{name}{size}", name, size, widths=widths)
            r, state = _renderer(reg, ckpt, steps, device)
            motion, inputs = _inputs(frames / 25)
            next(iter(r.frames(state, motion[:1], inputs)))                 # warm-up (CUDA init, caches)
            t0, c0 = time.perf_counter(), time.process_time()
            n = sum(1 for _ in r.frames(state, motion, inputs))
            if device != "cpu":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            params = sum(p.numel() for p in r.model.parameters())
            out.append({"renderer": reg, "size": size, "steps": steps, "frames": n, "unet_params": params,
                        "device": device, "widths": widths,
                        "s_per_frame": wall / n, "cpu_s_per_frame": cpu / n, "threads": torch.get_num_threads()})
            print(f"{reg:9s} {size:4d} px: {wall / n:.3f} s/frame wall, {cpu / n:.3f} s CPU "
                  f"({params / 1e6:.2f} M UNet params)", flush=True)
    return out


def child(seconds: float, ckpt: str, renderer: str = "difftalk") -> None:
    """Run in a fresh process: stream the renderer's frames; print peak RSS (MiB) before and after."""
    r, state = _renderer(renderer, Path(ckpt), 1)
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
    print(json.dumps({"renderer": renderer, "audio_seconds": seconds, "frames": n, "rss_before_mib": before,
                      "rss_after_first_frame_mib": first,
                      "rss_max_while_streaming_mib": max(most, rss()), "rss_end_mib": rss(),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "wall_s": time.perf_counter() - t0}))


def memory(work: Path, lengths: tuple[float, ...], threads: int = 0, renderer: str = "difftalk") -> list[dict]:
    ckpt = make_checkpoint(work / "mem", "fd2talk-render" if renderer == "fd2talk" else renderer, 64, debug=True)
    out = []
    for s in lengths:
        res = subprocess.run([sys.executable, __file__, "--child", str(s), str(ckpt), renderer,
                              "--threads", str(threads)],
                             capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"{s:6.0f} s of audio: {out[-1]['frames']} frames, RSS {out[-1]['rss_before_mib']:.0f} MiB before, "
              f"at most {out[-1]['rss_max_while_streaming_mib']:.0f} MiB while streaming "
              f"({out[-1]['wall_s']:.0f} s)", flush=True)
    return out


def learn(work: Path, vae_steps: int = 300, unet_steps: int = 400, mouth_weight: float = 1.0,
          cond_in_time: bool = False) -> dict:
    """A synthetic sanity check, not the issue's learning check on real portraits: DiffTalk (debug
    widths) trained through the shared loop on synthetic faces whose mouth opening is one audio
    feature (tests/test_ldm.py's shards); on the held-out video, rendered with the renderer's own
    sampling (progressive reference, masked z_T) from its first frame, does the darkness of the
    generated mouth follow that feature? Pearson r, and r against a shuffled feature (chance); the
    same r for the VAE's reconstructions of the true frames (what the autoencoder can show at all).
    `mouth_weight`, `cond_in_time`: the UNet's mouth-weighted loss and timestep-embedding condition."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_ldm import write_shards

    import torch

    from talkinghead.data.prepare import LIP_BIT
    from talkinghead.render.ldm.autoencoder import decode, encode
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
            raw["task"]["mouth_weight"] = mouth_weight
            raw["model"]["cond_in_time"] = cond_in_time
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
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = ((decode(r.vae, encode(r.vae, x, r.scale), r.scale) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    recon = 255 - rec[:, lips].mean((1, 2))
    rng = np.random.default_rng(0)
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    res = {"train_seconds": train_s, "vae_val_loss": rv.history[-1]["val_loss"],
           "unet_val_loss_first": ru.history[0]["val_loss"], "unet_val_loss_last": ru.history[-1]["val_loss"],
           "mouth_weight": mouth_weight, "cond_in_time": cond_in_time, "unet_steps": unet_steps,
           "r_output_vs_feature": corr(dark, feats[:, 0]), "r_truth_vs_feature": corr(truth, feats[:, 0]),
           "r_vae_reconstruction_vs_feature": corr(recon, feats[:, 0]),
           "r_chance": float(np.mean([corr(dark, rng.permutation(feats[:, 0])) for _ in range(20)]))}
    print(json.dumps(res), flush=True)
    return res


# -- the learning check on real portraits ------------------------------------------------------
CHECK = Path("/work/data/ldm_check") if Path("/work/data").is_dir() else ROOT / "outputs" / "ldm_check"
FOOTAGE = ("carphone.mp4", "WolfgangLanger_Pexels.mp4", "single_face.mp4")


def _footage(out: Path) -> Path:
    """The realism benchmark's real face clips, each given a silent track (`prepare` wants audio)."""
    from talkinghead.assets import asset_path
    from talkinghead.io.audio import write_wav
    from talkinghead.io.video import iter_frames, video_info, write_video
    from talkinghead.types import AudioClip

    out.mkdir(parents=True, exist_ok=True)
    for name in FOOTAGE:
        src, dst = asset_path(name), out / name
        if not dst.exists():
            info = video_info(src)
            silent = write_wav(out / f"{dst.stem}.silence.wav",
                               AudioClip(np.zeros((1, int(info.num_frames / info.fps * 16000) + 16000), np.float32), 16000))
            write_video(dst, iter_frames(src), info.fps, audio=silent)
            silent.unlink()
    return out


def _merged(out: Path, parts: list[Path]) -> Path:
    """One prepared dataset whose shards are the union of `parts`' (symlinks named PART-SHARD:
    two parts' shards may share a name, as their sources' relative paths may)."""
    names = []
    for part in parts:
        meta = json.loads((part / "manifest.json").read_text())
        for n in meta["shards"]:
            link = out / "shards" / f"{part.name}-{n}"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((part / "shards" / n).resolve())
            names.append(link.name)
    (out / "manifest.json").write_text(json.dumps({**meta, "shards": sorted(set(names))}))
    return out


def _clips(split: str, portraits: list[Path], voices: tuple[str, ...], count: int, seed: int) -> list[dict]:
    """bench_dawn's clips (the geometric renderer's videos, cached in CHECK/split) of `portraits`."""
    import bench_dawn

    bench_dawn.WORK = CHECK
    all_portraits = bench_dawn.portraits
    bench_dawn.portraits = lambda: portraits
    try:
        return bench_dawn.make_clips(split, voices, count, seed)
    finally:
        bench_dawn.portraits = all_portraits


def check_data(train_clips: int, test_clips: int, part: str = "all") -> tuple[list[Path], list[dict], dict]:
    """The talking set (bench_dawn's: the geometric renderer's videos of the bundled portrait and
    of a carphone frame speaking flite sentences; held out: the `rms` voice and other sentences)
    prepared at 64 px, and the VAE's set: the talking set + the real face footage (appearance).
    `part`: "train0" / "train1" / "test" makes only that part's clips (to run them side by side)."""
    import bench_dawn

    from talkinghead.data.prepare import PrepareConfig, prepare

    bench_dawn.WORK = CHECK
    t = time.perf_counter()
    sample, carphone = bench_dawn.portraits()
    parts = {"train0": lambda: _clips("train/p0", [sample], bench_dawn.TRAIN_VOICES, train_clips, 0),
             "train1": lambda: _clips("train/p1", [carphone], bench_dawn.TRAIN_VOICES, train_clips, 2),
             "test": lambda: _clips("test", [sample, carphone], (bench_dawn.TEST_VOICE,), test_clips, 1)}
    prep = lambda src, name: prepare(src, CHECK / "prep" / name, PrepareConfig(size=64), workers=2,  # noqa: E731
                                     progress=False)
    if part == "prepare0":             # the first portrait's clips and the footage, while the rest are made
        return [], [], {"p0": prep(CHECK / "train" / "p0", "p0"), "footage": prep(_footage(CHECK / "footage"), "footage")}
    if part != "all":
        parts[part]()
        return [], [], {}
    made = {k: len(parts[k]()) for k in ("train0", "train1", "test")}
    test = parts["test"]()
    made_s = time.perf_counter() - t
    m = {k: prep(CHECK / "train" / k, k) for k in ("p0", "p1")}
    f = prep(_footage(CHECK / "footage"), "footage")
    _merged(CHECK / "data", [CHECK / "prep" / "p0", CHECK / "prep" / "p1"])
    _merged(CHECK / "data_vae", [CHECK / "prep" / "p0", CHECK / "prep" / "p1", CHECK / "prep" / "footage"])
    info = {"clips": made, "make_s": made_s, "train_videos": sum(x["videos"] for x in m.values()),
            "frames": sum(x["frames"] for x in m.values()), "footage_frames": f["frames"],
            "footage_skipped": f["skipped"], "s": time.perf_counter() - t}
    print(json.dumps(info), flush=True)
    return sorted((CHECK / "train").rglob("*.mp4")), test, info


# CPU seconds per optimizer step at the .cpu configs, batch 8, one torch thread (measured on this
# machine, profile in the docs): the stages' `steps` (the cosine schedule's length) are sized from
# them so that the learning rate has decayed when the CPU budget runs out; the budget is the bound.
STEP_CPU_S = {"vae": 0.77, "decoder": 0.9, "difftalk": 0.35, "fd2talk": 0.31}


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (ffmpeg, ...)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _stage_config(key: str, src: Path, cpu_minutes: float, changes: dict) -> Path:
    """The check's copy of a config: `changes` ({section: {field: value}}) applied, bounded by
    `cpu_minutes` of process CPU time (TrainConfig.max_cpu_minutes), no wall-time bound."""
    raw = json.loads(src.read_text())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    steps = max(50, int(cpu_minutes * 60 / STEP_CPU_S[key]))
    raw["train"].update(max_cpu_minutes=cpu_minutes, max_minutes=0, steps=steps,
                        eval_every=max(50, steps // 8), save_every=max(50, steps // 8))
    path = CHECK / "configs" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=1))
    return path


def _train_stage(key: str, renderer: str, stage: str, config: Path, data: Path, vae: Path | None,
                 dst: Path) -> dict:
    """One training stage in this process (one torch thread): steps, CPU minutes, val loss curve."""
    from talkinghead.training.ldm_tasks import train_ldm

    import shutil

    if dst.is_symlink():
        dst.unlink()
    shutil.rmtree(dst, ignore_errors=True)                               # a fresh run, no resuming
    t, c, load = time.perf_counter(), _cpu_s(), _uptime()
    r = train_ldm(renderer, stage, config, str(data), dst, vae=None if vae is None else str(vae), progress=False)
    out = {"steps": r.step, "cpu_minutes": (_cpu_s() - c) / 60, "wall_minutes": (time.perf_counter() - t) / 60,
           "uptime_start": load, "uptime_end": _uptime(),
           "val_loss": [(h["step"], h["val_loss"]) for h in r.history if "val_loss" in h]}
    print(key, json.dumps({k: v for k, v in out.items() if k != "val_loss"}), out["val_loss"][-1], flush=True)
    return out


def _train_vae(minutes: float) -> dict:
    """The VAE both renderers share: the talking set + the real footage, L1 + KL (LPIPS-VGG16
    costs several times a step on one CPU thread)."""
    cfg = _stage_config("vae", ROOT / "configs/difftalk/vae.cpu.json", minutes,
                        {"model": {"perceptual_weight": 0.0}, "train": {"lr": 6e-4}})
    return _train_stage("vae", "difftalk", "vae", cfg, CHECK / "data_vae", None, CHECK / "ckpt" / "vae")


def _train_renderer(name: str, minutes: dict[str, float], motion: str = "driving",
                    data: Path = CHECK / "data") -> tuple[Path, dict]:
    """One renderer's stages after the shared VAE: DiffTalk's UNet; FD2Talk's reference decoder
    (when its budget is > 0; else the plain VAE decodes) and UNet on `motion` (task.motion), on
    the prepared `data`. -> (checkpoint folder, figures)."""
    import shutil

    ck, cfg, out = CHECK / "ckpt", ROOT / "configs", {}
    root = ck / name
    root.mkdir(parents=True, exist_ok=True)
    vae = ck / "vae"
    if name == "fd2talk" and minutes.get("decoder", 0) > 0:
        dcfg = _stage_config("decoder", cfg / "difftalk/vae.cpu.json", minutes["decoder"],
                             {"model": {"perceptual_weight": 0.0}, "train": {"lr": 2e-4, "warmup": 20}})
        out["decoder"] = _train_stage("decoder", "fd2talk-render", "decoder", dcfg, CHECK / "data_vae", vae,
                                      root / "vae")
        vae = root / "vae"
    link = root / "vae"
    if vae != link:
        if link.is_symlink():
            link.unlink()
        shutil.rmtree(link, ignore_errors=True)                         # an earlier run's decoder
        link.symlink_to(vae)
    src = cfg / ("difftalk/unet.cpu.json" if name == "difftalk" else "fd2talk_render/unet.cpu.json")
    ucfg = _stage_config(name, src, minutes[name], {"task": {"motion": motion}} if name == "fd2talk" else {})
    out[name] = _train_stage(name, "difftalk" if name == "difftalk" else "fd2talk-render", "unet", ucfg,
                             data, link, root / "unet")
    return root, out


def _trained(name: str) -> dict:
    """--reuse: what the existing checkpoints' training reached ("vae": the shared VAE's only)."""
    ck = CHECK / "ckpt"
    states = {"vae": ck / "vae", **({name: ck / name / "unet"} if name != "vae" else {})}
    if name == "fd2talk" and (ck / name / "vae").resolve() != (ck / "vae").resolve():
        states["decoder"] = ck / name / "vae"
    return {k: {"steps": st["step"], "val_loss": [(h["step"], h["val_loss"]) for h in st["history"] if "val_loss" in h]}
            for k, st in ((k, json.loads((d / "train_state.json").read_text())) for k, d in states.items())}



def condition_gap(renderer: str, config: Path, ckpt: Path, data: Path, batches: int = 8) -> dict:
    """Does the trained UNet use its driving condition at all? Its (mouth-weighted, as trained)
    diffusion loss on held-out frames with the true audio (DiffTalk) or Motion (FD2Talk) against
    the same batch with the condition rolled by one sample (another frame's): equal losses mean
    the condition is ignored. Same noise and timesteps for both."""
    import torch

    from talkinghead.io.checkpoint import load_weights, read_config
    from talkinghead.training.ldm_tasks import RENDERERS, UNetTask, UNetTaskConfig, _tuples
    from talkinghead.training.run import dataclass_from

    raw = json.loads(config.read_text())
    tcfg = dataclass_from(UNetTaskConfig, raw["task"], "task")
    tcfg.data, tcfg.vae = str(data), str(ckpt / "vae")
    task = UNetTask(renderer, tcfg, dataclass_from(RENDERERS[renderer][0], _tuples(raw["model"]), "model"), 16)
    model = load_weights(ckpt / "unet", task.model).eval()
    task.scale = float(read_config(ckpt / "unet")["config"]["latent_scale"])
    key = "audio" if renderer == "difftalk" else "motion"
    rng, true, rolled = np.random.default_rng(5), [], []
    with torch.no_grad():
        for i in range(batches):
            b = task.val_samples.draw(16, rng, tcfg, task.model_cfg)
            true.append(task.loss(model, b, torch.Generator().manual_seed(i))[0].item())
            rolled.append(task.loss(model, {**b, key: b[key].roll(1, 0)}, torch.Generator().manual_seed(i))[0].item())
    res = {"condition": key, "val_loss_true": float(np.mean(true)), "val_loss_rolled": float(np.mean(rolled))}
    print(renderer, json.dumps(res), flush=True)
    return res


def _judge(name: str, ckpt: Path, picks: list[dict], steps: int, reuse: bool) -> dict:
    """`generate --renderer NAME` on the held-out clips, judged on the output video by the face
    model: mouth opening vs the held-out voice's phones (r), vs another clip's phones (chance),
    dlib distance to the portrait."""
    import bench_dawn

    from talkinghead.errors import NoFaceError
    from talkinghead.io.video import video_info
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    pipe = GeneratePipeline(GenerateConfig(renderer=name, renderer_checkpoint=str(ckpt), dawn_steps=steps))
    rows = []
    for i, c in enumerate(picks):
        out = CHECK / "out" / name / Path(c["video"]).name
        out.parent.mkdir(parents=True, exist_ok=True)
        t, cpu = time.perf_counter(), _cpu_s()
        if not (reuse and out.exists()):                                 # --reuse: judge what is there
            pipe(c["portrait"], c["wav"], out, MotionControls(seed=i), progress=False)
        gen = {"generate_s": time.perf_counter() - t, "generate_cpu_s": _cpu_s() - cpu}
        other = picks[(i + 1) % len(picks)]["phones"]
        try:
            judged = {"face_found": True, **bench_dawn.judge(out, c["phones"], other, Path(c["portrait"]))}
        except NoFaceError:       # the output holds no face the face model can find
            judged = {"face_found": False, **dict.fromkeys(("r", "r_other_clip", "dlib_distance", "csim_dlib"), np.nan)}
        rows.append({"clip": out.name, "frames": video_info(out).num_frames, **gen, **judged,
                     "teacher_r": bench_dawn.judge(Path(c["video"]), c["phones"], c["phones"], Path(c["portrait"]))["r"]})
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    return {"test": rows, "render_steps": steps,
            "summary": {k: float(np.nanmean([r[k] for r in rows])) for k in
                        ("r", "r_other_clip", "teacher_r", "dlib_distance", "csim_dlib")}}


# bench_dawn.make_clips draws each clip's MotionControls seed from default_rng(SEED) after its
# sentence draw, clip by clip: split -> (SEED, portraits); clips per portrait = clips.json's / portraits
TEACHER_RNG = {"train/p0": (0, 1), "train/p0d": (0, 1), "train/p1": (2, 1), "test": (1, 2)}


def teacher_seeds(split: str, clips: int) -> list[int]:
    """The seeds of `split`'s teacher clips, in clips.json's order (replayed; `write_driving`
    checks them against the videos' measured head pose, random per seed)."""
    from talkinghead.data.corpus import sentences

    seed, portraits = TEACHER_RNG[split]
    rng = np.random.default_rng(seed)
    rng.choice(len(sentences()), size=clips // portraits * 2, replace=False)
    return [int(rng.integers(1000)) for _ in range(clips)]


def driving(split: str) -> list[tuple[dict, object]]:
    """(clip, the relative Motion that drove its teacher video) for `split`'s clips: the motion
    model's on the clip's audio with the clip's seed, as bench_dawn.make_clips rendered it."""
    from talkinghead.io.audio import read_audio
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GeneratePipeline

    clips = json.loads((CHECK / split / "clips.json").read_text())
    pipe = GeneratePipeline()
    return [(c, pipe.motion(read_audio(c["wav"]), MotionControls(seed=s)))
            for c, s in zip(clips, teacher_seeds(split, len(clips)))]


def driving_data(train_clips: int) -> tuple[Path, dict]:
    """FD2Talk's training set on driving Motion: the first portrait's clips rendered again into
    train/p0d (the same sentences, voices and seeds as train/p0, which an earlier motion code
    rendered: its replayed driving yaw does not match the videos', r -0.40..0.73, while train/p1's
    and the test clips' do, r >= 0.95), prepared, merged with p1's; driving.npz in every shard."""
    import bench_dawn

    from talkinghead.data.prepare import PrepareConfig, prepare

    sample = bench_dawn.portraits()[0]
    _clips("train/p0d", [sample], bench_dawn.TRAIN_VOICES, train_clips, 0)
    if not (CHECK / "prep" / "p0d" / "manifest.json").exists():
        prepare(CHECK / "train" / "p0d", CHECK / "prep" / "p0d", PrepareConfig(size=64), workers=2, progress=False)
    data = _merged(CHECK / "data_driving", [CHECK / "prep" / "p0d", CHECK / "prep" / "p1"])
    return data, write_driving((("p0d", "train/p0d"), ("p1", "train/p1")))


def write_driving(parts) -> dict:
    """driving.npz in every prepared shard of `parts` ((prep name, clip split), ...) for
    task.motion "driving": the Motion that made its frames. The seeds are checked on the head
    pose: yaw is random per seed, so the driving yaw matches the measured one (r ~ 1) only with
    the clip's own seed."""
    from talkinghead.types import Motion

    yaw_r, jaw = [], {}
    for part, split in parts:
        shards = {json.loads((d / "info.json").read_text())["source"]: d
                  for d in (CHECK / "prep" / part / "shards").iterdir() if (d / "info.json").is_file()}
        for c, m in driving(split):
            shard = shards[c["video"]]
            m.save(shard / "driving.npz")
            meas = Motion.load(shard / "motion.npz")
            n = min(len(m), len(meas))
            yaw_r.append(float(np.corrcoef(m.rotation[:n, 0], meas.rotation[:n, 0])[0, 1]))
            jaw.setdefault(part, []).append([float(m.channel("jawOpen").std()), float(meas.channel("jawOpen").std())])
    res = {"shards": len(yaw_r), "yaw_r_driving_vs_measured_min": min(yaw_r), "yaw_r_mean": float(np.mean(yaw_r)),
           "jaw_open_std_driving_vs_measured": {k: np.mean(v, 0).tolist() for k, v in jaw.items()}}
    print("driving", json.dumps(res), flush=True)
    return res


def drive_probe(ckpt: Path, test: list[dict], steps: int) -> dict:
    """Where FD2Talk's lips are lost: the trained renderer on the held-out clips driven by (a) the
    teacher video's Motion as the face model measures it (relative to the portrait's reading),
    (b) the Motion that drove the teacher, (c) the motion model's on the clip's audio with the
    seed `_judge` uses (what `generate` feeds it, unstreamed). Judged as `_judge` judges."""
    import bench_dawn

    from talkinghead.face.extract import fill_missing, motion_from_face
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.audio import read_audio
    from talkinghead.io.image import read_image
    from talkinghead.io.video import iter_frames, write_video
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GeneratePipeline
    from talkinghead.render.base import RenderInputs
    from talkinghead.render.ldm.fd2talk_render import FD2TalkRenderer

    r, pipe, rows = FD2TalkRenderer(ckpt, steps=steps), GeneratePipeline(), []
    drove = dict((c["video"], m) for c, m in driving("test"))
    picks = test[::2]
    for i, c in enumerate(picks):
        img = read_image(c["portrait"])
        with FaceLandmarker() as lm:
            face = analyze_portrait(img, "portrait", lm)
            src = r.prepare(img, face, lm)
        with FaceLandmarker(video=True) as lm:
            faces = [next(iter(lm.detect(f, timestamp_ms=k * 40)), None) for k, f in enumerate(iter_frames(c["video"]))]
        measured = fill_missing([motion_from_face(f) if f is not None else None for f in faces], 25.0, c["video"])
        motions = {"measured": measured.relative_to(motion_from_face(face)), "driving": drove[c["video"]],
                   "generated": pipe.motion(read_audio(c["wav"]), MotionControls(seed=i))}
        row = {"clip": Path(c["video"]).name}
        for kind, m in motions.items():
            m = m[:min(len(m), len(faces))]
            out = CHECK / "probe" / kind / Path(c["video"]).name
            out.parent.mkdir(parents=True, exist_ok=True)
            write_video(out, r.frames(src, m, RenderInputs(clip=read_audio(c["wav"]), progress=False)), 25.0,
                        audio=c["wav"])
            j = bench_dawn.judge(out, c["phones"], picks[(i + 1) % len(picks)]["phones"], Path(c["portrait"]))
            row[kind] = {"jaw_open_std": float(m.channel("jawOpen").std()), "r": j["r"],
                         "r_other_clip": j["r_other_clip"], "dlib_distance": j["dlib_distance"]}
        print("probe", json.dumps(row), flush=True)
        rows.append(row)
    return {"ckpt": str(ckpt), "render_steps": steps, "test": rows, "uptime": _uptime()}


def floor(picks: list[dict], vae: Path | None, size: int = 64, expand: float = 1.6) -> dict:
    """What the held-out clips can show through the renderers' crop before any UNet: each teacher
    frame cropped at the portrait's box (as `generate` crops), resized to `size` px, through the
    VAE's round trip when `vae` is given, pasted back into the frame; judged as `_judge` judges."""
    import bench_dawn
    import torch

    from talkinghead.face.crop import crop_box, crop_image
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.image import read_image
    from talkinghead.io.video import iter_frames, write_video
    from talkinghead.render.base import paste_feathered
    from talkinghead.render.ldm.autoencoder import decode, encode, load_vae

    model = load_vae(vae) if vae else None

    def through(crop: np.ndarray) -> np.ndarray:
        if model is None:
            return crop
        with torch.no_grad():
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1          # (1, 3, S, S)
            y = decode(model, encode(model, x, 1.0), 1.0)[0].permute(1, 2, 0).numpy()
        return ((y + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)

    rows, cpu = [], _cpu_s()
    for i, c in enumerate(picks):
        with FaceLandmarker() as lm:
            box = crop_box(analyze_portrait(read_image(c["portrait"]), "portrait", lm), expand)
        out = CHECK / "floor" / f"{'vae' if vae else 'px'}{size}" / Path(c["video"]).name
        out.parent.mkdir(parents=True, exist_ok=True)
        write_video(out, (paste_feathered(f, box, through(crop_image(f, box, size))) for f in iter_frames(c["video"])),
                    25.0, audio=c["wav"])
        judged = bench_dawn.judge(out, c["phones"], picks[(i + 1) % len(picks)]["phones"], Path(c["portrait"]))
        rows.append({"clip": out.name, **{k: float(v) for k, v in judged.items()}})
        print("floor", vae, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    return {"size": size, "expand": expand, "vae": str(vae) if vae else None, "test": rows,
            "cpu_minutes": (_cpu_s() - cpu) / 60, "uptime": _uptime(),
            "summary": {k: float(np.mean([r[k] for r in rows])) for k in ("r", "r_other_clip", "dlib_distance")}}


def picture(picks: list[dict], names: list[str], path: Path, size: int = 128) -> None:
    """The held-out clips' face crops at four instants: the geometric teacher's frames (the real
    portrait animated) above each renderer's output, one column block per clip."""
    import cv2

    from talkinghead.face.crop import crop_box, crop_image
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait
    from talkinghead.io.image import read_image
    from talkinghead.io.video import iter_frames

    tiles = []
    with FaceLandmarker() as lm:
        for c in picks:
            box = crop_box(analyze_portrait(read_image(c["portrait"]), "portrait", lm), 1.6)
            videos = [Path(c["video"])] + [CHECK / "out" / n / Path(c["video"]).name for n in names]
            clips = [list(iter_frames(v)) for v in videos if v.exists()]
            picks_at = np.linspace(10, min(map(len, clips)) - 10, 4).astype(int)
            tiles.append(np.concatenate([np.concatenate([crop_image(f[i], box, size) for i in picks_at], 1)
                                         for f in clips], 0))
    h = max(t.shape[0] for t in tiles)
    img = np.concatenate([np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles], 1)
    cv2.imwrite(str(path), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])


def check(train_clips: int, test_clips: int, minutes: dict[str, float], steps: int, reuse: bool,
          renderers: tuple[str, ...] = ("difftalk", "fd2talk"), out: Path | None = None,
          train_vae: bool = True, fd2talk_motion: str = "driving") -> dict:
    """The issue's learning check per renderer (cf. bench_dawn.py), one torch thread, one stage at
    a time, each bounded by `minutes` of process CPU time: the shared VAE, then per renderer its
    training, the condition gap and `generate` on the held-out voice's clips (`_judge`). FD2Talk
    trains on `fd2talk_motion` ("driving": `write_driving` first). Results are written to `out`
    after every renderer."""
    import torch

    torch.set_num_threads(1)
    out = out or ROOT / "bench/results/ldm_check.json"
    res = json.loads(out.read_text()) if out.exists() and (reuse or not train_vae) else {}
    res.update(threads=1, uptime_start=_uptime())
    if train_vae and not reuse:
        res["vae_budget_cpu_minutes"] = minutes["vae"]
    _, test, res["data"] = check_data(train_clips, test_clips)
    picks = test[::2]                                                   # one clip per portrait
    if not reuse and train_vae:
        res["vae"] = _train_vae(minutes["vae"])
    res.setdefault("vae", _trained("vae")["vae"])
    for name in renderers:
        cpu = _cpu_s()
        data = CHECK / "data"
        if name == "fd2talk" and fd2talk_motion == "driving":
            data, res["driving"] = driving_data(train_clips)
        if reuse:
            ckpt, trained = CHECK / "ckpt" / name, _trained(name)
        else:
            ckpt, trained = _train_renderer(name, minutes, fd2talk_motion, data)
        model = "difftalk" if name == "difftalk" else "fd2talk-render"
        config = CHECK / "configs" / f"{name}.json"
        gap = condition_gap(model, config if config.exists() else ROOT / "configs" / (
            "difftalk/unet.cpu.json" if name == "difftalk" else "fd2talk_render/unet.cpu.json"), ckpt, data)
        judge_cpu = _cpu_s()
        res[name] = {"budget_cpu_minutes": {k: minutes[k] for k in (name, "decoder") if minutes.get(k)},
                     **({"motion": fd2talk_motion} if name == "fd2talk" else {}),
                     "train": trained, "condition_gap": gap, **_judge(name, ckpt, picks, steps, reuse),
                     "judge_cpu_minutes": (_cpu_s() - judge_cpu) / 60, "cpu_minutes": (_cpu_s() - cpu) / 60,
                     "uptime_end": _uptime()}
        print(name, json.dumps(res[name]["summary"]), flush=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
    res["uptime_end"] = _uptime()
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res



def torch_threads_one() -> None:
    import torch

    torch.set_num_threads(1)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--frames", type=int, default=8, help="frames timed per renderer and size")
    ap.add_argument("--lengths", type=float, nargs="+", default=[10, 300], help="audio seconds (memory)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 gives "
                    "figures that hold up on a machine loaded by other work")
    ap.add_argument("--learn", action="store_true", help="only the synthetic learning sanity check")
    ap.add_argument("--check", action="store_true", help="the learning check on real portraits "
                    "(bench/results/ldm_check.json)")
    ap.add_argument("--minutes", type=float, nargs=4, default=[9, 14, 0, 14], metavar=("VAE", "DIFFTALK", "DECODER",
                    "FD2TALK"), help="--check: process CPU minutes per stage, one torch thread, one stage at a "
                    "time (DECODER 0: FD2Talk decodes with the plain VAE)")
    ap.add_argument("--renderers", nargs="+", choices=("difftalk", "fd2talk"), default=["difftalk", "fd2talk"],
                    help="--check: the renderers to train and judge (after the shared VAE)")
    ap.add_argument("--no-vae", action="store_true", help="--check: keep the trained VAE (ckpt/vae), train the rest")
    ap.add_argument("--reuse", action="store_true", help="--check: judge the existing checkpoints")
    ap.add_argument("--picture", action="store_true", help="after --check: docs/ldm_check.jpg, the held-out "
                    "clips' teacher frames above each renderer's")
    ap.add_argument("--floor", action="store_true", help="the held-out teacher clips through the 64 px crop "
                    "alone and through the trained VAE's round trip, judged (bench/results/ldm_check.json: floor)")
    ap.add_argument("--fd2talk-motion", choices=("driving", "measured"), default="driving",
                    help="--check: FD2Talk's training Motion (task.motion): the teacher's driving Motion or the "
                    "face model's reading of its video")
    ap.add_argument("--probe", nargs="*", metavar="CKPT", help="after --check: FD2Talk (the checkpoints CKPT "
                    "under ckpt/, default fd2talk) driven by the held-out teacher's measured, driving and generated "
                    "Motion, judged (bench/results/ldm_check.json: probe)")
    ap.add_argument("--render-steps", type=int, default=5, help="--check: DDIM steps when generating")
    ap.add_argument("--gap", action="store_true", help="after --check: the UNets' loss with the true vs another "
                    "frame's condition (bench/results/ldm_check.json gains it)")
    ap.add_argument("--mouth-weight", type=float, default=1.0, help="--learn: the UNet's mouth loss weight")
    ap.add_argument("--cond-in-time", action="store_true", help="--learn: condition in the timestep embedding too")
    ap.add_argument("--unet-steps", type=int, default=400, help="--learn: UNet steps")
    ap.add_argument("--data-only", choices=("all", "train0", "train1", "test", "prepare0"),
                    help="only make (that part of) the real-portrait check's data")
    ap.add_argument("--train-clips", type=int, default=20, help="real-portrait check: talking clips per portrait")
    ap.add_argument("--test-clips", type=int, default=2, help="real-portrait check: held-out clips per portrait")
    ap.add_argument("--device", default="cpu", help="speed only: cpu or cuda (the 256 px figure)")
    ap.add_argument("--widths", choices=("cpu", "paper"), default="cpu",
                    help="speed: the .cpu.json configs' widths or the paper-scale configs'")
    ap.add_argument("--speed-only", action="store_true", help="skip the memory runs")
    ap.add_argument("--memory-only", action="store_true", help="only the memory runs (with --memory-renderer)")
    ap.add_argument("--memory-renderer", choices=("difftalk", "fd2talk"), default="difftalk",
                    help="the renderer streamed in the memory runs")
    ap.add_argument("--out", help="results file (default bench/results/ldm.json; --learn: ldm_learn.json)")
    a = ap.parse_args()
    a.out = a.out or str(ROOT / "bench/results" / ("ldm_learn.json" if a.learn else "ldm.json"))
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.child:
        return child(float(a.child[0]), a.child[1], a.child[2])
    if a.data_only:
        sys.path.insert(0, str(ROOT / "bench"))
        return print(check_data(a.train_clips, a.test_clips, a.data_only)[2])
    if a.gap:
        out, ck = ROOT / "bench/results/ldm_check.json", CHECK / "ckpt"
        res = json.loads(out.read_text()) if out.exists() else {}
        res["condition_gap"] = {
            "difftalk": condition_gap("difftalk", ROOT / "configs/difftalk/unet.cpu.json", ck / "difftalk", CHECK / "data"),
            "fd2talk": condition_gap("fd2talk-render", ROOT / "configs/fd2talk_render/unet.cpu.json", ck / "fd2talk",
                                     CHECK / "data"),
            "uptime": _uptime()}
        out.write_text(json.dumps(res, indent=1) + "\n")
        return
    if a.floor:
        sys.path.insert(0, str(ROOT / "bench"))
        torch_threads_one()
        out = ROOT / "bench/results/ldm_check.json"
        res = json.loads(out.read_text()) if out.exists() else {}
        picks = check_data(a.train_clips, a.test_clips)[1][::2]
        res["floor"] = {"pixels": floor(picks, None), "vae": floor(picks, CHECK / "ckpt" / "vae")}
        out.write_text(json.dumps(res, indent=1) + "\n")
        return
    if a.probe is not None:
        sys.path.insert(0, str(ROOT / "bench"))
        torch_threads_one()
        out = ROOT / "bench/results/ldm_check.json"
        test = check_data(a.train_clips, a.test_clips)[1]
        for name in a.probe or ["fd2talk"]:
            res = json.loads(out.read_text()) if out.exists() else {}
            res.setdefault("probe", {})[name] = drive_probe(CHECK / "ckpt" / name, test, a.render_steps)
            out.write_text(json.dumps(res, indent=1) + "\n")
        return
    if a.picture:
        sys.path.insert(0, str(ROOT / "bench"))
        return picture(check_data(a.train_clips, a.test_clips)[1][::2], a.renderers, ROOT / "docs" / "ldm_check.jpg")
    if a.check:
        sys.path.insert(0, str(ROOT / "bench"))
        check(a.train_clips, a.test_clips, dict(zip(("vae", "difftalk", "decoder", "fd2talk"), a.minutes)),
              a.render_steps, a.reuse, tuple(a.renderers), train_vae=not a.no_vae, fd2talk_motion=a.fd2talk_motion)
        return
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if a.learn:
        with tempfile.TemporaryDirectory() as tmp:
            res = {"load_average": load, "learn": learn(Path(tmp), unet_steps=a.unet_steps, mouth_weight=a.mouth_weight,
                                                         cond_in_time=a.cond_in_time),
                   "load_average_end": os.getloadavg()}
        Path(a.out).write_text(json.dumps(res, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        res = {"load_average": load, "uptime": _uptime()}
        if not a.memory_only:
            res["speed"] = speed(Path(tmp), tuple(a.sizes), a.frames, device=a.device, widths=a.widths)
        if a.speed_only:
            res["load_average_end"] = os.getloadavg()
            Path(a.out).write_text(json.dumps(res, indent=1))
            return
        res["memory"] = memory(Path(tmp), tuple(a.lengths), a.threads, a.memory_renderer)
    m = res["memory"]
    key = "rss_max_while_streaming_mib"
    res["memory_ratio_long_vs_short"] = m[-1][key] / m[0][key]
    res["load_average_end"] = os.getloadavg()
    print(f"streaming RSS ratio {m[-1]['audio_seconds']:.0f} s vs {m[0]['audio_seconds']:.0f} s: "
          f"{res['memory_ratio_long_vs_short']:.3f}")
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
