"""An exclusive lock on an output folder, with stale-lock detection."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from compressctl.errors import LockedError

LOCK_NAME = ".compressctl.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """``with OutputLock(folder):`` — a second run on the same folder fails at once (or waits)."""

    def __init__(self, folder: Path, wait: float = 0.0) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.wait = wait
        self.held = False

    def describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("time", 0)))
            return f"pid {info.get('pid')} on {info.get('host')} since {since}"
        except (OSError, ValueError):
            return "another run"

    def _is_stale(self) -> bool:
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            # Half-written by a run that just started: give it a moment before judging.
            return time.time() - self.path.stat().st_mtime > 10 if self.path.exists() else True
        return info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1)))

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._is_stale():
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"output folder {self.path.parent} is locked by {self.describe_holder()} "
                        f"(lock file {self.path}); wait for that run, or pass --wait"
                    ) from None
                time.sleep(0.5)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
