"""A small client for the HTTP API (standard library only): used by `talkinghead batch`, the
tests and the benchmark."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class ApiCallError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def multipart(files: dict[str, tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, base: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base, self.api_key, self.timeout = base.rstrip("/"), api_key, timeout

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, bytes]:
        """(status, body); 4xx/5xx raise ApiCallError with the server's one-line error."""
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.api_key:
            req.add_header("X-API-Key", self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:200]
            raise ApiCallError(e.code, message) from None

    def submit(self, files: dict[str, str | Path], options: dict[str, Any] | None = None) -> str:
        data = {role: (Path(p).name, Path(p).read_bytes()) for role, p in files.items()}
        body, ctype = multipart(data, {"options": json.dumps(options or {})})
        return json.loads(self.call("POST", "/v1/jobs", body, ctype)[1])["id"]

    def status(self, job_id: str) -> dict[str, Any]:
        return json.loads(self.call("GET", f"/v1/jobs/{job_id}")[1])

    def download(self, job_id: str, out: str | Path) -> Path:
        import os

        data = self.call("GET", f"/v1/jobs/{job_id}/video")[1]
        out = Path(out)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, out)             # never a partial file at `out`
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def delete(self, job_id: str) -> None:
        self.call("DELETE", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """The job's status once done or failed (TimeoutError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.status(job_id)
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not finished after {timeout:g} s")

    def healthy(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.call("GET", "/v1/health")[0] == 200
            except (OSError, ApiCallError):
                time.sleep(0.3)
        return False
