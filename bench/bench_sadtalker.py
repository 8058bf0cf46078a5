"""SadTalker benchmarks (not tests).

Speed: the face render at the released sizes (256 px), ours vs the official code, same weights:

    .venv/bin/python bench/bench_sadtalker.py [--official /path/to/OpenTalker/SadTalker] [--frames 3]
        [--device cpu|cuda] [--variants eager,folded,channels_last,batch]

Both are built with one set of random weights (ours, default init; the official modules load our
state dicts unchanged, the key layouts being identical). Per frame, the official `make_animation`
runs MappingNet, the keypoint transformation and the whole generator (re-encoding the source
every frame); ours encodes the source once, then runs MappingNet, the transformation, the warp
and the decoder. Variants of ours (each checked against the official frames, max |diff|):
`eager` (as the renderer runs, torch.no_grad), `folded` (inference_mode, spectral norms folded
into the weights: `fold_for_inference`), `channels_last` (folded + NHWC), `batch` (folded, all
frames in one generator call). Results: bench/results/sadtalker.json (with the load average).

Learning check (`--learn`), like bench_dawn.py's: the face render trained from scratch on CPU
through the shared loop for a bounded PROCESS CPU time (`--minutes`, one torch thread, so the
budget does not depend on the load others put on the machine; configs/sadtalker/render.cpu.json,
64 px), on the geometric renderer's talking videos of two real portraits (TTS voices
slt/awb/kal16/kal), then
`generate --renderer sadtalker` on held-out clips (flite rms voice), judged on the output video:
lip r (mouth opening vs the phones' viseme track; goal >= 0.4) and dlib identity distance to
the portrait (goal <= 0.5). Results: bench/results/RESULT.json (`--result`, default
sadtalker_learning); a strip of frames (the geometric teacher above ours) in
docs/RESULT.png with _learning -> _check.
`--config render.cpu_wide.json --minutes 30 --result sadtalker_learning_wide` is the run that
meets both goals; `--no-detail` judges without the trained renderer's detail transfer.

Floor (`--floor 64[,0]`): the held-out teacher frames through the trained render's crop at S px
and its paste (0: the teacher as is), judged the same way: what a perfect S px render would
score. Results: bench/results/sadtalker_floor.json.
"""

from __future__ import annotations

import argparse
import copy
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
sys.path.insert(0, str(ROOT / "bench"))
WORK = ROOT / "outputs" / "sadtalker_check"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(device: str, frames: int):
    from talkinghead.render.sadtalker.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
    from talkinghead.render.sadtalker.keypoints import KPConfig, KPDetector
    from talkinghead.render.sadtalker.mapping import MappingNet

    torch.manual_seed(0)
    modules = tuple(m.eval().to(device) for m in (KPDetector(KPConfig()), OcclusionAwareSPADEGenerator(GeneratorConfig()),
                                                    MappingNet()))
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(1, 3, 256, 256, generator=g).to(device), (0.3 * torch.randn(1, 70, 27, generator=g)).to(device),
            (0.3 * torch.randn(1, frames, 70, 27, generator=g)).to(device))
    return modules, data


def ours(modules, data, variant: str, device: str):
    """(frames (1, N, 3, S, S), source seconds, seconds per frame) of one variant."""
    from talkinghead.render.sadtalker.keypoints import transform_keypoints
    from talkinghead.render.sadtalker.model import fold_for_inference

    kp, gen, mapping = modules
    image, source, target = data
    if variant != "eager":
        kp, gen, mapping = (copy.deepcopy(m) for m in modules)
        fold_for_inference(gen)
    if variant == "channels_last":             # the 2D convolutions (the 3D ones have no NHWC form)
        for m in gen.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    ctx = torch.no_grad if variant == "eager" else torch.inference_mode
    n = target.shape[1]
    with ctx():
        _sync(device)
        t0 = time.perf_counter()
        canonical = kp(image)
        kp_source = transform_keypoints(canonical, mapping(source))
        volume = gen.source_volume(image)
        _sync(device)
        t_source = time.perf_counter() - t0
        t1 = time.perf_counter()
        if variant == "batch":
            kp_driving = transform_keypoints(canonical.expand(n, -1, -1), mapping(target[0]))
            out = gen.render(volume.expand(n, *volume.shape[1:]), kp_driving, kp_source.expand(n, -1, -1))
            out = out.prediction[None]
        else:
            out = torch.stack([gen.render(volume, transform_keypoints(canonical, mapping(target[:, i])), kp_source).prediction
                               for i in range(n)], 1)
        _sync(device)
    return out.float(), t_source, (time.perf_counter() - t1) / n


def official(path: str, modules, data, device: str):
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
        theirs.eval().to(device)
    image, source, target = data
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        out = make_animation(image, source, target, gen, kp, None, mapping)
        _sync(device)
    return out.float(), (time.perf_counter() - t0) / target.shape[1]


