"""Benchmark (not a test): drift over a long generation with and without Hallo2's motion frames.

Hallo2 (`../shared/papers/hallo2_appendix.txt`, A.2; issue #19 part 1). Two UNets of the same
size train for the same time on the same prepared talking clips (our VAE, frozen): Hallo2's,
conditioned on the previous clip's last frames (corrupted by patch drop + Gaussian noise in
training), and the baseline, FD2Talk's conditions only (the same class with
`use_motion_frames=False`). Each then renders `--minutes` of the bundled portrait driven by
FD2Talk's Motion of real speech (ARCTIC a0007 + the ALSA clips, repeated back and forth), clip
after clip. Per frame of the output crop: the dlib 128-d identity distance to the portrait's own
crop (upscaled to 256 px, the portrait's face box), and the mean CIE Lab colour of the face box.
Reported: the first and the last minute's mean distance, and the Lab shift (Euclidean distance of
mean Lab to the portrait's) of the first vs the last minute, for both.

    python bench/bench_drift.py [--minutes 2] [--train-minutes 6] [--steps 10] [--device cpu|cuda]
        [--data PREPARED] [--vae VAE_CKPT] [--config configs/hallo2/unet.cpu.json]
Results: bench/results/drift.json. Without --data it reuses bench_ldm.py's prepared clips of the
bundled portrait (outputs/ldm_check/prep/p0) or makes them; without --vae it trains one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

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


def _train(work: Path, data: Path, vae: str | None, config: Path, minutes: float, device: str) -> dict:
    """The VAE (unless given), then the Hallo2 UNet and the baseline, `minutes` each."""
    from talkinghead.training.hallo2_tasks import train_hallo2
    from talkinghead.training.ldm_tasks import train_ldm

    out = {}
    if not vae:
        t = time.perf_counter()
        r = train_ldm("difftalk", "vae", ROOT / "configs/difftalk/vae.cpu.json", str(data), work / "vae",
                      max_minutes=minutes, progress=False)
        out["vae"] = {"steps": r.step, "s": round(time.perf_counter() - t, 1)}
        vae = str(work / "vae")
    for name, use in (("hallo2", True), ("baseline", False)):
        t = time.perf_counter()
        r = train_hallo2(config, str(data), vae, work / name / "unet", max_minutes=minutes, progress=False,
                         use_motion_frames=use)
        link = work / name / "vae"
        if not link.exists():
            link.symlink_to(Path(vae).resolve(), target_is_directory=True)
        out[name] = {"steps": r.step, "s": round(time.perf_counter() - t, 1),
                     "val_loss": [(h["step"], round(h["val_loss"], 4)) for h in r.history if "val_loss" in h]}
        print(name, json.dumps(out[name]), flush=True)
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

    def _measure(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        big = self.cv2.resize(crop, (256, 256), interpolation=self.cv2.INTER_CUBIC)
        x0, y0, x1, y1 = (int(np.clip(v, 0, 255)) for v in self.box.bbox)
        lab = self.cv2.cvtColor(big[y0:y1, x0:x1].astype(np.float32) / 255, self.cv2.COLOR_RGB2LAB)
        return self.dlib.embed(big, self.box), lab.reshape(-1, 3).mean(0)

    def __call__(self, crop: np.ndarray) -> tuple[float, np.ndarray]:
        e, lab = self._measure(crop)
        return self.dlib.distance(e, self.ref_embed), lab


def _render(ckpt: Path, minutes: float, steps: int, device: str, motion) -> dict:
    """Render with one checkpoint, judging each crop as it comes (nothing held)."""
    import torch

    from talkinghead.face.landmarker import FaceLandmarker
    from talkinghead.io.image import read_image
    from talkinghead.render.base import RenderInputs
    from talkinghead.render.ldm.hallo2 import Hallo2Renderer

    r = Hallo2Renderer(ckpt, steps=steps, mode="crop", crop_size=64).to(device)
    image = read_image(PORTRAIT)
    with FaceLandmarker() as lm:
        src = r.prepare(image, lm.detect(image)[0], lm)
    judge = Judge(r, src)
    per_min = int(60 * FPS)
    dist, lab = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for z in r.latents(src, motion, None, 0):
            for crop in r.decode(src, z):
                d, c = judge(crop)
                dist.append(d)
                lab.append(c)
    secs = time.perf_counter() - t0
    dist, lab = np.asarray(dist), np.asarray(lab)
    first, last = slice(0, per_min), slice(max(0, len(dist) - per_min), len(dist))
    shift = lambda s: float(np.linalg.norm(lab[s].mean(0) - judge.ref_lab))  # noqa: E731
    return {"frames": len(dist), "render_s": round(secs, 1), "s_per_frame": round(secs / len(dist), 4),
            "identity_first_minute": round(float(dist[first].mean()), 4),
            "identity_last_minute": round(float(dist[last].mean()), 4),
            "lab_shift_first_minute": round(shift(first), 3), "lab_shift_last_minute": round(shift(last), 3),
            "identity_per_10s": [round(float(x.mean()), 4) for x in np.array_split(dist, max(1, len(dist) // 250))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the generated video")
    ap.add_argument("--train-minutes", type=float, default=6.0, help="per model (VAE, Hallo2, baseline)")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps per frame")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", help="a prepared dataset (talkinghead prepare) of talking clips")
    ap.add_argument("--vae", help="a trained VAE checkpoint (skips its training)")
    ap.add_argument("--config", default=str(ROOT / "configs/hallo2/unet.cpu.json"))
    ap.add_argument("--work", default=str(ROOT / "outputs" / "drift_check"))
    ap.add_argument("--reuse", action="store_true", help="judge the checkpoints already in --work")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "drift.json"))
    a = ap.parse_args()
    import torch

    if a.device == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    work = Path(a.work)
    t0 = time.perf_counter()
    data = _data(work, a.data)
    training = {} if a.reuse else _train(work, data, a.vae, Path(a.config), a.train_minutes, a.device)
    motion = _motion(int(a.minutes * 60 * FPS))
    result = {"setup": {"minutes": a.minutes, "train_minutes": a.train_minutes, "steps": a.steps,
                        "device": a.device, "data": str(data), "config": a.config,
                        "load_average_start": os.getloadavg()}, "training": training}
    for name in ("hallo2", "baseline"):
        result[name] = _render(work / name, a.minutes, a.steps, a.device, motion)
        print(name, json.dumps({k: v for k, v in result[name].items() if k != "identity_per_10s"}), flush=True)
    h, b = result["hallo2"], result["baseline"]
    result["identity_drift"] = {k: round(v["identity_last_minute"] - v["identity_first_minute"], 4)
                                for k, v in (("hallo2", h), ("baseline", b))}
    result["lab_drift"] = {k: round(v["lab_shift_last_minute"] - v["lab_shift_first_minute"], 3)
                           for k, v in (("hallo2", h), ("baseline", b))}
    result["setup"]["load_average_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("identity_drift", "lab_drift", "seconds")}))


if __name__ == "__main__":
    main()
