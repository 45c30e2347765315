"""Policy server: websocket + msgpack-numpy, speaking openpi's protocol.

On connect the server sends its metadata; then every message is an observation dict and every
reply an action dict `{"actions": (chunk, action_dim) float32, "server_timing": {...}}`. An openpi
LIBERO client's keys are understood (`observation/image`, `observation/wrist_image`,
`observation/state`, `prompt`). A malformed, truncated or wrongly typed message gets
`{"error": "..."}` back and the connection stays usable; an oversized one closes only that
connection (websockets' max_size). `GET /healthz` answers 200. The server binds to 127.0.0.1 and
refuses any other address without an API key, which clients send as `Authorization: Api-Key <key>`.
"""
from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import websockets.asyncio.server as ws_server

from real_robot.wire import WireError, pack, unpack

log = logging.getLogger(__name__)
OPENPI_CAMERA_KEYS = {"agentview": "observation/image", "wrist": "observation/wrist_image"}
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def policy_infer(policy) -> Callable[[dict], dict]:
    """Adapt a `vla.model.Policy` to observation dicts in openpi's LIBERO layout."""
    import torch

    cameras = list(policy.cfg.data.cameras)

    def infer(obs: dict) -> dict:
        missing = [OPENPI_CAMERA_KEYS.get(c, c) for c in cameras if OPENPI_CAMERA_KEYS.get(c, c) not in obs]
        if "prompt" not in obs or not isinstance(obs["prompt"], str):
            missing.append("prompt (str)")
        if "observation/state" not in obs and policy.state_dim > 0:
            missing.append("observation/state")
        if missing:
            raise ValueError(f"observation lacks {missing}; it has {sorted(obs)}")
        images = [np.asarray(obs[OPENPI_CAMERA_KEYS.get(c, c)]) for c in cameras]
        for cam, img in zip(cameras, images):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
                raise ValueError(f"camera {cam}: expected uint8 (H, W, 3) with H, W >= 1, got {img.dtype} {img.shape}")
        if len({img.shape for img in images}) != 1:
            raise ValueError(f"cameras must share one size, got {[img.shape for img in images]}")
        if policy.state_dim == 0:  # trained without state (data.use_state=false): a client's state is ignored
            state = np.zeros(0, dtype=np.float32)
        else:
            state = np.asarray(obs["observation/state"], dtype=np.float32)
            if state.shape != (policy.state_dim,) or not np.all(np.isfinite(state)):
                raise ValueError(f"observation/state must be {policy.state_dim} finite numbers, got {state.shape}")
        chunk = policy.act(torch.from_numpy(np.stack(images))[None], torch.from_numpy(state)[None], [obs["prompt"]])
        return {"actions": chunk[0].astype(np.float32)}

    return infer


class PolicyServer:
    def __init__(self, infer: Callable[[dict], dict], host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, metadata: dict | None = None):
        if not _is_loopback(host) and not api_key:
            raise ValueError(f"refusing to serve on non-loopback address {host!r} without an API key (--api-key)")
        self.infer, self.host, self.port = infer, host, port
        self.api_key, self.metadata = api_key, metadata or {}
        # one inference at a time, always on the same thread: the model is not re-entrant, and torch's
        # OpenMP thread team is per calling thread (a rotating pool would build several)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")

    def _timed_infer(self, obs: dict) -> tuple[dict, float]:
        started = time.perf_counter()
        reply = self.infer(obs)
        return reply, (time.perf_counter() - started) * 1000

    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    async def _handle(self, websocket) -> None:
        await websocket.send(pack(self.metadata))
        async for message in websocket:
            received = time.perf_counter()
            try:
                if not isinstance(message, bytes):
                    raise WireError("expected a binary msgpack message, got text")
                obs = unpack(message)
                if not isinstance(obs, dict):
                    raise WireError(f"expected a map of observations, got {type(obs).__name__}")
                reply, infer_ms = await asyncio.get_running_loop().run_in_executor(self._executor, self._timed_infer, obs)
                reply = dict(reply)
                reply["server_timing"] = {"infer_ms": infer_ms, "server_ms": (time.perf_counter() - received) * 1000}
                await websocket.send(pack(reply))
            except (WireError, ValueError, KeyError, TypeError) as err:
                log.warning("bad request from %s: %s", websocket.remote_address, err)
                await websocket.send(pack({"error": f"{type(err).__name__}: {err}"}))

    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        async with ws_server.serve(self._handle, self.host, self.port, process_request=self._process_request,
                                   max_size=MAX_MESSAGE_BYTES, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            log.info("policy server on ws://%s:%d", self.host, port)
            if ready:
                ready(port)
            await server.serve_forever()


def run(infer: Callable[[dict], dict], host: str, port: int, api_key: str | None, metadata: dict[str, Any]) -> None:
    server = PolicyServer(infer, host, port, api_key, metadata)
    asyncio.run(server.serve(lambda p: print(f"[serve] ws://{host}:{p} ready", flush=True)))
