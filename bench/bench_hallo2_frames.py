"""Benchmark (not a test): do Hallo2's motion frames matter, and does conditioning on them drift?

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.2; issue #19 part 1) conditions each clip on
the last generated frames of the clip before, corrupted in training by patch drop + Gaussian
noise, and claims temporal coherence without accumulated errors. bench_drift.py showed no drift
with a UNet that barely read its motion frames (with vs without them: 0.2 grey levels). Here:

* Two Hallo2 UNets (`configs/hallo2/unet.cpu.json`, 64 px, the same frozen VAE, data, seed,
  CPU budget and options, one torch thread): **A** with the corruption (patch drop 0.25 + noise
  std 0.5) and **B** without it. Data: bench_ldm's TWO talking portraits (`--data`, default
  outputs/ldm_check/data; its VAE, trained on both, `--vae`): trained on the bundled portrait
  alone, the UNet memorises the face and ignores reference and motion frames alike (docs).
  Both with `ref_drop` (the reference latent zeroed in that share of samples: classifier-free
  dropout of the reference, so the motion frames must carry appearance and the UNet learns to
  read them) and `motion_drop` (that share of batches
  without motion frames, so each UNet also renders without them: the baseline).
* Renders of the bundled portrait driven by FD2Talk's Motion of real speech (bench_drift's), 4
  DDIM steps, same noise: 2 minutes each of A (true motion frames), A without motion frames (the
  same renderer's baseline) and B (true motion frames); `--short` seconds of A with zeroed and
  with shuffled motion frames (`Hallo2Renderer.ablation`). `--reference-scale 0` (default; the
  recorded run): the runs with motion frames render from them and the Motion alone after the
  first clip (`Hallo2Config.reference_scale`), so appearance is carried clip to clip.
* Per output crop (64 px, the renderer's own): bench_drift's judge (dlib distance to the
  portrait on every 10th frame, mean face Lab on every frame; first vs last minute, the bounds of
  bench_drift), and temporal coherence: mean |frame t - frame t-1| (flicker) and mean
  |second difference| (jitter: change that reverses at once) in the static region (outside the
  portrait's face oval dilated by 6 px) and at the mouth (its lip mask dilated by 2 px); the
  frame-to-frame change at clip boundaries over that within clips (a seam); the mouth's
  brightness against the driving jawOpen (r); the mean |difference| of each variant to A.

    python bench/bench_hallo2_frames.py [--cpu-minutes 7] [--minutes 2] [--short 30] [--reuse A B]
        [--reference-scale 0] [--runs A A_none B A_zero A_shuffle] [--data D --vae V --work W]
(recorded: ~25 CPU min, 2 x 7 training + 10.6 rendering; the VAE was #18's, copied.)
Results: bench/results/hallo2_frames.json, docs/hallo2_frames.png (frames), docs/hallo2_frames_drift.png.
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
import bench_drift  # noqa: E402

FPS = bench_drift.FPS
VARIANTS = {"A": {"motion_drop": 0.3, "ref_drop": 0.5},
            "B": {"motion_drop": 0.3, "ref_drop": 0.5, "patch_drop": 0.0, "noise_std": 0.0}}


def train_variant(work: Path, name: str, data: str, vae: str, cpu_minutes: float, steps: int) -> dict:
    """One UNet of `VARIANTS[name]`, bounded by process CPU time (and `steps`, the LR schedule)."""
    from talkinghead.training.hallo2_tasks import train_hallo2

    c = time.process_time()
    r = train_hallo2(ROOT / "configs/hallo2/unet.cpu.json", data, vae, work / name / "unet", steps=steps,
                     max_minutes=0, progress=False, max_cpu_minutes=cpu_minutes, **VARIANTS[name])
    link = work / name / "vae"
    if not link.exists():
        link.symlink_to(Path(vae).resolve(), target_is_directory=True)
    return {"options": VARIANTS[name], "steps": r.step, "cpu_minutes": round((time.process_time() - c) / 60, 2),
            "load_average_end": os.getloadavg(),
            "val_loss": [(h["step"], round(h["val_loss"], 4)) for h in r.history if "val_loss" in h]}


class Coherence:
    """Streaming flicker / jitter / seam / mouth figures of a run of 64 px crops."""

    def __init__(self, masks: np.ndarray, clip_frames: int, jaw: np.ndarray) -> None:
        import cv2

        from talkinghead.data.prepare import FACE_BIT, LIP_BIT

        k = lambda r: np.ones((2 * r + 1, 2 * r + 1), np.uint8)  # noqa: E731
        face = cv2.dilate(((masks & FACE_BIT) > 0).astype(np.uint8), k(6)) > 0
        self.regions = {"static": ~face, "mouth": cv2.dilate(((masks & LIP_BIT) > 0).astype(np.uint8), k(2)) > 0}
        self.clip, self.jaw = clip_frames, jaw
        self.prev: list[np.ndarray] = []
        self.sums: dict[str, list[float]] = {}
        self.mouth: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        f = frame.astype(np.float32)
        t = len(self.mouth)
        self.mouth.append(float(f[self.regions["mouth"]].mean()))
        if self.prev:
            d1 = np.abs(f - self.prev[-1])
            for name, m in self.regions.items():
                self.sums.setdefault(f"flicker_{name}", []).append(float(d1[m].mean()))
            self.sums.setdefault("seam" if t % self.clip == 0 else "within", []).append(float(d1.mean()))
        if len(self.prev) == 2:
            d2 = np.abs(f - 2 * self.prev[-1] + self.prev[-2])
            for name, m in self.regions.items():
                self.sums.setdefault(f"jitter_{name}", []).append(float(d2[m].mean()))
        self.prev = (self.prev + [f])[-2:]

    def figures(self) -> dict:
        out = {k: round(float(np.mean(v)), 3) for k, v in self.sums.items() if k not in ("seam", "within")}
        out["seam_ratio"] = round(float(np.mean(self.sums["seam"]) / np.mean(self.sums["within"])), 3)
        n = len(self.mouth)
        out["r_mouth_brightness_jawOpen"] = round(float(np.corrcoef(self.mouth, self.jaw[:n])[0, 1]), 3)
        return out


def render(ckpt: Path, motion, frames: int, steps: int, use_frames: bool, ablation: str | None,
           keep: set[int], held: int, judge_every: int,
           ref_scale: float = 1.0) -> tuple[dict, dict[int, np.ndarray], np.ndarray]:
    """One run, judged as it comes: (figures, the frames at `keep`'s indices, the first `held` frames)."""
    import torch

    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.image import read_image
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer
    from talkinghead.types import BS

    r = Hallo2Renderer(ckpt, steps=steps, mode="crop", crop_size=64)
    r.model.config.use_motion_frames, r.ablation = use_frames, ablation
    r.model.config.reference_scale = ref_scale
    image = read_image(bench_drift.PORTRAIT)
    with FaceLandmarker() as lm:
        src = r.prepare(image, lm.detect(image)[0], lm)
    judge = bench_drift.Judge(r, src)
    coh = Coherence(src.masks, r.model.config.clip_frames, motion.blendshapes[:frames, BS["jawOpen"]])
    dist, lab, kept, first = [], [], {}, []
    c0 = time.process_time()
    with torch.no_grad():
        for z in r.latents(src, motion[:frames], None, 0):
            for crop in r.decode(src, z):
                i = len(lab)
                d, c = judge(crop, i % judge_every == 0)
                dist.append(d)
                lab.append(c)
                coh.add(crop)
                if i in keep:
                    kept[i] = crop
                if i < held:
                    first.append(crop)
    cpu = time.process_time() - c0
    fig = {"frames": len(lab), "cpu_s_per_frame": round(cpu / len(lab), 4), **coh.figures()}
    if len(lab) >= 2 * 60 * FPS:
        fig.update(bench_drift._figures(np.asarray(dist), np.asarray(lab), judge.ref_lab))
    else:
        fig["identity_mean"] = round(float(np.nanmean(dist)), 4)
    crop = ((src.crop[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    kept[-1] = crop
    return fig, kept, np.stack(first)


RUNS = {  # name: (variant, use motion frames, ablation, long)
    "A": ("A", True, None, True), "A_none": ("A", False, None, True), "B": ("B", True, None, True),
    "A_zero": ("A", True, "zero", False), "A_shuffle": ("A", True, "shuffle", False),
    "B_none": ("B", False, None, False),
}


def strip(kept: dict[str, dict[int, np.ndarray]], names: list[str], times: list[float], path: Path) -> None:
    """A row per run (e.g. A / A without motion frames / B): the portrait crop, then frames at `times` (s)."""
    import cv2

    rows = []
    for name in names:
        k = kept[name]
        rows.append(np.concatenate([k[-1]] + [k[int(t * FPS)] for t in times], 1))
    big = cv2.resize(np.concatenate(rows, 0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-minutes", type=float, default=7.0, help="each UNet's training, process CPU minutes")
    ap.add_argument("--train-steps", type=int, default=900, help="LR schedule length (and step cap)")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--short", type=float, default=30.0, help="seconds of the ablation runs")
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps")
    ap.add_argument("--judge-every", type=int, default=10)
    ap.add_argument("--data", default=str(ROOT / "outputs/ldm_check/data"), help="prepared clips of 2+ people")
    ap.add_argument("--vae", default=str(ROOT / "outputs/ldm_check/ckpt/vae"), help="a VAE trained on them")
    ap.add_argument("--work", default=str(ROOT / "outputs/hallo2_frames/two"))
    ap.add_argument("--reuse", nargs="*", default=[], help="variants already trained in --work")
    ap.add_argument("--runs", nargs="*", default=["A", "A_none", "B", "A_zero", "A_shuffle"], choices=list(RUNS))
    ap.add_argument("--reference-scale", type=float, default=0.0,
                    help="Hallo2Config.reference_scale of the runs with motion frames (named NAME@sS unless 1)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/hallo2_frames.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work, out = Path(a.work), Path(a.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.setdefault("training", {})
    result["setup"] = {"minutes": a.minutes, "short_s": a.short, "ddim_steps": a.steps, "torch_threads": 1,
                       "data": a.data, "vae": a.vae, "load_average_start": os.getloadavg()}
    for v in VARIANTS:
        if v not in a.reuse and any(RUNS[r][0] == v for r in a.runs):
            result["training"][v] = train_variant(work, v, a.data, a.vae, a.cpu_minutes, a.train_steps)
            print(v, json.dumps(result["training"][v]), flush=True)
            out.write_text(json.dumps(result, indent=1))
    n_long, n_short = int(a.minutes * 60 * FPS), int(a.short * FPS)
    motion = bench_drift._motion(n_long)
    times = [5, 30, 55, n_long / FPS - 55, n_long / FPS - 30, n_long / FPS - 5]
    keep = {int(t * FPS) for t in times}
    result.setdefault("runs", {})
    held, kept = {}, {}
    for run in a.runs:
        v, use, abl, long = RUNS[run]
        name = run if a.reference_scale == 1 or not use else f"{run}@s{a.reference_scale:g}"
        fig, kept[name], held[name] = render(work / v, motion, n_long if long else n_short, a.steps, use, abl,
                                             keep, n_short, a.judge_every, a.reference_scale)
        result["runs"][name] = fig
        print(name, json.dumps({k: x for k, x in fig.items() if "per_" not in k}), flush=True)
        out.write_text(json.dumps(result, indent=1))
    base = next(iter(held))
    result[f"abs_diff_to_{base}_first_{a.short:g}s"] = {
        k: round(float(np.abs(x[:n_short].astype(np.float32) - held[base][:n_short]).mean()), 3)
        for k, x in held.items() if k != base}
    longs = [k for k in kept if len(held[k]) and result["runs"][k].get("identity_drift") is not None]
    for name in longs:
        if name != "A_none" and "A_none" in result["runs"]:
            result.setdefault("verdict", {})[name] = bench_drift.verdict(result["runs"][name], result["runs"]["A_none"])
    result["setup"]["load_average_end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=1))
    if len(longs) > 1:
        tag = "" if a.reference_scale == 1 else f"_s{a.reference_scale:g}"
        strip(kept, longs, times, ROOT / f"docs/hallo2_frames{tag}.png")
        bench_drift.figure({n: result["runs"][n] for n in longs}, ROOT / f"docs/hallo2_frames_drift{tag}.png")
    print(json.dumps(result.get("verdict")), json.dumps(result[f"abs_diff_to_{base}_first_{a.short:g}s"]))


if __name__ == "__main__":
    main()
