"""Blocking client for the policy server (and for any openpi-protocol server)."""
from __future__ import annotations

from typing import Any

from websockets.sync.client import connect

from real_robot.wire import pack, unpack


class PolicyError(RuntimeError):
    """The server answered with an error instead of actions."""


class PolicyClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, timeout_s: float = 10.0):
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        # close_timeout: closing a connection whose peer went silent must not stall the caller's shutdown
        self._ws = connect(f"ws://{host}:{port}", additional_headers=headers, max_size=None, compression=None,
                           open_timeout=timeout_s, close_timeout=min(timeout_s, 1.0))
        self.timeout_s = timeout_s
        self.metadata = unpack(self._ws.recv(timeout=timeout_s))

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        self._ws.send(pack(obs))
        reply = unpack(self._ws.recv(timeout=self.timeout_s))
        if "error" in reply:
            raise PolicyError(reply["error"])
        return reply

    def send_raw(self, data: bytes) -> dict[str, Any]:
        """Send bytes as they are (tests: malformed messages)."""
        self._ws.send(data)
        return unpack(self._ws.recv(timeout=self.timeout_s))

    def close(self) -> None:
        self._ws.close()
