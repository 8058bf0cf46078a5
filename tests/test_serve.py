"""The HTTP API against real server processes on 127.0.0.1 (a free port each, bounded waits):
concurrent jobs, bad requests, a server killed mid-job, the Redis queue with two workers, and
the web app in headless Chromium."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from talkinghead.serve.client import ApiCallError, Client, multipart

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200
        except OSError:
            time.sleep(0.3)
    return False


class Server:
    """`talkinghead serve` (or another subcommand) as a child process; stopped by the test."""

    def __init__(self, data: Path, *args: str, command: str = "serve", health: str = "/v1/health") -> None:
        self.port, self.data, self.args, self.command = free_port(), data, args, command
        self.health = health
        self.proc: subprocess.Popen | None = None
        self.client = Client(f"http://127.0.0.1:{self.port}")

    def start(self) -> "Server":
        self.log = open(self.data.parent / f"{self.data.name}-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "talkinghead", self.command, "--port", str(self.port),
             "--data", str(self.data), *self.args], stdout=self.log, stderr=subprocess.STDOUT)
        if not _wait_up(f"http://127.0.0.1:{self.port}{self.health}", 120):
            self.stop()
            pytest.fail(f"server did not come up: {self.tail()}")
        return self

    def tail(self) -> str:
        return (self.data.parent / f"{self.data.name}-{self.port}.log").read_text(errors="replace")[-2000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory, speech_path, portrait_path):
    """Short clips cut from the bundled sample (1 s keeps each job to a few seconds)."""
    from talkinghead.io.audio import read_audio, write_wav
    from talkinghead.types import AudioClip

    root = tmp_path_factory.mktemp("media")
    clip = read_audio(speech_path)
    for name, seconds in (("short.wav", 1.0), ("tiny.wav", 0.05), ("long.wav", 2.0)):
        write_wav(root / name, AudioClip(clip.samples[:, : int(seconds * 16000)], 16000))
    # a job that cannot finish inside a 2 s per-job timeout however fast the machine: 50 s of
    # speech, at 8 kHz so that it stays under the 1 MiB upload limit of test_bad_requests
    long8k = np.tile(clip.samples, (1, 13))[:, : 50 * 16000 : 2]
    write_wav(root / "overtime.wav", AudioClip(long8k, 8000))
    shutil.copy(portrait_path, root / "portrait.jpg")
    return root


SMALL = {"crop": True, "size": 160}          # the face is ~80 px (64 needed)


def check_video(path: Path, frames: int, size: int) -> None:
    from talkinghead.io.video import iter_frames, video_info

    info = video_info(path)
    assert (info.width, info.height, info.has_audio) == (size, size, True)
    got = list(iter_frames(path))
    assert abs(len(got) - frames) <= 1 and got[0].std() > 10        # a real picture, not blank


def test_concurrent_jobs(tmp_path, media):
    srv = Server(tmp_path / "data", "--workers", "2", "--threads", "1").start()
    try:
        c = srv.client
        from concurrent.futures import ThreadPoolExecutor

        def one(seed: int) -> str:
            return c.submit({"image": media / "portrait.jpg", "audio": media / "short.wav"},
                            {**SMALL, "seed": seed})

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(one, range(8)))
        assert len(set(ids)) == 8
        seen_running = set()
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            jobs = [c.status(i) for i in ids]
            seen_running |= {j["id"] for j in jobs if j["status"] == "running"}
            if all(j["status"] in ("done", "failed") for j in jobs):
                break
            assert sum(j["status"] == "running" for j in jobs) <= 2      # two workers
            time.sleep(0.5)
        assert [j["status"] for j in jobs] == ["done"] * 8, [j["error"] for j in jobs]
        assert all(j["progress"] == 1.0 and j["timings"]["render"] > 0 for j in jobs)
        videos = [c.download(i, tmp_path / f"{i}.mp4") for i in ids]
        for v in videos:
            check_video(v, 25, 160)
        assert len({v.read_bytes() for v in videos}) > 1               # seeds differ
        # a drive job, driven by one of those videos (its soundtrack is kept)
        drive = c.submit({"image": media / "portrait.jpg", "video": videos[1]}, SMALL)
        job = c.wait(drive, timeout=300)
        assert job["kind"] == "drive" and job["status"] == "done", job
        check_video(c.download(drive, tmp_path / "drive.mp4"), 25, 160)
        c.delete(ids[0])
        with pytest.raises(ApiCallError) as e:
            c.status(ids[0])
        assert e.value.status == 404 and not (tmp_path / "data" / "jobs" / ids[0]).exists()
        _batch(tmp_path, media, c.base)
    finally:
        srv.stop()


def _batch(tmp_path: Path, media: Path, url: str) -> None:
    """`talkinghead batch` against the running server: videos written, then one bad line."""
    from conftest import run_cli

    line = {"image": str(media / "portrait.jpg"), "audio": str(media / "short.wav"), "options": SMALL}
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({**line, "output": "a.mp4"}) + "\n" + json.dumps(line) + "\n")
    r = run_cli("batch", manifest, "--server", url, "-o", tmp_path / "out", "-q")
    assert r.returncode == 0, r.stderr
    check_video(tmp_path / "a.mp4", 25, 160)
    check_video(tmp_path / "out" / "00002-portrait.mp4", 25, 160)
    rows = [json.loads(x) for x in (tmp_path / "out" / "batch-results.jsonl").read_text().splitlines()]
    assert [r["error"] for r in rows] == [None, None]
    manifest.write_text(json.dumps({**line, "options": {"pose_style": 11}}) + "\n")
    r = run_cli("batch", manifest, "--server", url, "-o", tmp_path / "out", "-q")
    assert r.returncode == 2 and r.stderr.startswith("error: 1 of 1 jobs failed (line 1: options: pose_style")
    assert len(r.stderr.strip().splitlines()) == 1


def _raw(c: Client, files: dict, fields: dict | None = None) -> ApiCallError:
    body, ctype = multipart(files, fields or {})
    with pytest.raises(ApiCallError) as e:
        c.call("POST", "/v1/jobs", body, ctype)
    return e.value


def _chunked_post(port: int, key: str, payload: bytes) -> int:
    """POST a multipart body with chunked transfer encoding (no Content-Length); the status."""
    import http.client

    body, ctype = multipart({"image": ("p.jpg", payload)}, {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/jobs", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                 headers={"Content-Type": ctype, "X-API-Key": key}, encode_chunked=True)
    r = conn.getresponse()
    assert json.loads(r.read())["error"]
    conn.close()
    return r.status


def test_bad_requests(tmp_path, media):
    """20 bad requests: each a 4xx with a one-line JSON error, and nothing left behind."""
    data = tmp_path / "data"
    srv = Server(data, "--max-upload-mb", "1", "--api-key", "k3y", "--job-timeout", "2",
                 "--max-queue", "1").start()
    try:
        c = srv.client
        c.api_key = "k3y"
        img = ("p.jpg", (media / "portrait.jpg").read_bytes())
        wav = ("s.wav", (media / "short.wav").read_bytes())
        junk = ("x.bin", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
        opts = lambda **o: {"options": json.dumps(o)}                  # noqa: E731
        posts = {
            "nothing": ({}, None),
            "no audio": ({"image": img}, None),
            "no image": ({"audio": wav}, None),
            "empty image": ({"image": ("p.jpg", b""), "audio": wav}, None),
            "corrupt image": ({"image": junk, "audio": wav}, None),
            "corrupt audio": ({"image": img, "audio": junk}, None),
            "audio too short": ({"image": img, "audio": ("t.wav", (media / "tiny.wav").read_bytes())}, None),
            "over-size": ({"image": ("big.jpg", b"\xff" * (1 << 20) + img[1]), "audio": wav}, None),
            "traversal name": ({"image": ("../../../evil.jpg", img[1]), "audio": wav}, None),
            "windows traversal": ({"image": img, "audio": ("..\\..\\evil.wav", wav[1])}, None),
            "options not json": ({"image": img, "audio": wav}, {"options": "{seed: 1"}),
            "unknown option": ({"image": img, "audio": wav}, opts(bogus=1)),
            "pose style 9": ({"image": img, "audio": wav}, opts(pose_style=9)),
            "seed text": ({"image": img, "audio": wav}, opts(seed="abc")),
            "unknown model": ({"image": img, "audio": wav}, opts(motion_model="nope")),
            "corrupt video": ({"image": img, "video": junk}, None),
            "unknown field": ({"image": img, "audio": wav, "script": junk}, None),
        }
        errors = {name: _raw(c, files, fields) for name, (files, fields) in posts.items()}
        for path in ("/v1/jobs/" + "0" * 32, "/v1/jobs/..%2F..%2Fjobs.sqlite3/video"):
            with pytest.raises(ApiCallError) as e:
                c.call("GET", path)
            errors[path] = e.value
        with pytest.raises(ApiCallError) as e:
            Client(c.base).submit({"image": media / "portrait.jpg", "audio": media / "short.wav"})
        errors["no api key"] = e.value
        assert len(errors) == 20
        for name, err in errors.items():
            assert 400 <= err.status < 500 and err.message and "\n" not in err.message, (name, err)
        assert errors["over-size"].status == 413 and errors["no api key"].status == 401
        assert errors["unknown model"].status == 400 and "nope" in errors["unknown model"].message
        assert "corrupt" in errors["corrupt image"].message or "not an image" in errors["corrupt image"].message
        assert str(data) not in " ".join(e.message for e in errors.values())     # no server paths
        assert list((data / "jobs").iterdir()) == [] and list((data / "tmp").iterdir()) == []
        assert not list(tmp_path.rglob("evil*"))
        assert c.call("GET", "/v1/health")[0] == 200
        assert _chunked_post(srv.port, "k3y", img[1] * 12) == 413      # no Content-Length either
        docs = c.call("GET", "/docs")[1].decode()           # OpenAPI docs, served without a CDN
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs)
        assert assets and all(a.startswith("/docs-static/") for a in assets), assets
        assert all(c.call("GET", a)[0] == 200 for a in assets)
        assert "/v1/jobs" in json.loads(c.call("GET", "/openapi.json")[1])["paths"]
        # a valid job over the per-job timeout fails, and no video is left; while it runs, one
        # job waits and the next is refused (--max-queue 1)
        job = c.submit({"image": media / "portrait.jpg", "audio": media / "overtime.wav"}, SMALL)
        deadline = time.monotonic() + 60
        while c.status(job)["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.1)
        waiting = c.submit({"image": media / "portrait.jpg", "audio": media / "short.wav"}, SMALL)
        with pytest.raises(ApiCallError) as e:
            c.submit({"image": media / "portrait.jpg", "audio": media / "short.wav"}, SMALL)
        assert e.value.status == 429 and "queue is full" in e.value.message
        final = c.wait(job, timeout=120)
        assert final["status"] == "failed" and final["error"] == "timed out after 2 s", final
        assert not (data / "jobs" / job / "output.mp4").exists()
        with pytest.raises(ApiCallError) as e:
            c.download(job, tmp_path / "x.mp4")
        assert e.value.status == 409 and not (tmp_path / "x.mp4").exists()
        assert c.wait(waiting, timeout=120)["status"] in ("done", "failed")
    finally:
        srv.stop()


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids |= {int(k) for k in (task / "children").read_text().split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_killed_mid_job_then_restarted(tmp_path, media):
    data = tmp_path / "data"
    srv = Server(data, "--workers", "1").start()
    try:
        job = srv.client.submit({"image": media / "portrait.jpg", "audio": media / "long.wav"}, SMALL)
        deadline = time.monotonic() + 120
        while srv.client.status(job)["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert srv.client.status(job)["status"] == "running"
        runners = _children(srv.proc.pid)
        assert runners                                  # the job's runner process
        srv.kill9()
    finally:
        srv.stop()
    deadline = time.monotonic() + 20                     # runners die with their server
    while any(_alive(p) for p in runners) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in runners)
    assert not (data / "jobs" / job / "output.mp4").exists()
    srv = Server(data, "--workers", "1").start()         # same data folder
    try:
        first = srv.client.status(job)
        assert first["status"] in ("queued", "running")
        final = srv.client.wait(job, timeout=300)
        assert final["status"] == "done", final                 # run again after one interruption
        check_video(srv.client.download(job, tmp_path / "out.mp4"), 50, 160)
    finally:
        srv.stop()


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("no redis-server (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_queue_two_workers(tmp_path, media, redis_url):
    import redis

    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(2)]
    workers = [subprocess.Popen([sys.executable, "-m", "talkinghead", "worker", "--queue", redis_url,
                                 "--threads", "1", "--name", f"w{i}"], stdout=logs[i],
                                stderr=subprocess.STDOUT) for i in range(2)]
    srv = Server(tmp_path / "api", "--queue", redis_url).start()
    try:
        c = srv.client
        ids = [c.submit({"image": media / "portrait.jpg", "audio": media / "short.wav"},
                        {**SMALL, "seed": s}) for s in range(4)]
        jobs = [c.wait(i, timeout=400) for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 4, [j["error"] for j in jobs]
        for i in ids:
            check_video(c.download(i, tmp_path / f"{i}.mp4"), 25, 160)
        r = redis.Redis.from_url(redis_url)
        assert {r.hget(f"talkinghead:job:{i}", "worker") for i in ids} == {b"w0", b"w1"}
        c.delete(ids[0])
        assert not list(r.scan_iter(f"talkinghead:*{ids[0]}*"))
        assert list((tmp_path / "api" / "tmp").iterdir()) == []          # uploads went to Redis
    finally:
        srv.stop()
        for w in workers:
            w.terminate()
            w.wait(timeout=30)
        for f in logs:
            f.close()


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4; no extra package)."""

    def __init__(self, exe: str, profile: Path) -> None:
        import fcntl

        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        to_chrome_r, from_chrome_w = high       # not 3 or 4 themselves, which the shell rewires
        args = [exe, "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
                "--mute-audio", "about:blank"]
        # Chromium reads commands on fd 3 and answers on fd 4: bash puts the pipe ends there (dash
        # takes no fd numbers over 9)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "bash", *args],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf, self.n, self.events, self.session = b"", 0, [], None

    def send(self, method: str, timeout: float = 60, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self.buf:
                import select

                if not select.select([self.from_chrome], [], [], 1.0)[0]:
                    if time.monotonic() > deadline:
                        raise TimeoutError(method)
                    continue
                self.buf += os.read(self.from_chrome, 1 << 20)
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "DOM", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", url=url)

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    def wait_js(self, expression: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(expression)

    def upload(self, selector: str, path: Path) -> None:
        root = self.send("DOM.getDocument", depth=-1)["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        assert node, selector
        self.send("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_web_app_in_chromium(tmp_path, portrait_path, speech_path):
    """The Gradio page in headless Chromium: upload the sample, generate, the video plays."""
    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if exe is None:
        pytest.skip("no Chromium (apt-get install chromium-headless-shell)")
    app = Server(tmp_path / "app", "--threads", "1", command="app", health="/").start()
    browser = Browser(exe, tmp_path / "profile")
    try:
        browser.open(f"http://127.0.0.1:{app.port}/")
        browser.wait_js("!!document.querySelector('#gen-image input[type=file]')", 60)
        browser.upload("#gen-image input[type=file]", portrait_path)
        browser.upload("#gen-audio input[type=file]", speech_path)
        browser.js("document.querySelector('#gen-crop input').click()")
        browser.wait_js("!!document.querySelector('#gen-image img') && "
                        "!!document.querySelector('#gen-audio audio')", 60)       # both uploaded
        browser.js("document.querySelector('#gen-go').click()")
        state = browser.wait_js(
            "(() => { const v = document.querySelector('#gen-video video');"
            " return v && v.readyState >= 1 && v.duration > 0 ?"
            " {duration: v.duration, readyState: v.readyState} : null })()", 400)
        assert abs(state["duration"] - 4.0) < 0.3 and state["readyState"] >= 1, state
        playing = browser.js("(async () => { const v = document.querySelector('#gen-video video');"
                             " await v.play(); await new Promise(r => setTimeout(r, 1500));"
                             " return {t: v.currentTime, err: v.error && v.error.code} })()")
        assert playing["t"] > 0.2 and not playing["err"], playing
        status = browser.js("document.querySelector('#gen-status textarea').value")
        assert status.startswith("done"), status
        local = f"http://127.0.0.1:{app.port}"
        outside = [u for u in browser.requested() if not u.startswith((local, "data:", "blob:", "about:"))]
        assert outside == [], outside                    # offline: no CDN, no analytics
    finally:
        browser.close()
        app.stop()
