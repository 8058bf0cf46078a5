"""The parent side of the job runner: one long-lived child process per worker slot.

`Executor.run(request, on_progress, timeout)` sends a job to the child and waits for its answer,
with a deadline: a job over its time is killed with its child (the next job starts a fresh
one). The child dies with its parent (PR_SET_PDEATHSIG), so a killed server leaves no job
running behind its back.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class JobFailed(Exception):
    """A job ended without a video; the message is what the client is told."""

    def __init__(self, message: str, user: bool = False) -> None:
        super().__init__(message)
        self.user = user


def _die_with_parent() -> None:
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Executor:
    def __init__(self, threads: int = 0, start_timeout: float = 120.0) -> None:
        self.threads, self.start_timeout = threads, start_timeout
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.lock = threading.Lock()

    def _start(self) -> None:
        env = dict(os.environ, TALKINGHEAD_SERVE_THREADS=str(self.threads))
        self.proc = subprocess.Popen([sys.executable, "-m", "talkinghead.serve.runner"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, preexec_fn=_die_with_parent)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        msg = self._next(time.monotonic() + self.start_timeout)
        if not msg.get("ready"):
            raise JobFailed("internal error: the job runner did not start")

    @staticmethod
    def _read(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill()
            raise JobFailed("timed out") from None
        if line is None:
            self.kill()
            raise JobFailed("internal error: the job runner exited")
        return json.loads(line)

    def run(self, request: dict[str, Any], on_progress: Callable[[float], None] | None = None,
            timeout: float = 600.0) -> dict[str, Any]:
        """The runner's answer for one job; JobFailed on error, timeout or a dead runner."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            deadline = time.monotonic() + timeout
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            while True:
                try:
                    msg = self._next(deadline)
                except JobFailed as e:
                    if str(e) == "timed out":
                        raise JobFailed(f"timed out after {timeout:g} s") from None
                    raise
                if "progress" in msg:
                    if on_progress is not None:
                        on_progress(msg["progress"])
                    continue
                if not msg["ok"]:
                    raise JobFailed(msg["error"], user=msg.get("user", False))
                return msg

    def kill(self) -> None:
        """Stop the child now (a cancelled or timed-out job); the next run starts a new one."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
