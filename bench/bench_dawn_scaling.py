"""DAWN's A2V-FDM denoiser: time and peak memory against the clip's length (not a test).

One denoiser evaluation (a DDIM step; the released sampler runs 20) of the released-size model
(`Unet3DConfig()`: dim 64, mults 1-2-4-8, HuBERT 1024, window 40) with random weights, at 128
(latent 32 x 32) and 256 (latent 64 x 64), for several clip lengths:

* `ours`: `linear.LinearRunner` (layer by layer, time chunks, banded temporal attention);
* `official`: the authors' `DynamicNfUnet3D.forward_with_cond_scale` on the same weights, fed as
  their `ddim_sample` feeds it (the source latent repeated over frames), when `--official DIR`
  points at a copy of DAWN-pytorch (never part of this repository); without it, our `Unet3D.forward`,
  which computes the same thing (tests/test_dawn.py pins it to the official output);
* `sample`: our whole sampler (`sample_linear`, the released 20 DDIM steps) for the clip;
* `compare`: max |ours - official| of one evaluation, in one process (needs `--official`).

Each measurement runs in a fresh child process (peak RSS on CPU, torch's peak allocation on CUDA;
an out-of-memory is recorded as such). Results: bench/results/dawn_scaling.json (merged by key).

    .venv/bin/python bench/bench_dawn_scaling.py --device cpu --frames 8 16 32 --sizes 128
    python bench/bench_dawn_scaling.py --device cuda --frames 200 1000 5000 --official /path/DAWN-pytorch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "dawn_scaling.json"


def _official_unet(path: str, cfg, frames: int):
    import types

    sys.path[:0] = [path, str(Path(path) / "site")]
    tv = types.ModuleType("torchvision")
    tv.transforms, tv.models = types.SimpleNamespace(ToTensor=lambda: None), None
    sys.modules.setdefault("torchvision", tv)
    from DM_3.modules.video_flow_diffusion_multiGPU_v0_crema_plus_faceemb_ca_multi_test import DynamicNfUnet3D

    unet = DynamicNfUnet3D(dim=cfg.dim, cond_dim=cfg.cond_aud + cfg.cond_pose + cfg.cond_eye, cond_aud=cfg.cond_aud,
                           cond_pose=cfg.cond_pose, cond_eye=cfg.cond_eye, num_frames=frames, channels=cfg.channels,
                           out_grid_dim=2, out_conf_dim=1, dim_mults=cfg.dim_mults, use_hubert_audio_cond=True,
                           learn_null_cond=False, use_final_activation=False, use_deconv=True,
                           padding_mode="zeros", win_width=cfg.win_width)
    unet.update_num_frames(frames)
    return unet


def child(args) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from talkinghead.render.dawn.linear import LinearRunner
    from talkinghead.render.dawn.unet3d import Unet3D, Unet3DConfig

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.no_tf32:                          # cuDNN convolutions default to TF32 on Ampere and later
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    cfg = Unet3DConfig()
    h = args.size // 4
    torch.manual_seed(0)
    ours = Unet3D(cfg).eval()
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 3, args.frames, h, h, generator=g).to(dev)
    fea = torch.randn(1, cfg.latent_channels + cfg.face_channels, h, h, generator=g).to(dev)
    cond = torch.randn(1, args.frames, cfg.cond_aud + cfg.cond_pose + cfg.cond_eye, generator=g).to(dev)
    t = torch.tensor([500], device=dev)
    if args.impl == "compare":                # ours vs the official forward, same process
        net = _official_unet(args.official, cfg, args.frames)
        net.load_state_dict(ours.state_dict(), strict=False)
        rep = torch.cat([noisy, fea[:, :, None].expand(-1, -1, args.frames, -1, -1)], 1)
        with torch.no_grad():
            ref = net.to(dev).eval().forward_with_cond_scale(rep, t, cond=cond, cond_scale=1.0)
            del rep
            got = LinearRunner(ours.to(dev), chunk=args.chunk)(noisy, fea, t, cond)
        return {"max_abs_diff": float((got - ref).abs().max()), "ref_abs_mean": float(ref.abs().mean())}
    if args.impl == "ours":
        run = LinearRunner(ours.to(dev), chunk=args.chunk)
        call = lambda: run(noisy, fea, t, cond)
    elif args.impl == "sample":               # the whole released sampler: 20 DDIM steps
        from talkinghead.render.dawn.linear import sample_linear
        from talkinghead.render.dawn.unet3d import GaussianDiffusion

        diffusion = GaussianDiffusion(ours).to(dev)
        call = lambda: sample_linear(diffusion, fea, cond, args.chunk, torch.Generator().manual_seed(0))
    if args.impl == "official":
        net = _official_unet(args.official, cfg, args.frames) if args.official else ours
        if args.official:
            net.load_state_dict(ours.state_dict(), strict=False)
        net = net.to(dev).eval()
        rep = lambda: torch.cat([noisy, fea[:, :, None].expand(-1, -1, args.frames, -1, -1)], 1)
        call = ((lambda: net.forward_with_cond_scale(rep(), t, cond=cond, cond_scale=1.0)) if args.official
                else (lambda: net(rep(), t, cond)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = call()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    res = {"seconds": min(times), "seconds_all": times, "checksum": float(out.double().abs().mean())}
    if dev.type == "cuda":
        res["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        res["device_name"] = torch.cuda.get_device_name(0)
    else:
        with open("/proc/self/status") as f:
            res["peak_mib"] = next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
    return res


def measure(args, impl: str, size: int, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--size", str(size), "--frames", str(frames),
           "--device", args.device, "--threads", str(args.threads), "--chunk", str(args.chunk),
           "--repeats", str(args.repeats)] + (["--no-tf32"] if args.no_tf32 else []) + (["--official", args.official] if args.official else [])
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-1:] or ["?"]
        oom = "out of memory" in p.stderr.lower() or p.returncode in (-9, 137)
        return {"error": "out of memory" if oom else tail[0][:300], "wall": time.time() - t0}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--impls", nargs="+", default=["ours", "official"])
    ap.add_argument("--official", help="a DAWN-pytorch checkout (outside the repo, or an ignored folder)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=550)
    ap.add_argument("--no-tf32", action="store_true", help="full float32 convolutions on CUDA")
    ap.add_argument("--out", default=str(RESULTS))
    # child mode
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--impl", default="ours")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    if args.child:
        args.frames = args.frames[0]
        print(json.dumps(child(args)))
        return
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    load = os.getloadavg()
    for size in args.sizes:
        for frames in args.frames:
            for impl in args.impls:
                key = f"{args.device}/{size}/{frames}/{impl}" + ("/fp32" if args.no_tf32 else "")
                r = measure(args, impl, size, frames)
                r.update(load_before=round(load[0], 1), threads=args.threads, chunk=args.chunk,
                         official_code=bool(args.official) if impl == "official" else None)
                results[key] = r
                print(key, {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()
                            if k != "seconds_all"}, flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=1, sort_keys=True))
                load = os.getloadavg()


if __name__ == "__main__":
    main()
