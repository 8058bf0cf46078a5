"""Benchmark (not a test): drift over a long generation with and without Hallo2's motion frames.

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.2; issue #19 part 1). One Hallo2 UNet
(`configs/hallo2/unet.cpu.json`, 64 px, our small VAE frozen) trains on prepared talking clips of
the bundled portrait with its motion frames (the previous clip's last 2 frames, corrupted by patch
drop + Gaussian noise) in half of the batches and without them in the other half
(`motion_drop=0.5`), so the SAME weights render both ways: Hallo2 (clip after clip on its own last
frames) and the baseline (the same renderer without motion frames: each frame from the portrait
and its Motion only, so it cannot accumulate its own errors). Each renders `--minutes` of the
bundled portrait driven by FD2Talk's Motion of real speech (ARCTIC a0007 + the ALSA clips,
ping-ponged), 4 DDIM steps. Judged per frame of the output crop (64 px, upscaled to 256): the dlib
128-d identity distance to the portrait's own crop at the portrait's face box (every
`--judge-every`-th frame, default 10: dlib costs ~0.1 CPU s a frame), and the mean CIE Lab colour
of that box (every frame).

Bounds, set before the first 2-minute run (reasons in docs/hallo2.md, "Drift"):
* identity: Hallo2's mean dlib distance in the last minute exceeds the first minute's by at most
  IDENTITY_DRIFT_MAX = 0.03 (5% of dlib's 0.6 same-person threshold), and by at most
  IDENTITY_VS_BASELINE = 0.02 more than the baseline's does;
* colour: the CIE76 distance between Hallo2's mean face Lab in the first and in the last minute is
  at most LAB_DRIFT_MAX = 2.3 (one just-noticeable difference), and at most LAB_VS_BASELINE = 1.0
  more than the baseline's.

CPU budget (one torch thread, bounded by process CPU time, not wall time): VAE 4 min + UNet 7 min
of training (profiled: ~0.9 CPU s per VAE step, ~0.5 per UNet step, batch 8), then ~3 min per
2-minute rendering + judging (~0.06 CPU s a frame); about 20 CPU minutes in all. (The recorded
run: the VAE stopped at its step-250 save, ~4 CPU min, passed as --vae; the machine's load
left ~25% of a core to it, so the wall time, not the CPU budget, set these sizes.)

    python bench/bench_drift.py [--minutes 2] [--vae-cpu-minutes 4] [--unet-cpu-minutes 7]
        [--steps 4] [--judge-every 10] [--device cpu|cuda] [--data PREPARED] [--vae VAE_CKPT] [--reuse]
Results: bench/results/drift.json, docs/hallo2_drift.png (--figure). Without --data it reuses
bench_ldm.py's prepared clips of the bundled portrait (outputs/ldm_check/prep/p0) or makes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PORTRAIT = ROOT / "talkinghead" / "assets" / "sample" / "portrait.jpg"
FPS = 25.0


def _data(work: Path, given: str | None) -> Path:
    """A prepared dataset of the bundled portrait talking (bench_ldm's check data)."""
    if given:
        return Path(given)
    import bench_ldm

    p0 = bench_ldm.CHECK / "prep" / "p0"
    if not (p0 / "manifest.json").exists():
        bench_ldm.check_data(20, 2, "train0")
        bench_ldm.check_data(20, 2, "prepare0")
    return p0


def _vae(work: Path, data: Path, cpu_minutes: float) -> tuple[str, dict]:
    """Our small VAE (configs/difftalk/vae.cpu.json, L1 + KL: no LPIPS, for CPU time), trained
    for `cpu_minutes` of process CPU time."""
    from talkinghead.training.ldm_tasks import train_ldm

    raw = json.loads((ROOT / "configs/difftalk/vae.cpu.json").read_text())
    raw["model"]["perceptual_weight"] = 0.0
    raw["train"].update(steps=100000, max_minutes=0, max_cpu_minutes=cpu_minutes, eval_every=250, save_every=250)
    work.mkdir(parents=True, exist_ok=True)
    (work / "vae.json").write_text(json.dumps(raw, indent=1))
    c = time.process_time()
    r = train_ldm("difftalk", "vae", work / "vae.json", str(data), work / "vae", progress=False)
    return str(work / "vae"), {"steps": r.step, "cpu_minutes": round((time.process_time() - c) / 60, 2),
                               "val_loss": [(h["step"], round(h["val_loss"], 4)) for h in r.history
                                            if "val_loss" in h]}


def _train(work: Path, data: Path, vae: str | None, config: Path, a: argparse.Namespace) -> dict:
    """The VAE (unless given), then the one Hallo2 UNet (motion frames in half the batches)."""
    from talkinghead.training.hallo2_tasks import train_hallo2

    out = {}
    if not vae:
        vae, out["vae"] = _vae(work, data, a.vae_cpu_minutes)
        print("vae", json.dumps(out["vae"]), flush=True)
    else:                                               # a given VAE: its own record
        saved = json.loads((Path(vae) / "config.json").read_text())
        log = [json.loads(x) for x in (Path(vae) / "log.jsonl").read_text().splitlines()]
        out["vae"] = {"given": str(vae), "steps": saved.get("step"),
                      "max_cpu_minutes": saved.get("train", {}).get("max_cpu_minutes"),
                      "val_loss": [(h["step"], round(h["val_loss"], 4)) for h in log if "val_loss" in h]}
    c = time.process_time()
    r = train_hallo2(config, str(data), vae, work / "hallo2" / "unet", max_minutes=0, progress=False,
                     max_cpu_minutes=a.unet_cpu_minutes, motion_drop=0.5)
    link = work / "hallo2" / "vae"
    if not link.exists():
        link.symlink_to(Path(vae).resolve(), target_is_directory=True)
    out["unet"] = {"steps": r.step, "cpu_minutes": round((time.process_time() - c) / 60, 2), "motion_drop": 0.5,
                   "val_loss": [(h["step"], round(h["val_loss"], 4)) for h in r.history if "val_loss" in h]}
    print("unet", json.dumps(out["unet"]), flush=True)
    return out


def _motion(frames: int):
    """FD2Talk's Motion of the real speech, ping-ponged to `frames` frames."""
    from talkinghead.evaluation.testset import real_speech
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    m = GeneratePipeline(GenerateConfig()).motion(real_speech().clip)
    cycle = np.concatenate([np.arange(len(m)), np.arange(len(m) - 2, 0, -1)])
    return m[np.resize(cycle, frames)]


class Judge:
    """Identity distance and face-box Lab colour of crops, against the portrait's crop."""

    def __init__(self, renderer, src) -> None:
        import cv2

        from talkinghead.evaluation.identity import DlibIdentity
        from talkinghead.face.landmarker import FaceLandmarker
        from talkinghead.io.image import read_image

        self.cv2, self.dlib = cv2, DlibIdentity()
        with FaceLandmarker() as lm:
            face = lm.detect(read_image(PORTRAIT))[0]
        x0, y0, x1, y1 = src.box
        k = 256 / (x1 - x0)
        b = np.asarray(face.bbox, np.float64)
        self.box = type("Box", (), {"bbox": tuple(((b - [x0, y0, x0, y0]) * k).round().astype(int))})()
        crop = ((src.crop[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        self.ref_embed, self.ref_lab = self._measure(crop)

    def _measure(self, crop: np.ndarray, identity: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        big = self.cv2.resize(crop, (256, 256), interpolation=self.cv2.INTER_CUBIC)
        x0, y0, x1, y1 = (int(np.clip(v, 0, 255)) for v in self.box.bbox)
        lab = self.cv2.cvtColor(big[y0:y1, x0:x1].astype(np.float32) / 255, self.cv2.COLOR_RGB2LAB)
        return (self.dlib.embed(big, self.box) if identity else None), lab.reshape(-1, 3).mean(0)

    def __call__(self, crop: np.ndarray, identity: bool = True) -> tuple[float, np.ndarray]:
        """(dlib distance to the portrait, NaN unless `identity`; the face box's mean Lab)."""
        e, lab = self._measure(crop, identity)
        return (self.dlib.distance(e, self.ref_embed) if identity else float("nan")), lab


IDENTITY_DRIFT_MAX = 0.03     # dlib distance, last minute - first minute (5% of the 0.6 threshold)
IDENTITY_VS_BASELINE = 0.02   # Hallo2's rise minus the baseline's
LAB_DRIFT_MAX = 2.3           # CIE76 between the first and the last minute's mean face Lab (1 JND)
LAB_VS_BASELINE = 1.0         # Hallo2's minus the baseline's


def _render(ckpt: Path, frames: int, steps: int, device: str, motion, use_motion_frames: bool,
            judge_every: int) -> dict:
    """Render with one checkpoint, judging each crop as it comes (nothing held)."""
    import torch

    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.image import read_image
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer

    r = Hallo2Renderer(ckpt, steps=steps, mode="crop", crop_size=64).to(device)
    r.model.config.use_motion_frames = use_motion_frames
    image = read_image(PORTRAIT)
    with FaceLandmarker() as lm:
        src = r.prepare(image, lm.detect(image)[0], lm)
    judge = Judge(r, src)
    dist, lab = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for z in r.latents(src, motion, None, 0):
            for crop in r.decode(src, z):
                d, c = judge(crop, len(lab) % judge_every == 0)
                dist.append(d)
                lab.append(c)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"frames": len(lab), "render_s": round(secs, 1), "cpu_s_per_frame": round(cpu / len(lab), 4),
            **_figures(np.asarray(dist), np.asarray(lab), judge.ref_lab)}


def _figures(dist: np.ndarray, lab: np.ndarray, ref_lab: np.ndarray) -> dict:
    """First vs last minute (half the clip each when shorter than 2 minutes) and 10 s curves."""
    n = len(lab)
    w = min(int(60 * FPS), n // 2)
    first, last = slice(0, w), slice(n - w, n)
    mean_d = lambda s: float(np.nanmean(dist[s]))  # noqa: E731
    to_ref = lambda s: float(np.linalg.norm(lab[s].mean(0) - ref_lab))  # noqa: E731
    tens = [slice(i, min(n, i + int(10 * FPS))) for i in range(0, n, int(10 * FPS))]
    return {"identity_first_minute": round(mean_d(first), 4), "identity_last_minute": round(mean_d(last), 4),
            "identity_drift": round(mean_d(last) - mean_d(first), 4),
            "lab_first_minute": [round(float(x), 2) for x in lab[first].mean(0)],
            "lab_last_minute": [round(float(x), 2) for x in lab[last].mean(0)],
            "lab_drift": round(float(np.linalg.norm(lab[last].mean(0) - lab[first].mean(0))), 3),
            "lab_shift_first_minute": round(to_ref(first), 3), "lab_shift_last_minute": round(to_ref(last), 3),
            "identity_per_10s": [round(mean_d(s), 4) for s in tens],
            "lab_shift_per_10s": [round(to_ref(s), 3) for s in tens],
            "identity_per_minute": [round(mean_d(slice(i, i + int(60 * FPS))), 4) for i in range(0, n, int(60 * FPS))],
            "lab_shift_per_minute": [round(to_ref(slice(i, i + int(60 * FPS))), 3) for i in range(0, n, int(60 * FPS))]}


def look(ckpt: Path, steps: int, motion, strip: Path | None) -> dict:
    """The first 10 s both ways, held: do the frames move with the Motion (frame-to-frame change,
    the mouth region's brightness against jawOpen), and how much do the motion frames change the
    output (Hallo2 vs baseline, same noise)? A strip of frames (portrait crop, then every 1.6 s)."""
    import cv2
    import torch

    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.image import read_image
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer
    from talkinghead.types import BS

    out, n = {}, int(10 * FPS)
    image = read_image(PORTRAIT)
    for name, use in (("hallo2", True), ("baseline", False)):
        r = Hallo2Renderer(ckpt, steps=steps, mode="crop", crop_size=64)
        r.model.config.use_motion_frames = use
        with FaceLandmarker() as lm:
            src = r.prepare(image, lm.detect(image)[0], lm)
        with torch.no_grad():
            out[name] = np.stack([c for z in r.latents(src, motion[:n], None, 0) for c in r.decode(src, z)])
    ref = ((src.crop[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)   # (64, 64, 3)
    jaw = motion.blendshapes[:n, BS["jawOpen"]]
    res = {}
    for k, v in out.items():
        f = v.astype(np.float32)
        mouth = f[:, 40:56, 22:42].mean((1, 2, 3))          # lower middle of the 64 px crop
        res[k] = {"frame_to_frame_abs_diff": round(float(np.abs(np.diff(f, axis=0)).mean()), 3),
                  "mouth_brightness_std": round(float(mouth.std()), 3),
                  "corr_mouth_brightness_jawOpen": round(float(np.corrcoef(mouth, jaw)[0, 1]), 3),
                  "abs_diff_to_portrait_crop": round(float(np.abs(f - ref).mean()), 3)}
    gap = np.abs(out["hallo2"].astype(np.float32) - out["baseline"]).mean()
    res["hallo2_vs_baseline_abs_diff"] = round(float(gap), 3)
    if strip:
        idx = range(0, n, 40)
        rows = [np.concatenate([ref, *(out[k][i] for i in idx)], 1) for k in ("hallo2", "baseline")]
        cv2.imwrite(str(strip), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    return res


def verdict(h: dict, b: dict) -> dict:
    """The bounds (set before the run) applied to Hallo2's and the baseline's figures."""
    checks = {
        "identity_drift <= %.2f" % IDENTITY_DRIFT_MAX: h["identity_drift"] <= IDENTITY_DRIFT_MAX,
        "identity_drift - baseline's <= %.2f" % IDENTITY_VS_BASELINE:
            h["identity_drift"] - b["identity_drift"] <= IDENTITY_VS_BASELINE,
        "lab_drift <= %.1f" % LAB_DRIFT_MAX: h["lab_drift"] <= LAB_DRIFT_MAX,
        "lab_drift - baseline's <= %.1f" % LAB_VS_BASELINE: h["lab_drift"] - b["lab_drift"] <= LAB_VS_BASELINE,
    }
    return {"checks": checks, "met": all(checks.values())}


def figure(runs: dict[str, dict], path: Path) -> None:
    """Per-10 s identity distance and Lab shift to the portrait, one line per named run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for (name, r), style in zip(runs.items(), ("-o", "--s", ":^", "-.v")):
        x = (np.arange(len(r["identity_per_10s"])) + 0.5) / 6
        ax[0].plot(x, r["identity_per_10s"], style, ms=3, label=name)
        ax[1].plot(x, r["lab_shift_per_10s"], style, ms=3, label=name)
    ax[0].set(xlabel="minute", ylabel="dlib distance to the portrait", title="identity (10 s means)")
    ax[1].set(xlabel="minute", ylabel="mean face Lab, CIE76 to the portrait", title="colour (10 s means)")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the generated video")
    ap.add_argument("--vae-cpu-minutes", type=float, default=4.0, help="VAE training, process CPU minutes")
    ap.add_argument("--unet-cpu-minutes", type=float, default=7.0, help="UNet training, process CPU minutes")
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps per frame")
    ap.add_argument("--judge-every", type=int, default=10, help="dlib on every n-th frame (Lab on all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", help="a prepared dataset (talkinghead prepare) of talking clips")
    ap.add_argument("--vae", help="a trained VAE checkpoint (skips its training)")
    ap.add_argument("--config", default=str(ROOT / "configs/hallo2/unet.cpu.json"))
    ap.add_argument("--work", default=str(ROOT / "outputs" / "drift_check"))
    ap.add_argument("--reuse", action="store_true", help="judge the checkpoint already in --work")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "drift.json"))
    ap.add_argument("--figure", default=str(ROOT / "docs" / "hallo2_drift.png"))
    ap.add_argument("--look-only", action="store_true", help="add the 10 s look to an existing --out")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    strip = Path(a.figure).with_name("hallo2_drift_frames.png") if a.figure else None
    if a.look_only:
        result = json.loads(Path(a.out).read_text())
        result["look"] = look(Path(a.work) / "hallo2", a.steps, _motion(int(10 * FPS)), strip)
        Path(a.out).write_text(json.dumps(result, indent=1))
        print(json.dumps(result["look"]))
        return
    work, c0 = Path(a.work), time.process_time()
    data = _data(work, a.data)
    training = {} if a.reuse else _train(work, data, a.vae, Path(a.config), a)
    motion = _motion(int(a.minutes * 60 * FPS))
    result = {"setup": {"minutes": a.minutes, "steps": a.steps, "judge_every": a.judge_every, "device": a.device,
                        "data": str(data), "config": a.config, "torch_threads": 1,
                        "load_average_start": os.getloadavg()},
              "bounds": {"identity_drift_max": IDENTITY_DRIFT_MAX, "identity_vs_baseline": IDENTITY_VS_BASELINE,
                         "lab_drift_max": LAB_DRIFT_MAX, "lab_vs_baseline": LAB_VS_BASELINE},
              "training": training}
    for name, use in (("hallo2", True), ("baseline", False)):
        result[name] = _render(work / "hallo2", len(motion), a.steps, a.device, motion, use, a.judge_every)
        print(name, json.dumps({k: v for k, v in result[name].items() if "per_" not in k}), flush=True)
    result["verdict"] = verdict(result["hallo2"], result["baseline"])
    result["look"] = look(work / "hallo2", a.steps, motion, strip)
    result["setup"]["load_average_end"] = os.getloadavg()
    result["cpu_minutes"] = round((time.process_time() - c0) / 60, 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    if a.figure:
        figure({n: result[n] for n in ("hallo2", "baseline")}, Path(a.figure))
    print(json.dumps({k: result[k] for k in ("verdict", "cpu_minutes")}))


if __name__ == "__main__":
    main()
