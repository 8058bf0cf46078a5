"""Benchmark (not a test): does `generate --prompt` steer the expression of the OUTPUT video?

Hallo2's textual prompts (issue #19 part 2). The bundled portrait speaks real recorded speech
(ARCTIC a0007 + the ALSA voice clips, 20 s, never trained on) once per prompt and seed; each
output video is re-analysed by the face model (MediaPipe blendshapes), and the mouth opening is
compared with the recording's phones (lip-sync r, best offset, as bench_motion.py). Per video:
mean mouthSmile (left/right), browInnerUp, jawOpen; per prompt and seed the change against
"neutral" of the same seed. Goals: "smiling" raises mouthSmile, "surprised" raises browInnerUp
and jawOpen, for every seed; lip-sync r within 0.1 of "neutral" and of no prompt at all.
The held-out phrasings (never trained on) test the sentence embedding's generalisation.

    python bench/bench_prompts.py [--seeds 0 1 2] [--checkpoint DIR] [--guidance 1.0]
Results: bench/results/prompts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORTRAIT = ROOT / "talkinghead" / "assets" / "sample" / "portrait.jpg"
PROMPTS = {"neutral": "neutral", "smiling": "smiling", "surprised": "surprised"}
HELD_OUT = {"neutral": "an expressionless face", "smiling": "grinning happily", "surprised": "looking astonished"}


def measure(prompt: str | None, seed: int, checkpoint: str | None, guidance: float, speech,
            portrait: Path = PORTRAIT) -> dict:
    """One generated video, judged on its frames."""
    from talkinghead.evaluation.generated import judge_on_real_speech
    from talkinghead.motion.generate import MotionControls
    from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline
    from talkinghead.types import BS

    pipe = GeneratePipeline(GenerateConfig(prompt=prompt, prompt_checkpoint=checkpoint, prompt_guidance=guidance))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = judge_on_real_speech(pipe, portrait, d, MotionControls(seed=seed), speech)
    b = r.analysis.motion.blendshapes                                               # (T, 52) face model
    ok = np.isfinite(b).all(1)
    mean = lambda *names: float(np.mean([b[ok, BS[n]].mean() for n in names]))  # noqa: E731
    return {"prompt": prompt, "seed": seed, "lip_r": float(r.lipsync.offset_r),
            "lip_r_offset0": float(r.lipsync.pearson_r),
            "mouthSmile": mean("mouthSmileLeft", "mouthSmileRight"), "browInnerUp": mean("browInnerUp"),
            "jawOpen": mean("jawOpen"), "frames": int(ok.sum()), "seconds": round(time.perf_counter() - t0, 1)}


def compare(rows: list[dict], names: dict[str, str], seeds: list[int]) -> dict:
    """Per prompt: change vs "neutral" of the same seed; how many seeds move the right way."""
    by = {(r["prompt"], r["seed"]): r for r in rows}
    out = {}
    for key, checks in (("smiling", ("mouthSmile",)), ("surprised", ("browInnerUp", "jawOpen"))):
        deltas = {c: [by[(names[key], s)][c] - by[(names["neutral"], s)][c] for s in seeds] for c in checks}
        dr = [by[(names[key], s)]["lip_r"] - by[(names["neutral"], s)]["lip_r"] for s in seeds]
        out[key] = {**{f"delta_{c}": [round(x, 4) for x in v] for c, v in deltas.items()},
                    **{f"seeds_up_{c}": int(sum(x > 0 for x in v)) for c, v in deltas.items()},
                    "delta_lip_r": [round(x, 3) for x in dr],
                    "ok": all(all(x > 0 for x in v) for v in deltas.values()) and all(abs(x) <= 0.1 for x in dr)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--checkpoint", help="prompt model folder (default: the shipped one)")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--no-held-out", action="store_true", help="skip the unseen phrasings")
    ap.add_argument("--portrait", default=str(PORTRAIT), help="portrait image (default: the bundled one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "prompts.json"))
    a = ap.parse_args()
    from talkinghead.evaluation.testset import real_speech

    speech = real_speech()
    rows = []
    for s in a.seeds:
        rows.append(measure(None, s, a.checkpoint, a.guidance, speech, Path(a.portrait)))
        for p in PROMPTS.values():
            rows.append(measure(p, s, a.checkpoint, a.guidance, speech, Path(a.portrait)))
            print(json.dumps(rows[-1]), flush=True)
    if not a.no_held_out:
        for p in HELD_OUT.values():
            rows.append(measure(p, a.seeds[0], a.checkpoint, a.guidance, speech, Path(a.portrait)))
            print(json.dumps(rows[-1]), flush=True)
    base = {s: next(r for r in rows if r["prompt"] is None and r["seed"] == s) for s in a.seeds}
    result = {
        "setup": {"portrait": a.portrait, "speech": "ARCTIC a0007 + ALSA clips (20 s, real)",
                  "seeds": a.seeds, "guidance": a.guidance, "checkpoint": a.checkpoint or "shipped",
                  "load_average": os.getloadavg()},
        "rows": rows,
        "trained_phrasings": compare(rows, PROMPTS, a.seeds),
        "lip_r_no_prompt": {s: base[s]["lip_r"] for s in a.seeds},
        "lip_r_neutral_minus_no_prompt": [round(next(r["lip_r"] for r in rows if r["prompt"] == "neutral"
                                                     and r["seed"] == s) - base[s]["lip_r"], 3) for s in a.seeds],
    }
    if not a.no_held_out:
        result["held_out_phrasings"] = compare(rows, HELD_OUT, a.seeds[:1])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in result if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
