"""The HTTP API (FastAPI): submit a job, poll it, fetch its video, delete it. OpenAPI at /docs.

Every error is a JSON body `{"error": "one line"}` with a 4xx status (5xx only for bugs). An
upload is written under a server-chosen name into a staging folder, checked the way the
pipelines will read it, and only then queued; a rejected request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from talkinghead.errors import InputError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ROLES = ("image", "audio", "video", "ref_pose", "ref_blink")


@dataclass
class Settings:
    data: str = "talkinghead-data"
    workers: int = 1
    api_key: str | None = None
    max_upload_mb: float = 100.0       # whole request
    max_queue: int = 64                # queued jobs before 429
    job_timeout: float = 600.0         # seconds per job
    retention_hours: float = 24.0      # finished jobs (and their videos) are kept this long
    queue: str | None = None           # redis://... : jobs go to RQ workers instead
    threads: int = 0                   # torch threads per runner (0: torch's default)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_backend(s: Settings):
    if s.queue:
        from talkinghead.serve.redis_queue import RedisBackend

        return RedisBackend(s.queue, s.data, job_timeout=s.job_timeout,
                            retention=s.retention_hours * 3600)
    from talkinghead.serve.local import LocalBackend

    return LocalBackend(s.data, s.workers, s.job_timeout, s.retention_hours * 3600, s.threads)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, however it is sent. The rest
    of the body is read and dropped first (up to a cap), so the client is writing no more when
    the answer comes and can read it, instead of a broken pipe."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit
        self.message = f"request is over the {limit / 2**20:g} MB upload limit"

    async def _refuse(self, receive, send, drained: bool = False) -> None:
        seen = 0
        while not drained and seen <= max(self.limit, 64 * 2**20):   # drop the rest of the body
            msg = await receive()
            seen += len(msg.get("body", b""))
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break
        await _json(send, 413, self.message)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(receive, send)
        seen, over, started, ended = 0, False, False, False

        async def counted():
            nonlocal seen, over, ended
            msg = await receive()
            seen += len(msg.get("body", b""))
            # the body's last message: another receive() would wait for the client to hang up
            ended = msg["type"] != "http.request" or not msg.get("more_body")
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return msg

        async def guarded(msg):
            nonlocal started
            if not over:
                started = started or msg["type"] == "http.response.start"
                await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(receive, send, drained=ended)


async def _json(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _save(upload, folder: Path, role: str, limit: int) -> str:
    """Write an upload under a server-chosen name (see options.server_name)."""
    from talkinghead.serve.options import server_name

    name = server_name(role, upload.filename)
    size = 0
    with open(folder / name, "wb") as f:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"{role}: over the upload limit")
            f.write(chunk)
    if size == 0:
        raise ApiError(400, f"{role}: empty file")
    return name


def create_app(settings: Settings | None = None, backend=None):
    """The FastAPI app; `backend` defaults to the one `settings` names (started with the app).
    Other routers (e.g. live mode) can be mounted on the returned app."""
    s = settings or Settings()
    backend = backend if backend is not None else make_backend(s)

    @asynccontextmanager
    async def lifespan(app):
        backend.start()
        await asyncio.to_thread(_warm)
        yield
        backend.stop()

    app = FastAPI(title="talkinghead", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Portrait + speech (or a driving video) -> talking video, as jobs.")
    app.state.backend, app.state.settings = backend, s
    _docs(app)
    _errors(app)
    _routes(app, s, backend)
    app.add_middleware(BodyLimit, limit=int(s.max_upload_mb * 2**20))
    return app


def _docs(app) -> None:
    """OpenAPI docs at /docs from the swagger-ui-bundle package's files (no CDN: works offline)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="talkinghead API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon-32x32.png")


def _warm() -> None:
    """Import what the checks need before the first request does."""
    import talkinghead.pipelines.checks as c

    c.motion_model_names()
    import talkinghead.pipelines.generate  # noqa: F401


def _errors(app) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(InputError)
    async def input_error(request, e: InputError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in err["loc"][1:]) or "request"
        return JSONResponse({"error": f"{where}: {err['msg']}"}, status_code=400)


def _routes(app, s: Settings, backend) -> None:
    limit = int(s.max_upload_mb * 2**20)

    def auth(x_api_key: str | None = Header(None), authorization: str | None = Header(None)):
        if s.api_key is None:
            return
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), s.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (X-API-Key header)")

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = backend.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise ApiError(404, "no such job")
        return job

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "queued": await asyncio.to_thread(backend.pending)}

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(auth)])
    async def submit(request: Request,
                     image: UploadFile | None = File(None, description="portrait"),
                     audio: UploadFile | None = File(None, description="speech (generate) or soundtrack (drive)"),
                     video: UploadFile | None = File(None, description="driving video: makes a drive job"),
                     ref_pose: UploadFile | None = File(None, description="generate: head-motion video"),
                     ref_blink: UploadFile | None = File(None, description="generate: blink video"),
                     options: str | None = Form(None, description="JSON of the CLI's options")):
        from talkinghead.serve.options import INPUTS, JobSpec, check_job, job_kind, parse_options

        uploads = {k: v for k, v in dict(image=image, audio=audio, video=video, ref_pose=ref_pose,
                                          ref_blink=ref_blink).items() if v is not None}
        extra = set((await request.form()).keys()) - set(ROLES) - {"options"}
        if extra:
            raise ApiError(400, f"unknown field {sorted(extra)[0]!r}")
        kind = job_kind(set(uploads))
        required, optional = INPUTS[kind]
        for role in required:
            if role not in uploads:
                raise ApiError(400, f"{role}: required for a {kind} job")
        for role in uploads:
            if role not in required + optional:
                raise ApiError(400, f"{role}: not taken by a {kind} job")
        opts = parse_options(kind, options)
        if await asyncio.to_thread(backend.pending) >= s.max_queue:
            raise ApiError(429, f"queue is full ({s.max_queue} jobs waiting); retry later")
        staged = await asyncio.to_thread(backend.staging)
        try:
            inputs = {role: await _save(up, staged, role, limit) for role, up in uploads.items()}
            await asyncio.to_thread(check_job, kind, staged, inputs)
            job_id = await asyncio.to_thread(backend.submit, JobSpec(kind, opts, inputs), staged)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return Response(content=f'{{"id": "{job_id}", "status": "queued"}}', status_code=202,
                        media_type="application/json", headers={"Location": f"/v1/jobs/{job_id}"})

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    async def status(job_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(job_or_404, job_id)

    @app.get("/v1/jobs/{job_id}/video", dependencies=[Depends(auth)],
             response_class=FileResponse, responses={200: {"content": {"video/mp4": {}}}})
    async def video(job_id: str):
        job = await asyncio.to_thread(job_or_404, job_id)
        if job["status"] != "done":
            raise ApiError(409, f"job is {job['status']}" + (f": {job['error']}" if job["error"] else ""))
        out = await asyncio.to_thread(backend.video, job_id)
        if out is None:
            raise ApiError(410, "the video has expired")
        if isinstance(out, bytes):
            return Response(out, media_type="video/mp4")
        return FileResponse(out, media_type="video/mp4", filename=f"{job_id}.mp4")

    @app.delete("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    async def delete(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        await asyncio.to_thread(backend.delete, job_id)
        return {"id": job_id, "deleted": True}
