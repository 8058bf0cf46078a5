"""SadTalker face render speed on CPU (not a test): ours vs the official code, same weights.

    .venv/bin/python bench/bench_sadtalker.py [--official /path/to/OpenTalker/SadTalker] [--frames 3]

Both are built at the released sizes (256 px) with one set of random weights (ours, default
init; the official modules load our state dicts unchanged, the key layouts being identical).
Per frame, the official `make_animation` runs MappingNet, the keypoint transformation and the
whole generator (re-encoding the source every frame); ours encodes the source once and then runs
MappingNet, the transformation and the warp + decoder. Also reported: max |ours - official| on the
rendered frames. Results: bench/results/sadtalker.json (with the machine's load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ours(frames: int):
    from talkinghead.render.sadtalker.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
    from talkinghead.render.sadtalker.keypoints import KPConfig, KPDetector, transform_keypoints
    from talkinghead.render.sadtalker.mapping import MappingNet

    torch.manual_seed(0)
    kp, gen, mapping = KPDetector(KPConfig()).eval(), OcclusionAwareSPADEGenerator(GeneratorConfig()).eval(), MappingNet().eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 256, 256, generator=g)
    source = 0.3 * torch.randn(1, 70, 27, generator=g)
    target = 0.3 * torch.randn(1, frames, 70, 27, generator=g)
    t0 = time.perf_counter()
    canonical = kp(image)
    kp_source = transform_keypoints(canonical, mapping(source))
    volume = gen.source_volume(image)
    t_source = time.perf_counter() - t0
    out, t1 = [], time.perf_counter()
    for i in range(frames):
        kp_driving = transform_keypoints(canonical, mapping(target[:, i]))
        out.append(gen.render(volume, kp_driving, kp_source).prediction)
    t_frames = (time.perf_counter() - t1) / frames
    return (kp, gen, mapping), (image, source, target), torch.stack(out, 1), t_source, t_frames


def official(path: str, modules, data, frames: int):
    sys.path.insert(0, path)
    for name in ("kornia", "kornia.geometry"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import yaml
    from src.facerender.modules.generator import OcclusionAwareSPADEGenerator
    from src.facerender.modules.keypoint_detector import KPDetector
    from src.facerender.modules.make_animation import make_animation
    from src.facerender.modules.mapping import MappingNet

    cfg = yaml.safe_load(open(Path(path) / "src/config/facerender.yaml"))["model_params"]
    common = cfg["common_params"]
    kp = KPDetector(**cfg["kp_detector_params"], **common)
    gen = OcclusionAwareSPADEGenerator(**cfg["generator_params"], **common)
    mapping = MappingNet(**cfg["mapping_params"])
    for theirs, mine in zip((kp, gen, mapping), modules):
        theirs.load_state_dict(mine.state_dict())
        theirs.eval()
    image, source, target = data
    t0 = time.perf_counter()
    out = make_animation(image, source, target, gen, kp, None, mapping)
    return out, (time.perf_counter() - t0) / frames


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", help="a checkout of OpenTalker/SadTalker (outside this repo)")
    p.add_argument("--frames", type=int, default=3)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    res = {"threads": torch.get_num_threads(), "frames": a.frames, "size": 256,
           "load_before": os.getloadavg()}
    modules, data, frames, t_source, t_frame = ours(a.frames)
    res["ours"] = {"source_s": t_source, "frame_s": t_frame, "s_per_video_s": 25 * t_frame}
    print("ours:", res["ours"])
    if a.official:
        theirs, t_official = official(a.official, modules, data, a.frames)
        res["official"] = {"frame_s": t_official, "s_per_video_s": 25 * t_official}
        res["speedup"] = t_official / t_frame
        res["max_abs_diff"] = float((theirs - frames).abs().max())
        print("official:", res["official"], "speedup", round(res["speedup"], 2), "diff", res["max_abs_diff"])
    res["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / "sadtalker.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
