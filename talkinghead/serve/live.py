"""Live mode: the browser sends microphone audio over a WebSocket, frames and audio come back.

`talkinghead live --image P [--input mic|FILE]` serves a page (static/live.html). The page
sends 16 kHz 16-bit PCM in 20 ms chunks; the server runs the streaming pipeline
(`pipelines/stream.py`) in a worker thread and sends each frame back as one binary message
(header, its 40 ms of audio, JPEG) at a steady 25 fps: frame f leaves at
t0 + delay + (f + 1) * 40 ms, where t0 is when the stream's audio began, unless it is not ready
yet (then it leaves as soon as it is, and counts as late). With `--input FILE` the server
itself feeds the file in real time, as if it were spoken; the page only receives.

Message from server, binary: uint32 frame index, uint32 audio byte count, int16 audio, JPEG.
Text messages are JSON: {"type": "hello"|"end"|"error", ...}; "end" carries the stream's
figures (`LiveStats.summary`). Serving code calls the pipelines only.
"""

from __future__ import annotations

import asyncio
import io
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import Request, WebSocket

from talkinghead.pipelines.stream import MotionControls, StreamPipeline, single_threaded

STATIC = Path(__file__).parent / "static"
CHUNK_S = 0.02


@dataclass
class LiveSettings:
    image: str
    input: str = "mic"               # "mic" (the browser's) or an audio file played as if live
    delay: float = 0.27              # seconds from the audio's time to a frame's send time
    jpeg_quality: int = 80
    controls: MotionControls = field(default_factory=lambda: MotionControls(steps=3))


