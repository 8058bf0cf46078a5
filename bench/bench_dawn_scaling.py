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
On CPU a row also holds the call's process CPU time (`cpu_seconds`, `time.process_time`, which does
not depend on what else loads the machine), the child's peak RSS from `getrusage` and its RSS
before the call; `--spill auto` lets ours memory-map its whole-clip activations as `generate`
does (`linear.auto_spill_dir`), and the row records the spill folder, the bytes mapped and the
peak disk use seen. The official code is not started where its predicted peak (quadratic in the
frames, from the H100 table) exceeds `--max-gib` or the available memory: the row says
"does not fit" with the prediction; where it runs, its address space is capped at --max-gib + 1 GiB
so a wrong prediction ends in its own allocation error, not in the machine's out-of-memory killer.
A CPU row also holds the call's user and system seconds and page faults (`utime`, `stime`, `minflt`,
`majflt`); `--profile` adds ours' exclusive CPU seconds per stage and level, and `--progress FILE`
one line per finished stage (so a run stopped at `--timeout` records how far it got).

    .venv/bin/python bench/bench_dawn_scaling.py --device cpu --frames 8 16 32 --sizes 128
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/bench_dawn_scaling.py --device cpu --sizes 128 \
        --frames 200 1000 --spill auto --max-gib 18 --out bench/results/dawn_scaling_cpu.json
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


def _inputs(args, cfg, dev):
    """Random noisy latents, source features and conditions, as the GPU table used (seed 1)."""
    import torch

    h = args.size // 4
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 3, args.frames, h, h, generator=g).to(dev)                          # (B, 3, F, h, w)
    fea = torch.randn(1, cfg.latent_channels + cfg.face_channels, h, h, generator=g).to(dev)    # (B, Cz+16, h, w)
    cond = torch.randn(1, args.frames, cfg.cond_aud + cfg.cond_pose + cfg.cond_eye, generator=g).to(dev)
    return noisy, fea, cond, torch.tensor([500], device=dev)


class _DiskWatch:
    """Peak growth of the used space of the file system holding `folder`, polled every 0.2 s."""

    def __init__(self, folder: str) -> None:
        import shutil
        import threading

        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self.base = shutil.disk_usage(folder).used
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import shutil

        while not self._stop.wait(0.2):
            self.peak = max(self.peak, shutil.disk_usage(self.folder).used - self.base)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _ours(args, ours, dev, noisy, fea, t, cond, info: dict):
    """Our LinearRunner, optionally spilling its activations to memory-mapped files (counted)."""
    from talkinghead.render.dawn.linear import LinearRunner, auto_spill_dir

    spill = {"auto": lambda: auto_spill_dir(args.frames, noisy.shape[-1], dev), "none": lambda: None}.get(
        args.spill, lambda: args.spill)()
    run = LinearRunner(ours.to(dev), chunk=args.chunk, spill_dir=spill)
    info["spill_dir"] = spill
    if args.profile:
        info["_profile"] = _profile(run, args.progress)
    if spill is not None:
        empty, info["spill_bytes_mapped"] = run.store.empty, 0

        def counted(shape, like):
            out = empty(shape, like)
            info["spill_bytes_mapped"] += out.numel() * out.element_size()
            return out

        run.store.empty = counted
        info["_watch"] = _DiskWatch(spill)
    return lambda: run(noisy, fea, t, cond)


def _profile(run, progress: str | None = None) -> dict:
    """Wraps the runner's stages: exclusive process CPU seconds per stage and latent size
    ("temporal@32" = temporal attention at the 32 x 32 level), so a per-frame cost that grows with
    the clip shows where. `progress`: a file that gets one line per finished top-level stage (its
    number, name, the call's process CPU seconds so far, RSS MiB), so a run stopped before its end
    still shows how far it got against a shorter clip's log."""
    prof: dict = {}
    stack = [0.0]
    log = open(progress, "w", buffering=1) if progress else None
    count, c_start = [0], time.process_time()

    def wrap(name, fn):
        def timed(*a, **kw):
            src = a[0] if name in ("group_norm_", "init_conv") else a[1]
            key = f"{name}@{(src[0] if isinstance(src, tuple) else src).shape[-1]}"
            stack.append(0.0)
            t0 = time.process_time()
            out = fn(*a, **kw)
            total = time.process_time() - t0
            child = stack.pop()
            prof[key] = prof.get(key, 0.0) + total - child
            stack[-1] += total
            if log is not None and len(stack) == 1:
                count[0] += 1
                log.write(f"{count[0]} {key} {time.process_time() - c_start:.2f} {_rss_mib()[0]:.0f}\n")
            return out
        return timed

    for name in ("per_frame", "group_norm_", "temporal", "resnet", "init_conv"):
        setattr(run, name, wrap(name, getattr(run, name)))
    return prof


