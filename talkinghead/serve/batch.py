"""`talkinghead batch MANIFEST.jsonl`: submit many jobs to a server and collect their videos.

One job a line: `{"image": P, "audio": A, "options": {...}, "output": "out.mp4"}` (or `"video"`
for a drive job; `ref_pose` / `ref_blink` files too). Relative paths are relative to the
manifest. Every line is checked before anything is sent. Without `--server` a local server is
started for the batch. At most `inflight` jobs wait on the server at once (a full queue's 429
is waited out), videos are written atomically, and `batch-results.jsonl` records every line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from talkinghead.errors import InputError, TalkingHeadError
from talkinghead.serve.client import ApiCallError, Client

ROLES = ("image", "audio", "video", "ref_pose", "ref_blink")


def read_manifest(path: str | Path, output_dir: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(d, dict) or not set(d) <= set(ROLES) | {"options", "output"}:
            raise InputError(f"{path}:{n}: expected an object with {', '.join(ROLES)}, options, output")
        files = {r: (path.parent / d[r]) for r in ROLES if d.get(r)}
        for role, f in files.items():
            if not f.is_file():
                raise InputError(f"{path}:{n}: {role} {f} not found")
        out = Path(d["output"]) if d.get("output") else Path(f"{n:05d}-{files['image'].stem}.mp4")
        out = out if out.is_absolute() else (path.parent / out if d.get("output") else output_dir / out)
        items.append({"line": n, "files": files, "options": d.get("options") or {}, "output": out})
    if not items:
        raise InputError(f"{path}: no jobs in the manifest")
    return items


@contextmanager
def local_server(workers: int):
    """A `talkinghead serve` child on a free localhost port, for the batch's life."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="talkinghead-batch-") as data:
        proc = subprocess.Popen([sys.executable, "-m", "talkinghead", "serve", "--port", str(port),
                                 "--data", data, "--workers", str(workers), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            if not Client(url).healthy(timeout=120):
                raise TalkingHeadError("the local server did not start")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _submit(c: Client, item: dict[str, Any]) -> str | None:
    """The job id, or None when the queue is full (try again later)."""
    try:
        return c.submit(item["files"], item["options"])
    except ApiCallError as e:
        if e.status == 429:
            return None
        item["error"] = e.message
        return ""


def run_batch(manifest: str | Path, server: str | None, output_dir: str | Path = ".",
              api_key: str | None = None, workers: int = 1, progress: bool = True,
              inflight: int = 8, timeout: float = 24 * 3600) -> list[dict[str, Any]]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items = read_manifest(manifest, output_dir)
    if server is None:
        with local_server(workers) as url:
            return run_batch(manifest, url, output_dir, api_key, workers, progress, inflight, timeout)
    from tqdm import tqdm

    c = Client(server, api_key)
    todo, running, finished = list(items), {}, []
    bar = tqdm(total=len(items), unit="job", disable=not progress)
    deadline = time.monotonic() + timeout
    while (todo or running) and time.monotonic() < deadline:
        while todo and len(running) < inflight:
            job_id = _submit(c, todo[0])
            if job_id is None:
                break
            item = todo.pop(0)
            if job_id:
                running[job_id] = item
            else:
                finished.append(item)
                bar.update()
        for job_id in list(running):
            job = c.status(job_id)
            if job["status"] in ("done", "failed"):
                item = running.pop(job_id)
                item["id"], item["timings"] = job_id, job["timings"]
                if job["status"] == "done":
                    c.download(job_id, item["output"])
                    c.delete(job_id)
                else:
                    item["error"] = job["error"]
                finished.append(item)
                bar.update()
        bar.set_postfix(running=len(running), failed=sum("error" in i for i in finished))
        time.sleep(0.5)
    bar.close()
    return _report(items, finished, output_dir, progress)


def _report(items, finished, output_dir: Path, progress: bool) -> list[dict[str, Any]]:
    rows = [{"line": i["line"], "output": str(i["output"]) if "error" not in i else None,
             "error": i.get("error", "not finished" if i not in finished else None),
             "timings": i.get("timings")} for i in items]
    (output_dir / "batch-results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    failed = [r for r in rows if r["error"]]
    if progress:
        print(f"{len(rows) - len(failed)} of {len(rows)} jobs done; "
              f"results in {output_dir / 'batch-results.jsonl'}")
    if failed:
        first = failed[0]
        raise TalkingHeadError(f"{len(failed)} of {len(rows)} jobs failed (line {first['line']}: "
                               f"{first['error']})")
    return rows
