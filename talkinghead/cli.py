"""`talkinghead` command line: a table of subcommands, each a thin call into a pipeline.

User errors print one line (`error: ...`) and exit 2; nothing is left at the output path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable


def _drive(a: argparse.Namespace) -> None:
    from talkinghead.pipelines.drive import DriveConfig, DrivePipeline

    cfg = DriveConfig(fps=a.fps, mode="crop" if a.crop else "full", crop_size=a.size,
                      expression_scale=a.expression_scale, pose_scale=a.pose_scale,
                      still=a.still, smooth=not a.no_smooth)
    out = DrivePipeline(cfg)(a.image, a.video, a.output, audio=a.audio, progress=not a.quiet)
    if not a.quiet:
        secs = sum(out.timings.values())
        print(f"wrote {out.path} ({out.num_frames} frames at {out.fps:g} fps, {secs:.1f} s)")


def _extract(a: argparse.Namespace) -> None:
    from talkinghead.face.extract import extract_motion
    from talkinghead.io.atomic import atomic_output, check_writable

    check_writable(a.output)
    motion = extract_motion(a.input, progress=not a.quiet)
    with atomic_output(a.output) as tmp:
        with open(tmp, "wb") as f:  # np.savez would append .npz to a bare path
            motion.save(f)
    if not a.quiet:
        print(f"wrote {a.output} ({len(motion)} frames at {motion.fps:g} fps, "
              f"face found in {int(motion.valid.sum())})")


def _generate(a: argparse.Namespace) -> None:
    raise NotImplementedError("audio-driven `generate` is not built yet (issue #3); "
                              "use `talkinghead drive --image P --video V -o out.mp4`")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="talkinghead", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("drive", help="animate a portrait with a driving video's motion")
    d.add_argument("--image", required=True, help="portrait (JPEG/PNG/WebP/BMP/TIFF)")
    d.add_argument("--video", required=True, help="driving video; its audio is kept")
    d.add_argument("-o", "--output", required=True, help="output .mp4")
    d.add_argument("--audio", help="soundtrack to use instead of the driving video's audio")
    d.add_argument("--expression-scale", type=float, default=1.0)
    d.add_argument("--pose-scale", type=float, default=1.0)
    d.add_argument("--still", action="store_true", help="no head motion")
    d.add_argument("--crop", action="store_true", help="output the face crop, not the full image")
    d.add_argument("--size", type=int, default=512, help="crop size with --crop")
    d.add_argument("--fps", type=float, default=25.0)
    d.add_argument("--no-smooth", action="store_true", help="keep measured pose jitter")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=_drive)

    e = sub.add_parser("extract", help="measure Motion in an image or video -> .npz")
    e.add_argument("input")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=_extract)

    g = sub.add_parser("generate", help="animate a portrait from speech audio (not built yet)")
    g.add_argument("--image", required=True)
    g.add_argument("--audio", required=True)
    g.add_argument("-o", "--output", required=True)
    g.set_defaults(func=_generate)
    return p


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    from talkinghead.errors import TalkingHeadError

    os.environ.setdefault("GLOG_minloglevel", "2")
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    log = logging.getLogger("talkinghead")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except TalkingHeadError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except NotImplementedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: internal error {type(e).__name__}: {first} (rerun with --debug)",
              file=sys.stderr)
        return 1
    return 0
