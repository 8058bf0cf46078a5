"""The web app (`talkinghead app`, Gradio): upload or record a portrait and speech (or a driving
video), set every control the CLI has, watch the progress, play and download the video.

Jobs go through the embedded queue (local.LocalBackend: one worker with its runner process), so
the app checks inputs, times out and cleans up exactly as the HTTP API does. It runs offline:
no analytics, no share link (no frpc download), system fonts only (no font CDN).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample"
_AUTO = "auto"


def _offline_env() -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_SSR_MODE", "False")


def submit_and_wait(backend, kind: str, files: dict[str, str | None], options: dict[str, Any],
            timeout: float, progress=None) -> tuple[str, str]:
    """Queue one job on `backend` and wait for it: (video path, one-line summary)."""
    import gradio as gr

    from talkinghead.errors import InputError
    from talkinghead.serve.options import JobSpec, check_job, parse_options, server_name

    staged = backend.staging()
    try:
        opts = parse_options(kind, options)
        inputs = {}
        for role, path in files.items():
            if path:
                inputs[role] = server_name(role, Path(path).name)
                shutil.copyfile(path, staged / inputs[role])
        check_job(kind, staged, inputs)
        job_id = backend.submit(JobSpec(kind, opts, inputs), staged)
    except InputError as e:
        raise gr.Error(str(e)) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    deadline = time.monotonic() + timeout + 120
    while time.monotonic() < deadline:
        job = backend.get(job_id)
        if progress is not None:
            progress(job["progress"], desc=job["status"])
        if job["status"] == "done":
            t = job["timings"]
            return str(backend.video(job_id)), f"done in {t['total']:.1f} s: " + ", ".join(
                f"{k} {v:.1f} s" for k, v in t.items() if k != "total")
        if job["status"] == "failed":
            raise gr.Error(job["error"])
        time.sleep(0.3)
    raise gr.Error("no answer from the job runner")


def _required(kind: str, **files: str | None) -> None:
    import gradio as gr

    for role, path in files.items():
        if not path:
            raise gr.Error(f"{role}: required for a {kind} job")


def _shared_controls(gr, prefix: str) -> list:
    with gr.Row():
        expression = gr.Slider(0, 3, 1.0, step=0.05, label="expression scale")
        pose = gr.Slider(0, 3, 1.0, step=0.05, label="pose scale")
        still = gr.Checkbox(False, label="still (no head motion)")
    with gr.Row():
        crop = gr.Checkbox(False, label="crop (face crop only, not the full image)",
                           elem_id=f"{prefix}-crop")
        size = gr.Slider(64, 1024, 512, step=32, label="crop size", elem_id=f"{prefix}-size")
        fps = gr.Slider(5, 60, 25, step=1, label="fps")
    return [expression, pose, still, crop, size, fps]


def _common(expression, pose, still, crop, size, fps) -> dict[str, Any]:
    return {"expression_scale": float(expression), "pose_scale": float(pose), "still": bool(still),
            "crop": bool(crop), "size": int(size), "fps": float(fps)}


def _generate_tab(gr, backend, timeout: float):
    from talkinghead.pipelines.checks import motion_model_names

    with gr.Row():
        image = gr.Image(type="filepath", sources=["upload", "webcam"], label="portrait",
                         elem_id="gen-image")
        audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="speech",
                         elem_id="gen-audio")
    with gr.Accordion("controls", open=True):
        with gr.Row():
            model = gr.Dropdown(motion_model_names(), value="fd2talk", label="motion model")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
            steps = gr.Slider(1, 50, 10, step=1, label="diffusion steps")
        with gr.Row():
            style = gr.Dropdown([_AUTO] + [str(i) for i in range(8)], value=_AUTO, label="pose style")
            blink = gr.Slider(0, 3, 0, step=0.05, label="blink rate per second (0: the model's own)")
            no_gate = gr.Checkbox(False, label="no gate (the mouth moves in quiet parts too)")
        shared = _shared_controls(gr, "gen")
        with gr.Row():
            ref_pose = gr.Video(label="reference pose video (optional)", sources=["upload"])
            ref_blink = gr.Video(label="reference blink video (optional)", sources=["upload"])
    go = gr.Button("Generate", variant="primary", elem_id="gen-go")
    video = gr.Video(label="result", elem_id="gen-video", autoplay=False)
    summary = gr.Textbox(label="status", elem_id="gen-status", interactive=False)

    def generate(image, audio, model, seed, steps, style, blink, no_gate, *rest,
                 progress=gr.Progress()):
        *shared_values, ref_pose, ref_blink = rest
        _required("generate", image=image, audio=audio)
        opts = {"motion_model": model, "seed": int(seed or 0), "steps": int(steps),
                "pose_style": None if style == _AUTO else int(style),
                "blink_rate": float(blink) if blink else None, "no_gate": bool(no_gate),
                **_common(*shared_values)}
        files = {"image": image, "audio": audio, "ref_pose": ref_pose, "ref_blink": ref_blink}
        return submit_and_wait(backend, "generate", files, opts, timeout, progress)

    go.click(generate, [image, audio, model, seed, steps, style, blink, no_gate, *shared,
                        ref_pose, ref_blink], [video, summary])
    gr.Examples([[str(SAMPLE / "portrait.jpg"), str(SAMPLE / "speech.wav")]], [image, audio],
                label="bundled sample")


def _drive_tab(gr, backend, timeout: float):
    with gr.Row():
        image = gr.Image(type="filepath", sources=["upload", "webcam"], label="portrait")
        driving = gr.Video(label="driving video", sources=["upload", "webcam"])
        audio = gr.Audio(type="filepath", sources=["upload", "microphone"],
                         label="soundtrack (optional; default: the driving video's)")
    with gr.Accordion("controls", open=True):
        shared = _shared_controls(gr, "drive")
        no_smooth = gr.Checkbox(False, label="no smoothing (keep measured pose jitter)")
    go = gr.Button("Animate", variant="primary")
    video = gr.Video(label="result")
    summary = gr.Textbox(label="status", interactive=False)

    def drive(image, driving, audio, *rest, progress=gr.Progress()):
        *shared_values, no_smooth = rest
        _required("drive", image=image, video=driving)
        opts = {**_common(*shared_values), "no_smooth": bool(no_smooth)}
        files = {"image": image, "video": driving, "audio": audio}
        return submit_and_wait(backend, "drive", files, opts, timeout, progress)

    go.click(drive, [image, driving, audio, *shared, no_smooth], [video, summary])


def build(backend, timeout: float = 600.0):
    """The Gradio Blocks of the app, running jobs on `backend` (a started LocalBackend)."""
    _offline_env()
    import gradio as gr

    with gr.Blocks(title="talkinghead", analytics_enabled=False) as demo:
        gr.Markdown("# talkinghead\nOne portrait plus speech (or a driving video) in, a talking "
                    "video out. Runs offline on this machine's CPU.")
        with gr.Tab("speech -> video (generate)"):
            _generate_tab(gr, backend, timeout)
        with gr.Tab("driving video -> video (drive)"):
            _drive_tab(gr, backend, timeout)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, data: str = "talkinghead-app",
           job_timeout: float = 600.0, threads: int = 0, block: bool = True):
    _offline_env()
    import gradio as gr

    from talkinghead.serve.local import LocalBackend

    backend = LocalBackend(data, workers=1, job_timeout=job_timeout, threads=threads)
    backend.start()
    demo = build(backend, job_timeout)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])     # no font CDN
    demo.queue(default_concurrency_limit=2)
    try:
        demo.launch(server_name=host, server_port=port, share=False, theme=theme,
                    allowed_paths=[str(Path(data).resolve())], prevent_thread_lock=not block,
                    footer_links=[], quiet=True)
    finally:
        if block:
            backend.stop()
    return demo