def _official(args, cfg, ours, dev, noisy, fea, t, cond):
    """The authors' forward (or our single-pass Unet3D.forward without --official), fed as their sampler."""
    net = _official_unet(args.official, cfg, args.frames) if args.official else ours
    if args.official:
        net.load_state_dict(ours.state_dict(), strict=False)
    net = net.to(dev).eval()
    rep = lambda: torch_cat_rep(noisy, fea, args.frames)
    if args.official:
        return lambda: net.forward_with_cond_scale(rep(), t, cond=cond, cond_scale=1.0)
    return lambda: net(rep(), t, cond)


def torch_cat_rep(noisy, fea, frames: int):
    import torch

    return torch.cat([noisy, fea[:, :, None].expand(-1, -1, frames, -1, -1)], 1)   # (B, 3+Cz+16, F, h, w)


def _compare(args, cfg, ours, dev, noisy, fea, t, cond) -> dict:
    """max |ours - official| of one evaluation, in one process."""
    import torch

    from talkinghead.render.dawn.linear import LinearRunner

    net = _official_unet(args.official, cfg, args.frames)
    net.load_state_dict(ours.state_dict(), strict=False)
    with torch.no_grad():
        ref = net.to(dev).eval().forward_with_cond_scale(torch_cat_rep(noisy, fea, args.frames), t, cond=cond,
                                                          cond_scale=1.0)
        got = LinearRunner(ours.to(dev), chunk=args.chunk)(noisy, fea, t, cond)
    return {"max_abs_diff": float((got - ref).abs().max()), "ref_abs_mean": float(ref.abs().mean())}


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    import resource

    with open("/proc/self/status") as f:
        now = next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) / 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> dict:
    """One measurement (runs in its own process)."""
    import torch

    from talkinghead.render.dawn.unet3d import Unet3D, Unet3DConfig

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.no_tf32:                          # cuDNN convolutions default to TF32 on Ampere and later
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    cfg = Unet3DConfig()
    torch.manual_seed(0)
    ours = Unet3D(cfg).eval()
    noisy, fea, cond, t = _inputs(args, cfg, dev)
    if args.impl == "compare":
        return _compare(args, cfg, ours, dev, noisy, fea, t, cond)
    info: dict = {}
    if args.impl == "ours":
        call = _ours(args, ours, dev, noisy, fea, t, cond, info)
    elif args.impl == "sample":               # the whole released sampler: 20 DDIM steps
        from talkinghead.render.dawn.linear import sample_linear
        from talkinghead.render.dawn.unet3d import GaussianDiffusion

        diffusion = GaussianDiffusion(ours).to(dev)
        call = lambda: sample_linear(diffusion, fea, cond, args.chunk, torch.Generator().manual_seed(0),
                                     spill_dir=None if args.spill == "none" else args.spill)
    else:
        call = _official(args, cfg, ours, dev, noisy, fea, t, cond)
    return _timed(args, dev, call, info)


def _timed(args, dev, call, info: dict) -> dict:
    """Runs call() `repeats` times: wall and process CPU seconds, peak memory, spill figures."""
    import resource

    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before, ru0 = _rss_mib()[0], resource.getrusage(resource.RUSAGE_SELF)
    times, cpu = [], []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = call()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    res = {"seconds": min(times), "seconds_all": times, "cpu_seconds": min(cpu), "cpu_seconds_all": cpu,
           "checksum": float(out.double().abs().mean())}
    if "_profile" in info:
        info["profile_cpu_seconds"] = {k: round(v, 2) for k, v in sorted(info.pop("_profile").items())}
    if dev.type == "cpu":                     # the calls' user / system time and page faults
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res.update({k: getattr(ru, f"ru_{k}") - getattr(ru0, f"ru_{k}") for k in ("utime", "stime", "minflt", "majflt")})
    if "_watch" in info:
        info["spill_disk_peak_bytes"] = info.pop("_watch").stop()
    res.update(info)
    if dev.type == "cuda":
        res["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        res["device_name"] = torch.cuda.get_device_name(0)
    else:
        res["rss_before_mib"] = rss_before
        res["peak_mib"] = _rss_mib()[1]
    return res


# The official forward's peak on the H100 (bench/results/dawn_scaling.json, 128 px): 4,302 MiB at 200
# frames, 71,404 MiB at 1,000: its T x T temporal attention scores grow with T^2 and with the latent
# positions (4x at 256).
_QUAD_MIB_PER_FRAME2_128 = (71403.9 - 4302.5) / (1000 ** 2 - 200 ** 2)
_GPU_PEAK_200_MIB = {128: 4302.5, 256: 17104.4}


def predicted_official_gib(size: int, frames: int, cpu_peaks_200: dict[int, float] | None = None) -> float:
    """The official forward's predicted peak in GiB: its 200-frame peak plus the quadratic term
    fitted on the H100 at 128 px, scaled by the latent positions. The 200-frame peak is the one
    measured here at this size if there is one, else the H100's scaled by the ratio measured here
    at another size (CPU peak RSS / H100 allocation), else the H100's."""
    cpu = cpu_peaks_200 or {}
    gpu = lambda s: _GPU_PEAK_200_MIB.get(s, _GPU_PEAK_200_MIB[256] * (s / 256) ** 2)
    if size in cpu:
        base = cpu[size]
    elif cpu:
        s0 = min(cpu)
        base = gpu(size) * cpu[s0] / gpu(s0)
    else:
        base = gpu(size)
    quad = _QUAD_MIB_PER_FRAME2_128 * (size / 128) ** 2 * (frames ** 2 - 200 ** 2)
    return (base + quad) / 1024


def _mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("MemAvailable")) / 2 ** 20