@dataclass
class LiveStats:
    """Arrival of each audio chunk and the send time of each frame (perf_counter seconds)."""

    frame_samples: int = 640
    chunks: list[tuple[float, int]] = field(default_factory=list)    # (arrival, end sample)
    sent: list[float] = field(default_factory=list)                  # per frame, in order
    late: int = 0

    def summary(self) -> dict:
        sent = np.array(self.sent)
        total = self.chunks[-1][1] if self.chunks else 0
        lat = [sent[(end - 1) // self.frame_samples] - t for t, end in self.chunks
               if end > 0 and (end - 1) // self.frame_samples < len(sent)]
        gaps = np.diff(sent) if len(sent) > 1 else np.zeros(1)
        out = {"frames": len(sent), "expected_frames": -(-total // self.frame_samples),
               "late_frames": self.late, "chunks": len(self.chunks),
               "fps": float((len(sent) - 1) / (sent[-1] - sent[0])) if len(sent) > 1 else 0.0,
               "interval_ms_std": float(gaps.std() * 1000), "interval_ms_max": float(gaps.max() * 1000)}
        if lat:
            out.update(latency_ms_median=float(np.median(lat) * 1000),
                       latency_ms_p95=float(np.percentile(lat, 95) * 1000),
                       latency_ms_max=float(np.max(lat) * 1000))
        return out


def encode_frame(index: int, frame: np.ndarray, audio: np.ndarray, quality: int = 80) -> bytes:
    """One binary message: index, audio byte count, int16 audio, JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return struct.pack("<II", index, len(pcm)) + pcm + buf.getvalue()


def decode_frame(message: bytes) -> tuple[int, np.ndarray, bytes]:
    """(index, float32 audio, JPEG bytes) of a message made by `encode_frame`."""
    index, n = struct.unpack_from("<II", message)
    audio = np.frombuffer(message[8:8 + n], "<i2").astype(np.float32) / 32767
    return index, audio, message[8 + n:]


class LiveStream:
    """One stream: audio chunks in (any thread or coroutine), paced frame messages out.

    `feed(samples)` stamps a chunk's arrival and queues it; `close()` ends the input. A worker
    thread runs features + motion, a second one render + JPEG; `frames()` is an async iterator
    of messages, each released at its due time (see the module docstring)."""

    def __init__(self, session, delay: float, quality: int = 80) -> None:
        self.session, self.delay, self.quality = session, delay, quality
        self.stats = LiveStats(session.motion.config.frame_samples)
        self.inbox: queue.Queue = queue.Queue()
        self.received = 0
        self.t0: float | None = None

    def feed(self, samples: np.ndarray) -> None:
        now = time.perf_counter()
        x = np.asarray(samples, np.float32).reshape(-1)
        if self.t0 is None:                  # the audio began one chunk before it arrived
            self.t0 = now - len(x) / 16000
        self.received += len(x)
        self.stats.chunks.append((now, self.received))
        self.inbox.put(x)

    def close(self) -> None:
        self.inbox.put(None)

    def _work(self, loop: asyncio.AbstractEventLoop, out: asyncio.Queue) -> None:
        """Features here, motion in a second thread, render + JPEG in a third: each hop's
        Whisper features are computed while the previous hop's motion is sampled and the one
        before is drawn, so the three stages share the cores instead of taking turns."""
        prepared: queue.Queue = queue.Queue()
        hops: queue.Queue = queue.Queue()
        sampler = threading.Thread(target=self._sample, args=(prepared, hops), daemon=True)
        renderer = threading.Thread(target=self._render, args=(hops, loop, out), daemon=True)
        c0 = time.thread_time()
        try:
            with single_threaded():
                sampler.start()
                renderer.start()
                while True:
                    x = self.inbox.get()
                    prepared.put(self.session.prepare(x))
                    if x is None:
                        break
                prepared.put(None)
                self.session.timings["features_thread_cpu"] = time.thread_time() - c0
                sampler.join()
                renderer.join()
        finally:
            prepared.put(None)
            hops.put(None)
            loop.call_soon_threadsafe(out.put_nowait, None)

    def _sample(self, prepared: queue.Queue, hops: queue.Queue) -> None:
        c0 = time.thread_time()
        try:
            while (batch := prepared.get()) is not None:
                hops.put(self.session.sample(batch))
        finally:
            hops.put(None)
            self.session.timings["motion_thread_cpu"] = time.thread_time() - c0

    def _render(self, hops: queue.Queue, loop: asyncio.AbstractEventLoop, out: asyncio.Queue) -> None:
        c0 = time.thread_time()
        while (batch := hops.get()) is not None:
            for f in self.session.render(batch):
                msg = encode_frame(f.index, f.frame, f.audio, self.quality)
                loop.call_soon_threadsafe(out.put_nowait, (f.index, msg))
        self.session.timings["render_thread_cpu"] = time.thread_time() - c0

    async def frames(self):
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        worker = threading.Thread(target=self._work, args=(loop, out), daemon=True)
        worker.start()
        period = 1.0 / self.session.motion.config.fps
        while (item := await out.get()) is not None:
            index, msg = item
            due = self.t0 + self.delay + (index + 1) * period
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -period / 2:
                self.stats.late += 1
            self.stats.sent.append(time.perf_counter())
            yield msg
        worker.join()


async def feed_realtime(stream: LiveStream, samples: np.ndarray, chunk_s: float = CHUNK_S) -> None:
    """Feed 16 kHz samples into `stream` in real time, chunk by chunk, then end the input."""
    from talkinghead.pipelines.stream import chunked

    start, done = time.perf_counter(), 0
    for chunk in chunked(samples, chunk_s):
        done += len(chunk)
        wait = start + done / 16000 - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        stream.feed(chunk)
    stream.close()


async def play_file(stream: LiveStream, path: str, chunk_s: float = CHUNK_S) -> None:
    """An audio file played into `stream` as if spoken live."""
    from talkinghead.pipelines.generate import load_speech

    samples = (await asyncio.to_thread(load_speech, path)).mono()
    await feed_realtime(stream, samples, chunk_s)


class LiveService:
    """The prepared portrait and pipeline, shared by connections one at a time (the renderer's
    state holds per-frame buffers)."""

    def __init__(self, settings: LiveSettings, pipeline: StreamPipeline | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline if pipeline is not None else StreamPipeline()
        self.state = self.pipeline.prepare(settings.image)
        # the liveliness calibration (`calibrate_alive`, once per pipeline): before serving, so
        # that the first stream does not wait for it
        self.pipeline.calibration(settings.controls)
        self.busy = asyncio.Lock()
        self.reports: list[dict] = []            # what pages posted to /live/report
        self.report_event = threading.Event()

    def stream(self) -> LiveStream:
        session = self.pipeline.session(self.state, self.settings.controls)
        return LiveStream(session, self.settings.delay, self.settings.jpeg_quality)

    def hello(self) -> dict:
        cfg = self.pipeline.config
        h, w = self.state.image.shape[:2]
        return {"type": "hello", "fps": cfg.fps, "sample_rate": 16000, "chunk_s": CHUNK_S,
                "input": "mic" if self.settings.input == "mic" else "file", "width": w, "height": h}


async def _receive_mic(ws, stream: LiveStream) -> None:
    """Binary messages are int16 PCM chunks; a text {"type": "stop"} or a disconnect ends them."""
    import json

    from starlette.websockets import WebSocketDisconnect

    try:
        while True:
            msg = await ws.receive()
            if msg.get("bytes") is not None:
                stream.feed(np.frombuffer(msg["bytes"], "<i2").astype(np.float32) / 32768)
            elif msg.get("text") is not None and json.loads(msg["text"]).get("type") == "stop":
                break
            elif msg["type"] == "websocket.disconnect":
                break
    except WebSocketDisconnect:
        pass
    stream.close()


async def run_socket(ws, service: LiveService) -> None:
    """One WebSocket connection: hello, stream until the input ends, "end" with the figures."""
    await ws.accept()
    if service.busy.locked():
        await ws.send_json({"type": "error", "message": "another live stream is running"})
        await ws.close()
        return
    async with service.busy:
        await ws.send_json(service.hello())
        await ws.receive_json()                  # {"type": "start"}: the page is ready to play
        stream = service.stream()
        if service.settings.input == "mic":
            feeder = asyncio.create_task(_receive_mic(ws, stream))
        else:
            feeder = asyncio.create_task(play_file(stream, service.settings.input))
        async for msg in stream.frames():
            await ws.send_bytes(msg)
        await feeder
        await ws.send_json({"type": "end", **stream.stats.summary()})


def live_router(service: LiveService):
    """GET /live (the page), /live/static/*, WS /live/ws, POST /live/report (the page's figures)."""
    from fastapi import APIRouter
    from fastapi.responses import FileResponse, JSONResponse

    router = APIRouter()

    @router.get("/live")
    async def page():
        return FileResponse(STATIC / "live.html")

    @router.get("/live/static/{name}")
    async def static(name: str):
        path = STATIC / name
        if not name.startswith("live") or "/" in name or not path.is_file():
            return JSONResponse({"error": f"{name}: not found"}, status_code=404)
        return FileResponse(path)

    @router.websocket("/live/ws")
    async def socket(ws: WebSocket):
        await run_socket(ws, service)

    @router.post("/live/report")
    async def report(request: Request):
        service.reports.append(await request.json())
        service.report_event.set()
        return {"ok": True}

    return router


def create_live_app(service: LiveService):
    """A FastAPI app with the live routes alone (`talkinghead live`); `/` leads to the page."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI(title="talkinghead live")
    app.include_router(live_router(service))

    @app.get("/")
    async def root():
        return RedirectResponse("/live")

    return app


def serve_live(settings: LiveSettings, host: str = "127.0.0.1", port: int = 8010,
               pipeline: StreamPipeline | None = None) -> None:
    """Prepare the portrait, then serve the page until interrupted."""
    import uvicorn

    import importlib.util

    from talkinghead.errors import InputError, TalkingHeadError

    if settings.input != "mic" and not Path(settings.input).is_file():
        raise InputError(f"{settings.input}: audio file not found (or use --input mic)")
    if not any(importlib.util.find_spec(m) for m in ("websockets", "wsproto")):
        raise TalkingHeadError("live mode needs a WebSocket package for uvicorn: pip install websockets")
    print("live: preparing the portrait (the shipped models under the default settings come "
          "calibrated; other models or settings calibrate blinks and head motion against offline "
          "sampling on their first start: about 50 CPU s, kept for the next starts)...", flush=True)
    service = LiveService(settings, pipeline)
    print(f"live: open http://{host}:{port}/live", flush=True)
    uvicorn.run(create_live_app(service), host=host, port=port, log_level="warning")