def speed(a) -> None:
    res = {"device": a.device, "threads": torch.get_num_threads(), "frames": a.frames, "size": 256,
           "load_before": os.getloadavg()}
    modules, data = build(a.device, a.frames)
    theirs = None
    if a.official:
        theirs, t_official = official(a.official, modules, data, a.device)
        res["official"] = {"frame_s": t_official, "s_per_video_s": 25 * t_official}
        print("official:", res["official"], flush=True)
    for variant in a.variants.split(","):
        frames, t_source, t_frame = ours(modules, data, variant, a.device)
        row = {"source_s": t_source, "frame_s": t_frame, "s_per_video_s": 25 * t_frame,
               "load": os.getloadavg()[0]}
        if theirs is not None:
            row["speedup_vs_official"] = res["official"]["frame_s"] / t_frame
            row["max_abs_diff"] = float((theirs - frames).abs().max())
        res[f"ours_{variant}"] = row
        print(variant, {k: round(v, 5) for k, v in row.items()}, flush=True)
    if a.official:                             # again: the load of a shared machine drifts
        _, t_again = official(a.official, modules, data, a.device)
        res["official_again"] = {"frame_s": t_again, "load": os.getloadavg()[0]}
        print("official again:", res["official_again"], flush=True)
    res["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / ("sadtalker.json" if a.device == "cpu" else f"sadtalker_{a.device}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


def subset(train: list[dict], per_portrait: int) -> Path:
    """A folder linking the first `per_portrait` training clips of each portrait (preparing, the
    face model on every frame, is the slow part on a loaded CPU); returns its dataset folder."""
    src = WORK / f"train_{per_portrait}"
    src.mkdir(exist_ok=True)
    for c in train:
        video = Path(c["video"])
        if int(video.stem.split("_")[1]) < per_portrait and not (src / video.name).exists():
            (src / video.name).symlink_to(video)
    return WORK / f"data_{per_portrait}"


def judged(test: list[dict], n: int) -> list[tuple[dict, dict]]:
    """`n` held-out clips spread over both portraits, each with the next clip (its phones: chance)."""
    picked = list(range(len(test)))[:: max(1, len(test) // n)][:n]
    return [(test[k], test[(k + 1) % len(test)]) for k in picked]


def floor(a) -> None:
    """What the render's crop and paste alone cost: the held-out teacher videos' frames cropped
    as a trained render crops the portrait (prepare's box, `crop_expand` 1.6), resized to S px
    and back, pasted with the same feathered paste, judged as `--learn` judges (a perfect S px
    render would score this). Results: bench/results/sadtalker_floor.json."""
    import bench_dawn
    import cv2
    from talkinghead.face.crop import crop_box, crop_image
    from talkinghead.face.landmarker import analyze_portrait
    from talkinghead.io.video import iter_frames, write_video
    from talkinghead.render.base import paste_feathered

    torch.set_num_threads(1)
    bench_dawn.WORK = WORK
    test = bench_dawn.make_clips("test", (bench_dawn.TEST_VOICE,), a.test_clips, 1)
    res: dict = {"load_before": os.getloadavg(), "crop_expand": 1.6, "sizes": {}}
    for size in (int(x) for x in a.floor.split(",")):
        rows = []
        for c, other in judged(test, a.judge):
            portrait = cv2.imread(c["portrait"])[:, :, ::-1].copy()
            box = crop_box(analyze_portrait(portrait, c["portrait"]), 1.6)
            out = WORK / "floor" / f"{size}_{Path(c['video']).name}"
            out.parent.mkdir(exist_ok=True)
            write_video(out, (paste_feathered(f, box, crop_image(f, box, size)) if size else f
                              for f in iter_frames(c["video"])), 25.0, audio=c["wav"])
            rows.append({"clip": out.name, **bench_dawn.judge(out, c["phones"], other["phones"],
                                                                Path(c["portrait"]))})
            print(size, {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
        res["sizes"][str(size or "teacher")] = {
            "rows": rows, **{k: float(np.mean([r[k] for r in rows])) for k in ("r", "dlib_distance")}}
    res["load_after"] = os.getloadavg()
    (ROOT / "bench" / "results" / "sadtalker_floor.json").write_text(json.dumps(res, indent=1) + "\n")
    print({k: (v["r"], v["dlib_distance"]) for k, v in res["sizes"].items()})


def learn(a) -> None:
    """The CPU learning check (module docstring)."""
    import bench_dawn
    from talkinghead.data.prepare import PrepareConfig, prepare
    from talkinghead.errors import NoFaceError
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
    from talkinghead.training.sadtalker_tasks import train_sadtalker

    torch.set_num_threads(1)
    bench_dawn.WORK = WORK                                   # its clip maker and judge, our folder
    res: dict = {"load_before": os.getloadavg()}
    train = bench_dawn.make_clips("train", bench_dawn.TRAIN_VOICES, a.train_clips, 0)
    test = bench_dawn.make_clips("test", (bench_dawn.TEST_VOICE,), a.test_clips, 1)
    data = subset(train, a.prepare_clips)
    m = prepare(data.with_name(f"train_{a.prepare_clips}"), data, PrepareConfig(size=64, features="mel"),
                workers=1, progress=False)
    res["data"] = {"train_clips": m["videos"], "test_clips": len(test), "frames": m["frames"]}
    ckpt = WORK / f"render_{a.prepare_clips}_{Path(a.config).stem}"
    t, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()
    if not a.reuse:
        train_sadtalker(ROOT / "configs" / "sadtalker" / a.config, str(data), ckpt,
                        max_cpu_minutes=a.minutes, progress=False)
    log = [json.loads(line) for line in (ckpt / "log.jsonl").read_text().splitlines()]
    res["train"] = {"config": a.config, "steps": json.loads((ckpt / "train_state.json").read_text())["step"],
                    "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
                    "cpu_minutes_budget": a.minutes, "threads": torch.get_num_threads(), "reused": a.reuse,
                    "load_average_before": load, "load_average_after": os.getloadavg(),
                    "val_loss": [(h["step"], h["val_loss"]) for h in log if "val_loss" in h]}
    print("trained:", res["train"], flush=True)
    from talkinghead.render.sadtalker.trained import TrainedSadTalkerRenderer

    TrainedSadTalkerRenderer.detail = not a.no_detail
    res["detail_transfer"] = not a.no_detail
    pipe = GeneratePipeline(GenerateConfig(renderer="sadtalker", sadtalker_checkpoints=str(ckpt)))
    rows = []
    for i, (c, other) in enumerate(judged(test, a.judge)):
        out = WORK / "out" / Path(c["video"]).name
        out.parent.mkdir(exist_ok=True)
        t = time.perf_counter()
        g = pipe(c["portrait"], c["wav"], out, MotionControls(seed=i), progress=False)
        row = {"clip": out.name, "seconds": g.num_frames / g.fps, "generate_s": time.perf_counter() - t}
        try:
            row.update(bench_dawn.judge(out, c["phones"], other["phones"], Path(c["portrait"])), face_found=True)
        except NoFaceError:                            # the face model finds no face in the output
            row.update({k: float("nan") for k in ("r", "r_other_clip", "dlib_distance", "csim_dlib")},
                       face_found=False)
        row["teacher_r"] = bench_dawn.judge(Path(c["video"]), c["phones"], c["phones"], Path(c["portrait"]))["r"]
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    res["test"] = rows
    res["summary"] = {k: float(np.nanmean([r[k] for r in rows])) for k in
                      ("r", "r_other_clip", "teacher_r", "dlib_distance", "csim_dlib")}
    res["summary"]["faces_found"] = sum(r["face_found"] for r in rows)
    res["goals"] = {"r>=0.4": bool(res["summary"]["r"] >= 0.4),
                    "dlib<=0.5": bool(res["summary"]["dlib_distance"] <= 0.5)}       # NaN: not met
    res["load_after"] = os.getloadavg()
    (ROOT / "bench" / "results" / f"{a.result}.json").write_text(json.dumps(res, indent=1) + "\n")
    bench_dawn.strip(rows, test, ROOT / "docs" / f"{a.result.replace('_learning', '_check')}.png")  # teacher above ours
    print(json.dumps(res["summary"], indent=1), res["goals"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", help="a checkout of OpenTalker/SadTalker (outside this repo)")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--variants", default="eager,folded,channels_last,batch")
    p.add_argument("--learn", action="store_true", help="the CPU learning check instead of the speed run")
    p.add_argument("--minutes", type=float, default=20.0, help="--learn: training budget, process CPU minutes")
    p.add_argument("--config", default="render.cpu.json", help="--learn: a file of configs/sadtalker/")
    p.add_argument("--train-clips", type=int, default=20, help="--learn: per portrait")
    p.add_argument("--test-clips", type=int, default=4, help="--learn: per portrait")
    p.add_argument("--prepare-clips", type=int, default=20, help="--learn: clips per portrait trained on")
    p.add_argument("--judge", type=int, default=8, help="--learn: held-out clips generated and judged")
    p.add_argument("--result", default="sadtalker_learning",
                   help="--learn: bench/results/RESULT.json, strip docs/RESULT (_learning -> _check).png")
    p.add_argument("--floor", help="sizes, e.g. 64,128 (0: the teacher as is): the crop-and-paste floor")
    p.add_argument("--no-detail", action="store_true", help="--learn: judge without the detail transfer")
    p.add_argument("--reuse", action="store_true", help="--learn: judge the existing checkpoint, no training")
    a = p.parse_args()
    learn(a) if a.learn else floor(a) if a.floor else speed(a)


if __name__ == "__main__":
    main()
