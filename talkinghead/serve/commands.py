"""The serving subcommands of `talkinghead`: serve, worker, batch, app (added by cli.py)."""

from __future__ import annotations

import argparse


def _serve(a: argparse.Namespace) -> None:
    import uvicorn

    from talkinghead.serve.api import Settings, create_app

    s = Settings(data=a.data, workers=a.workers, api_key=a.api_key, max_upload_mb=a.max_upload_mb,
                 max_queue=a.max_queue, job_timeout=a.job_timeout,
                 retention_hours=a.retention_hours, queue=a.queue, threads=a.threads)
    uvicorn.run(create_app(s), host=a.host, port=a.port, log_level="warning" if a.quiet else "info",
                timeout_graceful_shutdown=5)


def _worker(a: argparse.Namespace) -> None:
    from talkinghead.serve.redis_queue import run_worker

    run_worker(a.queue, a.job_timeout, a.threads, burst=a.burst, name=a.name)


def _batch(a: argparse.Namespace) -> None:
    from talkinghead.serve.batch import run_batch

    run_batch(a.manifest, a.server, a.output_dir, api_key=a.api_key, workers=a.workers,
              progress=not a.quiet)


def _app(a: argparse.Namespace) -> None:
    from talkinghead.serve.app import launch

    launch(a.host, a.port, a.data, a.job_timeout, a.threads)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-timeout", type=float, default=600.0, help="seconds per job")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per job runner (0: the cores shared among the workers)")


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="HTTP API with a job queue (OpenAPI docs at /docs)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data", default="talkinghead-data", help="job state and files")
    s.add_argument("--workers", type=int, default=1, help="in-process workers (embedded queue)")
    s.add_argument("--api-key", help="require this key in the X-API-Key header")
    s.add_argument("--queue", help="redis://HOST:PORT/DB: put jobs on Redis for `talkinghead worker`")
    s.add_argument("--max-upload-mb", type=float, default=100.0)
    s.add_argument("--max-queue", type=int, default=64, help="queued jobs before 429")
    s.add_argument("--retention-hours", type=float, default=24.0, help="keep finished jobs this long")
    s.add_argument("-q", "--quiet", action="store_true")
    _common(s)
    s.set_defaults(func=_serve)

    w = sub.add_parser("worker", help="take jobs from a Redis queue (any number, any machine)")
    w.add_argument("--queue", required=True, help="redis://HOST:PORT/DB, as given to serve")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    w.add_argument("--name", help="worker name (default: host and pid)")
    _common(w)
    w.set_defaults(func=_worker)

    b = sub.add_parser("batch", help="submit a JSONL manifest of jobs and collect the videos")
    b.add_argument("manifest", help='one job a line: {"image", "audio"|"video", "options", "output"}')
    b.add_argument("--server", help="API URL (default: start a local server for the batch)")
    b.add_argument("-o", "--output-dir", default=".", help="where lines without an output go")
    b.add_argument("--api-key")
    b.add_argument("--workers", type=int, default=1, help="workers of the local server")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=_batch)

    g = sub.add_parser("app", help="web app (Gradio): portrait + speech or driving video -> video")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=7860)
    g.add_argument("--data", default="talkinghead-app", help="where generated videos go")
    _common(g)
    g.set_defaults(func=_app)
