"""How the sweep scores episodes whose env fails, with a scripted stand-in for the env worker: an env that
refuses the policy's steps every time is a failure of that episode (not left out of the success rate), an
env that cannot reset is retried and reported as an error, never the end of the sweep."""
import math
import types

import numpy as np

import vla.eval.sweep as sweep
from sim.worker import EnvError
from vla.eval.report import summarize_rows
from vla.eval.sweep import Protocol, read_results, run_sweep



class ScriptedWorker:
    """Episodes of init state i succeed at step 3 when i is even; a non-finite action is refused as LIBERO
    refuses it; reset raises for init states in `broken_resets`."""
    broken_resets: set[int] = set()

    def __init__(self, image_size, step_timeout_s):
        self.image_size = image_size

    def reset(self, spec, init_state, record):
        if init_state in self.broken_resets:
            raise EnvError(f"RuntimeError: init state {init_state} out of range")
        self.init_state, self.t = init_state, 0
        return {"instruction": "task", "max_steps": 6}

    def send(self, message):
        self.message = message

    def receive(self):
        if self.message["cmd"] == "step":
            if not all(math.isfinite(v) for v in self.message["action"]):
                raise EnvError("ValueError: action has non-finite values")
            self.t += 1
            return {"ok": True, "reward": 0.0, "done": self.init_state % 2 == 0 and self.t == 3}
        return {"ok": True}

    def observation(self):
        state = np.zeros(8, np.float32)
        state[0] = self.init_state
        return np.zeros((2, self.image_size, self.image_size, 3), np.uint8), state

    def restart(self):
        pass

    def close(self):
        pass


class OddStatesDiverge:
    """A policy that answers NaN on odd init states (read from the state's first number)."""
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(cameras=["agentview"]))

    def act(self, images, states, instructions, noise):
        chunks = np.zeros((len(instructions), 4, 7), np.float32)
        chunks[states[:, 0].numpy() % 2 == 1] = np.nan
        return chunks


def _sweep(monkeypatch, tmp_path, broken_resets=()):
    monkeypatch.setattr(sweep, "EnvWorker", ScriptedWorker)
    monkeypatch.setattr(sweep.sim, "check_episode_range", lambda *args: None)  # no LIBERO init-state files here
    monkeypatch.setattr(ScriptedWorker, "broken_resets", set(broken_resets))
    run_sweep(OddStatesDiverge(), {"libero_spatial": [0]}, tmp_path, Protocol(episodes_per_task=4, videos_per_outcome=0),
              workers=2, sim_name="libero", progress=False)
    return read_results(tmp_path)


def test_an_env_that_refuses_the_policys_steps_is_that_episodes_failure(monkeypatch, tmp_path):
    rows = _sweep(monkeypatch, tmp_path)
    summary = summarize_rows(list(rows.values()))
    assert summary["episodes"] == 4 and summary["successes"] == 2 and summary["errors"] == 0
    assert summary["env_errors"] == 2 and summary["success_rate"] == 0.5  # not 2/2
    odd = rows["libero_spatial/0/1"]
    assert odd["success"] is False and "non-finite" in odd["env_error"] and odd["attempts"] == sweep.MAX_ATTEMPTS


def test_an_env_that_cannot_reset_is_retried_then_an_error_and_the_sweep_goes_on(monkeypatch, tmp_path):
    rows = _sweep(monkeypatch, tmp_path, broken_resets={2})
    assert rows["libero_spatial/0/2"]["status"] == "error" and rows["libero_spatial/0/2"]["attempts"] == sweep.MAX_ATTEMPTS
    assert rows["libero_spatial/0/0"]["success"] is True and len(rows) == 4


def test_episodes_beyond_a_libero_tasks_init_states_are_refused_before_anything_runs(monkeypatch):
    import pytest

    import sim

    monkeypatch.setattr(sim, "num_init_states", lambda name, suite, task: 50)
    with pytest.raises(ValueError, match=r"init states 30..79, but libero_spatial task 0 has 50"):
        sim.check_episode_range("libero", "libero_spatial", 0, 30, 50)
    sim.check_episode_range("libero", "libero_spatial", 0, 30, 20)
    sim.check_episode_range("maniskill", "maniskill", 0, 30, 500)  # ManiSkill's indices are seeds
