"""The job runner: a child process that keeps pipelines loaded and runs one job at a time.

The parent (`executor.Executor`) writes one JSON request per line to its stdin; the runner
answers on its stdout with `{"progress": f}` lines while the job runs and one
`{"ok": ...}` line at the end. Running jobs in a child lets the parent enforce a per-job
timeout (kill, then start a fresh runner) and lets a crashed job take nothing else down.
Progress comes from the pipelines' own progress bars: the runner's stderr is a sink that
reads their counts (tqdm shows bars only on a terminal, so the sink says it is one).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

_COUNT = re.compile(r"(\d+)/(\d+) \[")


class ProgressSink:
    """A stand-in for stderr: turns progress-bar text into `{"progress": f}` messages."""

    def __init__(self, out: TextIO, stages: tuple[str, ...]) -> None:
        self.out, self.stages = out, stages
        self.last = -1.0

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def write(self, text: str) -> int:
        m = None
        for m in _COUNT.finditer(text):
            pass
        if m is not None and int(m.group(2)) > 0:
            stage = next((i for i, s in enumerate(self.stages) if s in text), len(self.stages) - 1)
            frac = (stage + int(m.group(1)) / int(m.group(2))) / len(self.stages)
            if frac - self.last >= 0.01 or frac >= 1.0:
                self.last = frac
                _send(self.out, {"progress": round(min(frac, 0.99), 3)})
        return len(text)


def _send(out: TextIO, msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


class Runner:
    """Runs job specs through the pipelines; pipelines are kept per config (models stay loaded)."""

    def __init__(self, cache_size: int = 4) -> None:
        self.cache: dict[Any, Any] = {}
        self.cache_size = cache_size

    def _pipeline(self, key: Any, make):
        if key not in self.cache:
            if len(self.cache) >= self.cache_size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = make()
        return self.cache[key]

    def generate(self, o: dict[str, Any], files: dict[str, Path], output: Path):
        from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline, MotionControls

        ref = {k: str(files[k]) if k in files else None for k in ("ref_pose", "ref_blink")}
        cfg = GenerateConfig(fps=o["fps"], mode="crop" if o["crop"] else "full", crop_size=o["size"],
                             motion_model=o["motion_model"], expression_scale=o["expression_scale"],
                             pose_scale=o["pose_scale"], still=o["still"], gate=not o["no_gate"], **ref)
        controls = MotionControls(seed=o["seed"], steps=o["steps"], pose_style=o["pose_style"],
                                  blink_rate=o["blink_rate"])
        pipe = self._pipeline(repr(cfg), lambda: GeneratePipeline(cfg))
        return pipe(files["image"], files["audio"], output, controls, progress=True)

    def drive(self, o: dict[str, Any], files: dict[str, Path], output: Path):
        from talkinghead.pipelines.drive import DriveConfig, DrivePipeline

        cfg = DriveConfig(fps=o["fps"], mode="crop" if o["crop"] else "full", crop_size=o["size"],
                          expression_scale=o["expression_scale"], pose_scale=o["pose_scale"],
                          still=o["still"], smooth=not o["no_smooth"])
        pipe = self._pipeline(repr(cfg), lambda: DrivePipeline(cfg))
        return pipe(files["image"], files["video"], output, audio=files.get("audio"), progress=True)

    def run(self, request: dict[str, Any], out: TextIO) -> dict[str, Any]:
        from talkinghead.errors import TalkingHeadError

        folder = Path(request["dir"])
        spec = request["spec"]
        files = {role: folder / name for role, name in spec["inputs"].items()}
        stages = ("analysing", "rendering") if spec["kind"] == "drive" else ("rendering",)
        t0 = time.perf_counter()
        old, sys.stderr = sys.stderr, ProgressSink(out, stages)
        try:
            job = self.generate if spec["kind"] == "generate" else self.drive
            result = job(spec["options"], files, folder / request["output"])
        except TalkingHeadError as e:
            return {"ok": False, "error": str(e).replace(str(folder) + "/", ""), "user": True}
        except Exception as e:  # a bug: reported on the job, the runner lives on
            return {"ok": False, "error": f"internal error {type(e).__name__}: {e}", "user": False}
        finally:
            sys.stderr = old
        timings = {k: round(v, 3) for k, v in result.timings.items()}
        timings["total"] = round(time.perf_counter() - t0, 3)
        return {"ok": True, "timings": timings, "num_frames": result.num_frames, "fps": result.fps}


def main() -> None:
    """Serve requests from stdin until it closes; protocol messages go to the original stdout."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    threads = int(os.environ.get("TALKINGHEAD_SERVE_THREADS", "0"))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                               # native or Python prints must not corrupt the protocol
    sys.stdout = sys.stderr
    runner = Runner()
    _send(out, {"ready": True})
    for line in sys.stdin:
        if line.strip():
            _send(out, runner.run(json.loads(line), out))


if __name__ == "__main__":
    main()
