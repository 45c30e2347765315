"""The daemon's connection to the policy server, on its own thread so the control loop never waits.

`submit` hands over one observation (it is dropped, with a False return, while a request is still
in flight); `poll` returns finished replies. The thread owns the `PolicyClient`: when the server is
gone (killed, network down) it reconnects with a capped backoff, and every failure comes back as a
`Reply` with `error` set so the loop can log it and ask again.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from real_robot.client import PolicyClient, PolicyError

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The link is shutting down while waiting for a connection."""


class StaleObservation(Exception):
    """The observation aged past use while the link was reconnecting."""


class OtherPolicy(Exception):
    """The server came back serving another policy than the one the daemon was set up for."""


@dataclass(frozen=True)
class Reply:
    tick: int  # the tick whose observation was sent
    obs_time: float  # monotonic time of that observation
    actions: np.ndarray | None  # (C, action_dim), None on error
    error: str | None
    round_trip_s: float
    server_timing: dict[str, float] | None = None


class PolicyLink:
    def __init__(self, connect: Callable[[], PolicyClient], backoff_s: tuple[float, float] = (0.05, 1.0),
                 max_obs_age_s: float = 0.5):
        self._connect = connect
        self._max_obs_age_s = max_obs_age_s
        self._backoff = backoff_s
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._replies: queue.Queue = queue.Queue()
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._client: PolicyClient | None = None
        self.metadata: dict[str, Any] = {}
        # set when a reconnection found other metadata (another checkpoint, action scale, rate, cameras ...): the
        # loop was built for the first; every request fails from then on and the daemon stops for an operator
        self.fatal: str | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-link", daemon=True)

    def start(self, wait_s: float | None = None) -> None:
        """Start the thread; with `wait_s`, wait that long for the first connection (metadata)."""
        self._thread.start()
        if wait_s is not None and not self.connected.wait(wait_s):
            raise TimeoutError(f"policy server not reachable within {wait_s} s")

    @property
    def in_flight(self) -> bool:
        return self._busy.is_set()

    def submit(self, tick: int, obs_time: float, obs: dict[str, Any]) -> bool:
        if self._busy.is_set():
            return False
        self._busy.set()
        self._requests.put((tick, obs_time, obs))
        return True

    def poll(self) -> list[Reply]:
        out = []
        while True:
            try:
                out.append(self._replies.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        self._thread.join(2.0)  # a recv stuck on a dead network ends at the client's timeout; the thread is a daemon
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken connection may raise; nothing left to do with it
                pass

    def _ensure_client(self) -> PolicyClient:
        if self.fatal is not None:
            raise OtherPolicy(self.fatal)
        delay, last_error = self._backoff[0], ""
        while self._client is None and not self._stop.is_set():
            try:
                client = self._connect()
                metadata = dict(client.metadata)
                if self.connected.is_set() and metadata != self.metadata:
                    client.close()
                    changed = sorted(k for k in set(metadata) | set(self.metadata)
                                     if metadata.get(k) != self.metadata.get(k))
                    self.fatal = (f"the policy server came back serving another policy ({', '.join(changed)} "
                                  f"changed, e.g. {changed[0]}: {self.metadata.get(changed[0])!r} -> "
                                  f"{metadata.get(changed[0])!r}); the daemon was set up for the first: restart it")
                    log.error(self.fatal)
                    raise OtherPolicy(self.fatal)
                self._client, self.metadata = client, metadata
                self.connected.set()
                log.info("connected to the policy server: %s", self.metadata)
            except OtherPolicy:
                raise
            except Exception as err:  # refused, reset, handshake or auth errors: report once, retry
                message = f"{type(err).__name__}: {err}"
                if message != last_error:
                    log.warning("policy server not reachable (retrying): %s", message)
                    last_error = message
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
        if self._client is None:
            raise _Stopped()
        return self._client

    def _run(self) -> None:
        try:
            self._ensure_client()
        except (_Stopped, OtherPolicy):
            return
        while not self._stop.is_set():
            item = self._requests.get()
            if item is None:
                return
            tick, obs_time, obs = item
            started = time.monotonic()
            try:
                client = self._ensure_client()
                if time.monotonic() - obs_time > self._max_obs_age_s:
                    raise StaleObservation(f"observation of tick {tick} is {time.monotonic() - obs_time:.2f} s old "
                                           "by the time it could be sent; dropped")
                reply = client.infer(obs)
                actions = np.asarray(reply["actions"], dtype=np.float64)
                result = Reply(tick, obs_time, actions, None, time.monotonic() - started, reply.get("server_timing"))
            except PolicyError as err:  # the server answered with an error: the connection is still good
                result = Reply(tick, obs_time, None, f"server error: {err}", time.monotonic() - started)
            except (StaleObservation, OtherPolicy) as err:
                result = Reply(tick, obs_time, None, str(err), time.monotonic() - started)
            except _Stopped:
                return
            except Exception as err:  # closed socket, timeout, bad reply: drop the connection and reconnect
                result = self._drop(tick, obs_time, started, err)
            self._replies.put(result)
            self._busy.clear()

    def _drop(self, tick: int, obs_time: float, started: float, err: Exception) -> Reply:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # already broken
                pass
        self._client = None
        return Reply(tick, obs_time, None, f"{type(err).__name__}: {err}", time.monotonic() - started)
