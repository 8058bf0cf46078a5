"""DAWN learning check on CPU (not a test): can the whole DAWN renderer learn lip motion from
audio in minutes, and keep identity? Judged on the OUTPUT videos, re-analysed by the face model.

1. An audio-visual set that can be made here: the geometric renderer's `generate` videos of real
   portraits (the bundled photo; a frame of the real carphone clip, upscaled) speaking TTS
   sentences (flite voices slt, awb, kal16, kal). Held out: the flite `rms` voice and other
   sentences.
2. `prepare` at 64x64, then the LFG and the A2V-FDM (DAWN's released architectures in a CPU-sized
   config, configs/dawn/*.cpu.json) trained through the shared loop, each for a bounded budget of
   process CPU time, one torch thread (so the budget does not depend on the machine's load).
3. `generate --renderer dawn` on the held-out clips (pose and blink from FD2Talk), then the
   face model on the output frames: mouth opening vs the TTS phones' viseme track (Pearson r;
   goal >= 0.4), the same against another clip's track (chance level), dlib identity distance
   to the portrait (goal <= 0.5), and the geometric teacher's own r for reference.
Results: bench/results/dawn.json; a strip of frames in docs/dawn_check.png.
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
WORK = Path("/work/data/dawn_check") if Path("/work/data").is_dir() else ROOT / "outputs" / "dawn_check"
TRAIN_VOICES = ("flite:slt", "flite:awb", "flite:kal16", "flite:kal")
TEST_VOICE = "flite:rms"


def portraits() -> list[Path]:
    import cv2

    from talkinghead.assets import asset_path
    from talkinghead.io.video import iter_frames

    out = WORK / "portraits"
    out.mkdir(parents=True, exist_ok=True)
    carphone = out / "carphone.png"
    if not carphone.exists():
        frame = next(iter(iter_frames(asset_path("carphone.mp4"))))
        big = cv2.resize(frame, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(carphone), big[:, :, ::-1])
    return [ROOT / "talkinghead" / "assets" / "sample" / "portrait.jpg", carphone]


def make_clips(split: str, voices: tuple[str, ...], count: int, seed: int) -> list[dict]:
    """`count` TTS clips per portrait, rendered by the geometric pipeline (cached)."""
    from talkinghead.data.corpus import sentences
    from talkinghead.data.tts import ALL_VOICES
    from talkinghead.io.audio import write_wav
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GeneratePipeline
    from talkinghead.types import AudioClip

    out = WORK / split
    out.mkdir(parents=True, exist_ok=True)
    index = out / "clips.json"
    if index.exists():
        return json.loads(index.read_text())
    rng = np.random.default_rng(seed)
    texts = sentences()
    pick = rng.choice(len(texts), size=count * 2, replace=False)
    by_name = {v.name: v for v in ALL_VOICES}
    pipe = GeneratePipeline()
    clips = []
    for k, portrait in enumerate(portraits()):
        for i in range(count):
            voice = by_name[voices[(i + k) % len(voices)]]
            utt = voice.speak(texts[pick[k * count + i]])
            wav = write_wav(out / f"p{k}_{i:03d}.wav", AudioClip(utt.samples[None].astype(np.float32), 16000))
            video = out / f"p{k}_{i:03d}.mp4"
            pipe(portrait, wav, video, MotionControls(seed=int(rng.integers(1000))), progress=False)
            clips.append({"video": str(video), "wav": str(wav), "portrait": str(portrait), "voice": voice.name,
                          "phones": [[p.name, p.start, p.end] for p in utt.phones]})
    index.write_text(json.dumps(clips))
    return clips


def judge(video: Path, phones: list, other: list, portrait: Path) -> dict:
    from talkinghead.data.tts import Phone
    from talkinghead.evaluation.analysis import analyze_video
    from talkinghead.evaluation.lipsync import lipsync_report
    from talkinghead.evaluation.runner import EvalConfig, evaluate

    a = analyze_video(video)
    rep = lipsync_report(a.opening, [Phone(*p) for p in phones])
    n = len(a.opening)
    chance = lipsync_report(a.opening[: min(n, 10 ** 6)], [Phone(*p) for p in other])
    ident = evaluate([video], EvalConfig(identity_stride=5, cpbd_stride=25), source=portrait, progress=False)
    m = ident.videos[0].metrics
    return {"r": rep.pearson_r, "offset": rep.offset_frames, "r_other_clip": chance.pearson_r,
            "dlib_distance": m["dlib_distance"], "csim_dlib": m["csim_dlib"], "cpbd": m["cpbd"]}


def strip(rows: list[dict], test: list[dict], path: Path) -> None:
    """Teacher (geometric) frames above DAWN's, at four instants of the first judged clip of each
    portrait."""
    import cv2

    from talkinghead.io.video import iter_frames

    tiles = []
    firsts = {}
    for c in test[:len(rows)]:
        firsts.setdefault(c["portrait"], c)
    for c in list(firsts.values())[:2]:
        out = WORK / "out" / Path(c["video"]).name
        teacher, dawn = list(iter_frames(c["video"])), list(iter_frames(out))
        picks = np.linspace(10, min(len(teacher), len(dawn)) - 10, 4).astype(int)
        row = lambda frames: np.concatenate([cv2.resize(frames[i], (192, 192)) for i in picks], 1)  # noqa: E731
        tiles.append(np.concatenate([row(teacher), row(dawn)], 0))
    img = np.concatenate(tiles, 1)
    path.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(path), img[:, :, ::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-clips", type=int, default=40, help="per portrait")
    ap.add_argument("--test-clips", type=int, default=4, help="per portrait")
    ap.add_argument("--lfg-cpu-minutes", type=float, default=8.0, help="process CPU minutes")
    ap.add_argument("--a2v-cpu-minutes", type=float, default=100.0,
                    help="process CPU minutes (configs/dawn/a2v.cpu.json's 1,600 steps, 3.5-3.7 CPU s each)")
    ap.add_argument("--judge", type=int, default=0,
                    help="judge only this many held-out clips, the portraits taken in turn (0: all)")
    ap.add_argument("--reuse", action="store_true", help="judge the existing checkpoints, no training")
    ap.add_argument("--reuse-lfg", action="store_true", help="keep the trained LFG; train the A2V-FDM only")
    ap.add_argument("--note", default="", help="a note stored with the results (how a reused stage was trained)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from talkinghead.data.prepare import PrepareConfig, prepare
    from talkinghead.errors import NoFaceError
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
    from talkinghead.training.dawn_tasks import train_dawn

    res: dict = {"note": args.note} if args.note else {}
    t = time.perf_counter()
    train = make_clips("train", TRAIN_VOICES, args.train_clips, 0)
    test = make_clips("test", (TEST_VOICE,), args.test_clips, 1)
    res["clips"] = {"train": len(train), "test": len(test), "make_s": time.perf_counter() - t}
    t = time.perf_counter()
    m = prepare(WORK / "train", WORK / "data", PrepareConfig(size=64), workers=2, progress=False)
    res["prepare"] = {"videos": m["videos"], "frames": m["frames"], "skipped": len(m["skipped"]),
                      "s": time.perf_counter() - t}
    ckpt = WORK / "dawn"
    for stage, minutes in (("lfg", args.lfg_cpu_minutes), ("a2v", args.a2v_cpu_minutes)):
        if args.reuse or (args.reuse_lfg and stage == "lfg"):
            hist = [json.loads(line) for line in (ckpt / stage / "log.jsonl").read_text().splitlines()]
            hist = [h for h in hist if "val_loss" in h]
            step = json.loads((ckpt / stage / "train_state.json").read_text())["step"]
            res[stage] = {"steps": step, "val_loss": [(h["step"], h["val_loss"]) for h in hist]}
            continue
        t, cpu = time.perf_counter(), time.process_time()
        r = train_dawn(stage, ROOT / "configs" / "dawn" / f"{stage}.cpu.json", str(WORK / "data"),
                       ckpt / stage, lfg=str(ckpt / "lfg"), max_cpu_minutes=minutes, progress=True)
        res[stage] = {"steps": r.step, "s": time.perf_counter() - t, "cpu_minutes": (time.process_time() - cpu) / 60,
                      "load_average_after": os.getloadavg(), "val_loss": [(h["step"], h["val_loss"]) for h in r.history]}
        print(f"{stage}: {r.step} steps, val loss {r.history[0]['val_loss']:.4f} -> {r.history[-1]['val_loss']:.4f}")
    if args.judge:
        half = len(test) // 2                                  # [p0 clips..., p1 clips...] -> in turn
        test = [c for pair in zip(test[:half], test[half:]) for c in pair][:args.judge]
    pipe = GeneratePipeline(GenerateConfig(renderer="dawn", dawn_checkpoint=str(ckpt)))
    rows = []
    for i, c in enumerate(test):
        out = WORK / "out" / Path(c["video"]).name
        out.parent.mkdir(exist_ok=True)
        t = time.perf_counter()
        g = pipe(c["portrait"], c["wav"], out, MotionControls(seed=i), progress=False)
        row = {"clip": out.name, "seconds": g.num_frames / g.fps, "generate_s": time.perf_counter() - t}
        try:                                  # an output in which the face model finds no face is a row
            row.update(face_found=True, **judge(out, c["phones"], test[(i + 1) % len(test)]["phones"],
                                                Path(c["portrait"])))
        except NoFaceError:
            row.update(face_found=False, **dict.fromkeys(("r", "r_other_clip", "dlib_distance", "csim_dlib",
                                                          "cpbd"), None))
        row["teacher_r"] = judge(Path(c["video"]), c["phones"], c["phones"], Path(c["portrait"]))["r"]
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    res["test"] = rows
    got = {k: [r[k] for r in rows if r[k] is not None]
           for k in ("r", "r_other_clip", "teacher_r", "dlib_distance", "csim_dlib", "cpbd")}
    res["summary"] = {k: float(np.nanmean(v)) if v else None for k, v in got.items()}
    res["summary"]["face_found"] = f"{sum(r['face_found'] for r in rows)} of {len(rows)} outputs"
    res["model"] = "DAWN's released architectures (lfg_mraa, unet3d), configs/dawn/*.cpu.json, 1 torch thread"
    res["load_average_end"] = os.getloadavg()
    (ROOT / "bench" / "results" / "dawn.json").write_text(json.dumps(res, indent=1) + "\n")
    strip(rows, test, ROOT / "docs" / "dawn_check.png")
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
