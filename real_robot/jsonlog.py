"""Structured logs for the daemon: one JSON object per line (wall time, monotonic time, event, fields),
to stdout (journald under systemd) and optionally to a file. Thread-safe; values that JSON cannot
hold (numpy numbers and arrays) are converted, never dropped."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class JsonLog:
    def __init__(self, path: Path | None = None, stream: IO[str] | None = sys.stdout):
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1) if path else None  # line-buffered: a crash loses nothing
        self._stream = stream
        self.counts: dict[str, int] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 4), "mono": round(time.monotonic(), 4), "event": event, **fields},
                          default=_plain)
        with self._lock:
            self.counts[event] = self.counts.get(event, 0) + 1
            for out in (self._file, self._stream):
                if out is not None:
                    out.write(line + "\n")
            if self._stream is not None:
                self._stream.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
