"""Which suites, tasks and simulator a sweep runs: resolved from the simulators' own tables without
starting a simulator (ManiSkill's task table is plain data; LIBERO's suite list is its MAX_STEPS)."""
import json
import subprocess
import sys

import pytest

from vla.checkpoint import CONFIG
from vla.cli import main
from vla.config import ExperimentConfig, merge, to_dict
from vla.eval.sweep import FULL_SWEEP, resolve_suites, run_sweep, sweep_sim


def test_maniskill_suite_resolves_to_its_task_table_by_id_or_name():
    from sim.maniskill import TASKS

    assert resolve_suites("maniskill") == {"maniskill": list(range(len(TASKS)))} == {"maniskill": [0, 1, 2, 3, 4]}
    # ids, env ids and bare names; a task named twice runs once
    assert resolve_suites("maniskill", [3, "PickCube-v1", "PushCube", 0]) == {"maniskill": [3, 0, 2]}
    assert sweep_sim(resolve_suites("maniskill")) == "maniskill"
    assert FULL_SWEEP == {"libero": "libero_130", "maniskill": "maniskill"}
    # resolving never imports the simulator (checked in a fresh interpreter: other tests import it in this one)
    probe = "import sys; from vla.eval.sweep import resolve_suites; resolve_suites('maniskill'); print('mani_skill' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("spec, tasks, message", [
    ("maniskill", [5], r"ManiSkill task index 5 out of range \(0..4\)"),
    ("maniskill", ["OpenDrawer"], "(?s)unknown ManiSkill task 'OpenDrawer'.*0: PickCube-v1"),
    ("libero_7", None, "unknown suite.*valid: libero_130, libero_spatial.*maniskill"),
    ("libero_spatial,maniskill", None, "belong to libero and maniskill; one sweep runs in one simulator"),
    (",", None, "unknown suite"),
])
def test_bad_suites_and_tasks_are_refused_with_the_valid_ones(spec, tasks, message):
    with pytest.raises(ValueError, match=message):
        resolve_suites(spec, tasks)


def test_the_suites_pick_the_simulator_and_a_contradicting_one_is_refused(tmp_path):
    assert sweep_sim(["libero_spatial", "libero_10"]) == "libero"
    with pytest.raises(ValueError, match="are maniskill suites; they cannot run with sim_name='libero'"):
        sweep_sim(["maniskill"], "libero")
    # run_sweep checks before it creates anything
    with pytest.raises(ValueError, match="are libero suites"):
        run_sweep(None, {"libero_spatial": [0]}, tmp_path / "out", sim_name="maniskill")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sim_name, suite, hint", [("maniskill", "libero_spatial", "use --suite maniskill"),
                                                    ("libero", "maniskill", "use --suite libero_130")])
def test_cli_refuses_a_suite_of_another_simulator_than_the_checkpoints(tmp_path, capsys, sim_name, suite, hint):
    (tmp_path / CONFIG).write_text(json.dumps(to_dict(merge(ExperimentConfig(), {"sim": sim_name}))))
    assert main(["sweep", "--ckpt", str(tmp_path), "--suite", suite, "--tasks", "0"]) == 2
    err = capsys.readouterr().err
    assert f"trained in SIM={sim_name}" in err and hint in err
