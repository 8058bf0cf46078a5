"""Scale-out: the same API puts jobs on Redis, and `talkinghead worker` processes take them (RQ).

Workers need no shared file system: a job's inputs and its video travel through Redis
(`talkinghead:blob:<id>:<name>`), its state is a hash (`talkinghead:job:<id>`) that the API reads,
and RQ carries the job ids. Each worker is an RQ SimpleWorker that keeps one job runner child
(models stay loaded between jobs). A worker that dies mid-job leaves its RQ job to RQ's
abandoned-job handling; the API then reports the job failed, never done without a video.
Finished jobs expire after the retention time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from talkinghead.serve.executor import Executor, JobFailed
from talkinghead.serve.local import OUTPUT, Staging, public, run_job
from talkinghead.serve.options import JobSpec

QUEUE = "talkinghead"
PREFIX = "talkinghead"
_worker_state: dict[str, Any] = {}


def _connect(url: str):
    import redis

    return redis.Redis.from_url(url)


def _key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def _blob(job_id: str, name: str) -> str:
    return f"{PREFIX}:blob:{job_id}:{name}"


class RedisBackend(Staging):
    def __init__(self, url: str, data: str | Path, job_timeout: float = 600.0,
                 retention: float = 86400.0) -> None:
        from rq import Queue

        self.url, self.redis = url, _connect(url)
        self.queue = Queue(QUEUE, connection=self.redis)
        self.data, self.job_timeout, self.retention = Path(data), job_timeout, retention
        (self.data / "tmp").mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.redis.ping()                     # fail at start-up, not on the first request

    def stop(self) -> None:
        self.redis.close()

    def submit(self, spec: JobSpec, staged: Path) -> str:
        job_id = uuid.uuid4().hex
        pipe = self.redis.pipeline()
        for name in spec.inputs.values():
            pipe.set(_blob(job_id, name), (staged / name).read_bytes(), ex=int(self.retention))
        pipe.hset(_key(job_id), mapping={
            "id": job_id, "kind": spec.kind, "status": "queued", "progress": 0, "spec":
            json.dumps(spec.to_json()), "created": time.time(), "timeout": self.job_timeout,
            "retention": self.retention})
        pipe.execute()
        self.queue.enqueue("talkinghead.serve.redis_queue.process", job_id, job_id=job_id,
                           job_timeout=int(self.job_timeout) + 120, result_ttl=0,
                           failure_ttl=int(self.retention))
        shutil.rmtree(staged, ignore_errors=True)
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        h = {k.decode(): v.decode() for k, v in self.redis.hgetall(_key(job_id)).items()}
        if not h:
            return None
        if h["status"] in ("queued", "running") and self._lost(job_id):
            _finish(self.redis, job_id, "failed", "the worker running this job was lost")
            return self.get(job_id)
        row = {k: h.get(k) or None for k in ("id", "kind", "status", "error", "timings")}
        for k in ("progress", "created", "started", "finished"):
            row[k] = float(h[k]) if h.get(k) not in (None, "") else None
        return public(row)

    def _lost(self, job_id: str) -> bool:
        """RQ gave up on the job (its worker died, or it ran past RQ's timeout)."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            status = Job.fetch(job_id, connection=self.redis).get_status()
        except NoSuchJobError:
            return True
        return str(getattr(status, "value", status)) in ("failed", "stopped", "canceled")

    def video(self, job_id: str) -> bytes | None:
        return self.redis.get(_blob(job_id, OUTPUT))          # None once expired

    def pending(self) -> int:
        return self.queue.count

    def delete(self, job_id: str) -> bool:
        from rq.job import Job

        keys = [_key(job_id)] + [k for k in self.redis.scan_iter(_blob(job_id, "*"))]
        gone = self.redis.delete(*keys) > 0
        try:
            Job.fetch(job_id, connection=self.redis).cancel()
        except Exception:   # already finished or gone: nothing to cancel
            pass
        return gone


def _finish(r, job_id: str, status: str, error: str | None = None,
            timings: dict | None = None) -> None:
    fields = {"status": status, "finished": time.time(), "error": error or "",
              "timings": json.dumps(timings) if timings else ""}
    if status == "done":
        fields["progress"] = 1.0
    if r.exists(_key(job_id)):
        r.hset(_key(job_id), mapping=fields)
        ttl = int(float(r.hget(_key(job_id), "retention") or 86400))
        r.expire(_key(job_id), ttl)


def process(job_id: str) -> None:
    """The RQ job: fetch inputs from Redis, run them through this worker's runner, store the video."""
    r, ex = _worker_state["redis"], _worker_state["executor"]
    raw = r.hget(_key(job_id), "spec")
    if raw is None:                       # deleted while queued
        return
    spec = JobSpec.from_json(json.loads(raw))
    timeout = min(float(r.hget(_key(job_id), "timeout") or 600), _worker_state["timeout"])
    r.hset(_key(job_id), mapping={"status": "running", "started": time.time(), "progress": 0,
                                  "worker": _worker_state["name"]})
    folder = Path(tempfile.mkdtemp(prefix="talkinghead-job-"))
    try:
        for name in spec.inputs.values():
            data = r.get(_blob(job_id, name))
            if data is None:
                raise JobFailed("inputs expired before the job ran")
            (folder / name).write_bytes(data)
        timings = run_job(ex, folder, spec, timeout,
                          lambda p: r.hset(_key(job_id), "progress", p))
        ttl = int(float(r.hget(_key(job_id), "retention") or 86400))
        r.set(_blob(job_id, OUTPUT), (folder / OUTPUT).read_bytes(), ex=ttl)
        _finish(r, job_id, "done", timings=timings)
    except JobFailed as e:
        _finish(r, job_id, "failed", str(e))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_worker(url: str, job_timeout: float = 600.0, threads: int = 0, burst: bool = False,
               name: str | None = None) -> None:
    """An RQ worker on the `talkinghead` queue; runs until stopped (or the queue is empty with burst)."""
    from rq import Queue, SimpleWorker

    r = _connect(url)
    _worker_state.update(redis=r, executor=Executor(threads), timeout=job_timeout)
    try:
        worker = SimpleWorker([Queue(QUEUE, connection=r)], connection=r, name=name)
        _worker_state["name"] = worker.name
        worker.work(burst=burst, with_scheduler=False)
    finally:
        _worker_state["executor"].close()
