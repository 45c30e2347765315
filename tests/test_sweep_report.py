"""Sweep bookkeeping without a simulator: episode planning, shards, the resumable log, reports."""
import json

import pytest

from vla.eval.report import compare, merge_shards, write_report
from vla.eval.sweep import EPISODES_FILE, Protocol, _open_log, plan_episodes, read_results


def test_shards_partition_the_episodes():
    suites = {"libero_spatial": [0, 1], "libero_10": [3]}
    full = plan_episodes(suites, Protocol(episodes_per_task=5))
    assert len(full) == 15 and len({e.key for e in full}) == 15
    shards = [plan_episodes(suites, Protocol(episodes_per_task=5), (i, 4)) for i in range(4)]
    assert sorted(e.key for s in shards for e in s) == sorted(e.key for e in full)
    with pytest.raises(ValueError, match="i/N"):
        plan_episodes(suites, Protocol(), (4, 4))


def _write(out, rows):
    out.mkdir(parents=True, exist_ok=True)
    with (out / EPISODES_FILE).open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _row(task, i, success, steps=50, status="ok"):
    return {"key": f"libero_spatial/{task}/{i}", "suite": "libero_spatial", "task": task, "init_state": i,
            "status": status, "success": success, "steps": steps}


def test_a_line_cut_by_a_kill_is_ignored_and_closed_off(tmp_path):
    _write(tmp_path, [_row(0, 0, True)])
    with (tmp_path / EPISODES_FILE).open("a") as f:
        f.write('{"key": "libero_spatial/0/1", "su')  # SIGKILL mid-write
    assert list(read_results(tmp_path)) == ["libero_spatial/0/0"]
    with _open_log(tmp_path / EPISODES_FILE) as log:
        log.write(json.dumps(_row(0, 1, False)) + "\n")
    assert sorted(read_results(tmp_path)) == ["libero_spatial/0/0", "libero_spatial/0/1"]


def test_report_counts_ci_and_errors(tmp_path):
    rows = [_row(0, i, i < 3) for i in range(4)] + [_row(1, i, False, 220) for i in range(4)]
    rows.append(_row(1, 4, None, None, status="error"))
    _write(tmp_path, rows)
    summary = write_report(tmp_path, {"workers": 2})
    assert summary["overall"]["episodes"] == 8 and summary["overall"]["successes"] == 3
    assert summary["tasks"]["libero_spatial/0"]["success_rate"] == 0.75
    assert summary["tasks"]["libero_spatial/1"]["errors"] == 1
    low, high = summary["tasks"]["libero_spatial/0"]["ci95"]
    assert (low, high) == pytest.approx((0.3006, 0.9544), abs=5e-4)  # the 95% Wilson interval of 3/4
    assert (tmp_path / "suite_libero_spatial.png").stat().st_size > 1000
    assert "| libero_spatial/0 | 75.0% |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "tasks.csv").read_text().splitlines()[1].startswith("libero_spatial,0,4,3,0.7500")
    other = tmp_path / "b"
    _write(other, [_row(0, i, True) for i in range(4)])
    assert "| libero_spatial/0 | 75.0% (3/4) | 100.0% (4/4) | +25.0 pt |" in compare(tmp_path, other)


def test_shard_directories_merge_into_one_report_and_overlaps_are_refused(tmp_path):
    _write(tmp_path / "s0", [_row(0, 0, True), _row(0, 2, False)])
    _write(tmp_path / "s1", [_row(0, 1, True)])
    summary = merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all")
    assert summary["overall"]["episodes"] == 3 and summary["overall"]["successes"] == 2
    _write(tmp_path / "s2", [_row(0, 1, False)])
    with pytest.raises(ValueError, match="more than one shard"):
        merge_shards([tmp_path / "s1", tmp_path / "s2"], tmp_path / "bad")


def test_compare_reads_rl_evaluations_and_tests_the_shared_episodes(tmp_path):
    # an RL evaluation directory: one sweep per scene seed; init state 0 under seed 7 and 8 are two episodes
    before, after = tmp_path / "eval_0000", tmp_path / "eval_0006"
    for seed in (7, 8):
        _write(before / f"seed_{seed}", [_row(0, i, i == 0) for i in range(5)])
        _write(after / f"seed_{seed}", [_row(0, i, i < 4) for i in range(5)])
    table = compare(before, after)
    assert "| overall | 20.0% (2/10, 95% CI" in table and "80.0% (8/10" in table and "+60.0 pt" in table
    assert "Paired on the 10 episodes both ran: 6 failure->success, 0 success->failure, 2 both succeed, 2 both fail" in table
    assert "McNemar p = 0.0312" in table
    other_seed = tmp_path / "eval_other"
    _write(other_seed / "seed_9", [_row(0, i, True) for i in range(5)])
    assert "no paired test" in compare(before, other_seed)
    with pytest.raises(FileNotFoundError, match="no episodes.jsonl and no seed_"):
        compare(before, tmp_path / "missing")


def test_agreement_counts_how_many_evaluations_solved_each_shared_episode(tmp_path):
    from vla.eval.agreement import agreement_table, success_counts

    # episode i succeeds in the runs whose index is below i: 0 never, 3 in all three, the rest in some
    runs = [tmp_path / f"eval_{r}" for r in range(3)]
    for r, run in enumerate(runs):
        _write(run / "seed_7", [_row(0, i, r < i) for i in range(4)] + ([_row(0, 9, True)] if r == 0 else []))
    table = agreement_table(runs)
    assert table.startswith("4 episodes shared by 3 evaluations")  # episode 9 is in one run only: left out
    assert "| none | 1 | 25% |" in table and "| 1 of 3 | 1 | 25% |" in table and "| all | 1 | 25% |" in table
    assert "every run: 2 (1 always solved, 1 never); outcome varies between runs: 2." in table
    with pytest.raises(ValueError, match="at least 2 evaluations"):
        success_counts([{"a": True}])
    with pytest.raises(ValueError, match="share no episode keys"):
        success_counts([{"a": True}, {"b": True}])


def test_wilson_interval_matches_published_values():
    from vla.eval.stats import wilson_interval

    # 95% Wilson score intervals (z = 1.96): 3/4, 19/20 and 0/20 as tabulated (e.g. Newcombe 1998's method 3)
    assert wilson_interval(3, 4) == pytest.approx((0.3006, 0.9544), abs=5e-4)
    assert wilson_interval(19, 20) == pytest.approx((0.7639, 0.9911), abs=5e-4)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-4)
