"""The embedded queue: job state in SQLite under the data folder, in-process worker threads.

Each worker thread owns one job runner (a child process, see executor.py) and claims the oldest
queued job with one atomic UPDATE. A restart loses nothing: jobs that were running when the
server stopped are queued again (once), or marked failed after a second interruption; partial
files are removed, and a job is `done` only after its video was renamed into place.

Layout: DATA/jobs.sqlite3, DATA/jobs/<id>/{inputs, output.mp4}, DATA/tmp/ (uploads being checked).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from talkinghead.serve.executor import Executor, JobFailed
from talkinghead.serve.options import JobSpec

OUTPUT = "output.mp4"
MAX_ATTEMPTS = 2
_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
  error TEXT, timings TEXT, spec TEXT NOT NULL, created REAL NOT NULL, started REAL,
  finished REAL, attempts INTEGER NOT NULL DEFAULT 0)"""


def run_job(executor: Executor, folder: Path, spec: JobSpec, timeout: float, on_progress
            ) -> dict[str, Any]:
    """Run one job through a runner; returns its timings (the video is folder/OUTPUT)."""
    request = {"dir": str(folder), "spec": spec.to_json(), "output": OUTPUT}
    answer = executor.run(request, on_progress, timeout)
    if not (folder / OUTPUT).is_file():
        raise JobFailed("internal error: the job finished without a video")
    return answer["timings"]


def public(row: dict[str, Any]) -> dict[str, Any]:
    """What GET /v1/jobs/{id} shows."""
    return {"id": row["id"], "kind": row["kind"], "status": row["status"],
            "progress": row["progress"], "error": row["error"],
            "timings": json.loads(row["timings"]) if row["timings"] else None,
            "created": row["created"], "started": row["started"], "finished": row["finished"]}


class Staging:
    """Uploads are checked in DATA/tmp/<random> before a backend takes them."""

    data: Path

    def staging(self) -> Path:
        """A fresh folder for an upload being checked; submit() takes it, or the caller removes it."""
        path = self.data / "tmp" / uuid.uuid4().hex
        path.mkdir()
        return path


class LocalBackend(Staging):
    """SQLite job store + N worker threads, each with its own runner process."""

    def __init__(self, data: str | Path, workers: int = 1, job_timeout: float = 600.0,
                 retention: float = 86400.0, threads: int = 0) -> None:
        self.data = Path(data)
        (self.data / "jobs").mkdir(parents=True, exist_ok=True)
        (self.data / "tmp").mkdir(exist_ok=True)
        self.db = sqlite3.connect(self.data / "jobs.sqlite3", check_same_thread=False,
                                  isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)
        self.lock = threading.Lock()
        self.wake = threading.Condition()
        self.stopping = threading.Event()
        self.workers, self.job_timeout, self.retention = workers, job_timeout, retention
        threads = threads or max(1, (os.cpu_count() or 1) // workers)   # workers share the cores
        self.executors = [Executor(threads) for _ in range(workers)]
        self.running: dict[str, Executor] = {}
        self.threads: list[threading.Thread] = []

    # -- store ---------------------------------------------------------------------------
    def _sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.db.execute(query, args).fetchall()]

    def folder(self, job_id: str) -> Path:
        return self.data / "jobs" / job_id

    def submit(self, spec: JobSpec, staged: Path) -> str:
        job_id = uuid.uuid4().hex
        staged.rename(self.folder(job_id))
        self._sql("INSERT INTO jobs (id, kind, status, spec, created) VALUES (?, ?, 'queued', ?, ?)",
                  job_id, spec.kind, json.dumps(spec.to_json()), time.time())
        with self.wake:
            self.wake.notify()
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self._sql("SELECT * FROM jobs WHERE id = ?", job_id)
        return public(rows[0]) if rows else None

    def video(self, job_id: str) -> Path:
        return self.folder(job_id) / OUTPUT

    def pending(self) -> int:
        return self._sql("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")[0]["n"]

    def delete(self, job_id: str) -> bool:
        rows = self._sql("DELETE FROM jobs WHERE id = ? RETURNING id", job_id)
        ex = self.running.get(job_id)
        if ex is not None:
            ex.kill()                     # its worker sees the row gone and discards the job
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return bool(rows)

    # -- workers -------------------------------------------------------------------------
    def recover(self) -> None:
        """After a restart: re-queue interrupted jobs (fail them on a second interruption)."""
        for row in self._sql("SELECT id, attempts FROM jobs WHERE status = 'running'"):
            for part in self.folder(row["id"]).glob(".*"):
                part.unlink(missing_ok=True)           # an interrupted atomic write
            (self.folder(row["id"]) / OUTPUT).unlink(missing_ok=True)
            if row["attempts"] >= MAX_ATTEMPTS:
                self._finish(row["id"], "failed", f"interrupted {row['attempts']} times (server stopped)")
            else:
                self._sql("UPDATE jobs SET status = 'queued', progress = 0 WHERE id = ?", row["id"])
        shutil.rmtree(self.data / "tmp", ignore_errors=True)
        (self.data / "tmp").mkdir()

    def start(self) -> None:
        self.recover()
        for ex in self.executors:
            t = threading.Thread(target=self._work, args=(ex,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stopping.set()
        with self.wake:
            self.wake.notify_all()
        for ex in self.executors:
            ex.kill()
        for t in self.threads:
            t.join(timeout=10)

    def _claim(self) -> dict[str, Any] | None:
        rows = self._sql(
            "UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1, progress = 0 "
            "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1) "
            "RETURNING id, spec", time.time())
        return rows[0] if rows else None

    def _finish(self, job_id: str, status: str, error: str | None = None,
                timings: dict | None = None) -> None:
        self._sql("UPDATE jobs SET status = ?, error = ?, timings = ?, finished = ?, "
                  "progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END WHERE id = ?",
                  status, error, json.dumps(timings) if timings else None, time.time(), status, job_id)

    def _work(self, ex: Executor) -> None:
        last_sweep = 0.0
        while not self.stopping.is_set():
            if time.monotonic() - last_sweep > 60:
                last_sweep = time.monotonic()
                self.sweep()
            job = self._claim()
            if job is None:
                with self.wake:
                    self.wake.wait(timeout=1.0)
                continue
            self._run(ex, job["id"], JobSpec.from_json(json.loads(job["spec"])))

    def _run(self, ex: Executor, job_id: str, spec: JobSpec) -> None:
        def progress(p: float) -> None:
            self._sql("UPDATE jobs SET progress = ? WHERE id = ?", p, job_id)

        self.running[job_id] = ex
        try:
            timings = run_job(ex, self.folder(job_id), spec, self.job_timeout, progress)
            self._finish(job_id, "done", timings=timings)
        except JobFailed as e:
            if not self.stopping.is_set():
                self._finish(job_id, "failed", str(e))
        finally:
            self.running.pop(job_id, None)

    def sweep(self) -> None:
        """Output retention: finished jobs older than `retention` seconds go, files and row."""
        cutoff = time.time() - self.retention
        for row in self._sql("SELECT id FROM jobs WHERE status IN ('done', 'failed') AND finished < ?",
                             cutoff):
            self.delete(row["id"])