def _does_not_fit(args, results: dict, size: int, frames: int) -> dict | None:
    """A "does not fit" row for the official code on CPU where its predicted peak exceeds the limit."""
    if args.device != "cpu" or args.max_gib is None:
        return None
    peaks = {int(k.split("/")[1]): r["peak_mib"] for k, r in results.items()
             if k.startswith("cpu/") and k.endswith("/200/official") and "peak_mib" in r}
    gib = predicted_official_gib(size, frames, peaks)
    limit = min(args.max_gib, _mem_available_gib())
    if gib <= limit:
        return None
    return {"error": f"does not fit (predicted {gib:.1f} GiB > {limit:.1f} GiB allowed); not run",
            "predicted_peak_gib": round(gib, 2)}


def _limit(args, impl: str):
    """CPU, official code, --max-gib: the child's address space is capped at max_gib + 1 GiB, so a
    wrong prediction ends in its own allocation error, not in the machine's out-of-memory killer."""
    if args.device != "cpu" or args.max_gib is None or impl != "official":
        return None
    import resource

    cap = int((args.max_gib + 1) * 2 ** 30)
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def measure(args, impl: str, size: int, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--size", str(size), "--frames", str(frames),
           "--device", args.device, "--threads", str(args.threads), "--chunk", str(args.chunk),
           "--repeats", str(args.repeats), "--spill", args.spill] + (["--no-tf32"] if args.no_tf32 else []) + (
           ["--profile"] if args.profile else []) + (["--progress", args.progress] if args.progress else []) + (
           ["--official", args.official] if args.official else [])
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=_limit(args, impl))
    except subprocess.TimeoutExpired:
        row = {"error": f"not finished within {args.timeout:.0f} s wall; not run to the end", "wall": time.time() - t0}
        if args.progress and Path(args.progress).exists():   # how far it got: stage, CPU s, RSS MiB
            last = (Path(args.progress).read_text().split("\n")[-2:-1] or [""])[0].split()
            if len(last) == 4:
                row.update(stopped_at_stage=int(last[0]), stopped_at_cpu_seconds=float(last[2]),
                           stopped_at_rss_mib=float(last[3]))
        return row
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-1:] or ["?"]
        err = p.stderr.lower()
        oom = any(m in err for m in ("out of memory", "can't allocate memory", "memoryerror")) or p.returncode in (-9, 137)
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
    ap.add_argument("--spill", default="none", help="ours: 'auto' (as generate), 'none' (RAM) or a folder")
    ap.add_argument("--profile", action="store_true", help="ours: exclusive CPU seconds per stage and level")
    ap.add_argument("--progress", help="with --profile: a file for one line per finished stage")
    ap.add_argument("--max-gib", type=float, help="CPU: skip the official code where its predicted peak is above this")
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
                avail = _mem_available_gib()
                r = (impl == "official" and _does_not_fit(args, results, size, frames)) or measure(args, impl, size, frames)
                r.update(load_before=round(load[0], 1), load_after=round(os.getloadavg()[0], 1),
                         mem_available_gib_before=round(avail, 1), threads=args.threads, chunk=args.chunk,
                         official_code=bool(args.official) if impl == "official" else None,
                         thp=os.environ.get("THP_MEM_ALLOC_ENABLE") == "1")
                results[key] = r
                print(key, {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()
                            if not k.endswith("_all")}, flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=1, sort_keys=True))
                load = os.getloadavg()


if __name__ == "__main__":
    main()
