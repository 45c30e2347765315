"""The policy server as a real subprocess on loopback: actions equal local inference, health
endpoint, API-key rules, and a fuzz of malformed/oversized/truncated messages that it survives."""
import os
import select
import subprocess
import sys
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from real_robot.client import PolicyClient, PolicyError
from real_robot.server import PolicyServer
from real_robot.wire import WireError, pack
from vla.checkpoint import load_policy, norm_specs, save_policy
from vla.config import ExperimentConfig, merge
from vla.model import Policy
from vla.normalize import Normalizer, compute_stats

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.manual_seed(0)
    cfg = merge(ExperimentConfig(), {"backbone": {"image_size": 32}, "head": {"chunk_size": 4}, "data": {"fps": 20}})
    rng = np.random.default_rng(0)
    stats = {"action": compute_stats(rng.normal(size=(100, 7)), "action"), "state": compute_stats(rng.normal(size=(100, 8)), "state")}
    ckpt = tmp_path_factory.mktemp("ckpt") / "policy"
    save_policy(Policy(cfg, Normalizer(stats, norm_specs(cfg)), 8).eval(), ckpt)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vla.cli", "serve", "--ckpt", str(ckpt), "--port", "0"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = None
    while port is None:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "server did not start"
        line = proc.stdout.readline()
        assert line, "server exited"
        if line.startswith("[serve]"):
            port = int(line.split(":")[-1].split()[0])
    yield ckpt, port
    proc.kill()
    proc.wait()


def _obs(seed=0):
    g = np.random.default_rng(seed)
    return {"observation/image": g.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": g.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "observation/state": g.normal(size=8).astype(np.float32), "prompt": "put the bowl on the plate"}


def test_served_actions_equal_local_inference_and_health_answers(served):
    ckpt, port = served
    client = PolicyClient(port=port)
    assert client.metadata["chunk_size"] == 4 and client.metadata["cameras"] == ["agentview", "wrist"]
    # what the actions mean: the daemon executes them at this scale (LIBERO's for a LIBERO checkpoint)
    assert client.metadata["sim"] == "libero"
    assert client.metadata["action_scale"] == {"meters": 0.05, "radians": 0.5}
    assert client.metadata["control_hz"] == 20  # the rate of the data it was trained on: the daemon acts at it
    assert client.metadata["image_size"] == 128  # its training images' size: the daemon sends frames at it
    reply = client.infer(_obs())
    local = load_policy(ckpt)
    o = _obs()
    images = torch.from_numpy(np.stack([o["observation/image"], o["observation/wrist_image"]]))[None]
    expected = local.act(images, torch.from_numpy(o["observation/state"])[None], [o["prompt"]])[0]
    assert reply["actions"].shape == (4, 7) and reply["actions"].dtype == np.float32
    assert np.allclose(reply["actions"], expected, atol=1e-5)
    assert reply["server_timing"]["infer_ms"] > 0
    client.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status == 200


def test_server_survives_malformed_truncated_and_oversized_messages(served):
    _, port = served
    client = PolicyClient(port=port)
    rng = np.random.default_rng(1)
    bad = [rng.bytes(int(n)) for n in rng.integers(1, 2000, 30)]  # random bytes
    full = pack(_obs())
    bad += [full[: int(k)] for k in rng.integers(1, len(full) - 1, 10)]  # truncated
    bad += [msgpack.packb([1, 2, 3]), msgpack.packb({"x": {b"__ndarray__": True, b"data": b"1", b"dtype": "|O", b"shape": [1]}}),
            pack({**_obs(), "observation/state": np.full(8, np.nan, np.float32)}), pack({"prompt": "no images"}),
            pack({**_obs(), "observation/image": np.zeros((224, 224), np.uint8)})]
    for data in bad:
        reply = client.send_raw(data)
        assert "error" in reply and "actions" not in reply
    with pytest.raises(PolicyError, match="observation lacks"):
        client.infer({"prompt": "x", "observation/state": np.zeros(8, np.float32)})
    assert client.infer(_obs(2))["actions"].shape == (4, 7)  # the same connection still works
    with pytest.raises(Exception):  # over the 16 MiB limit: only this connection is closed
        client.send_raw(b"\x00" * (17 * 1024 * 1024))
    other = PolicyClient(port=port)
    assert other.infer(_obs(3))["actions"].shape == (4, 7)
    other.close()


def test_non_loopback_needs_an_api_key_and_a_wrong_key_is_rejected():
    with pytest.raises(ValueError, match="API key"):
        PolicyServer(lambda obs: {}, host="0.0.0.0")
    PolicyServer(lambda obs: {}, host="0.0.0.0", api_key="k")  # allowed with a key
    # a keyed server (in a thread, on loopback) turns away clients without the right key
    import asyncio
    import threading

    ports = []
    ready = threading.Event()
    server = PolicyServer(lambda obs: {"actions": np.zeros((1, 7), np.float32)}, port=0, api_key="secret")
    threading.Thread(target=lambda: asyncio.run(server.serve(lambda p: (ports.append(p), ready.set()))), daemon=True).start()
    assert ready.wait(30)
    for key in (None, "wrong"):
        with pytest.raises(Exception, match="401"):
            PolicyClient(port=ports[0], api_key=key)
    client = PolicyClient(port=ports[0], api_key="secret")
    assert client.infer({"prompt": "x"})["actions"].shape == (1, 7)
    client.close()
    with pytest.raises(WireError):
        pack({"x": np.array([object()])})
