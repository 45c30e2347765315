"""The Ray sweep's driver-side pieces without a cluster: rows stored once, videos capped as in a local
sweep and written before their row, and clear errors for a missing `ray` or contradictory flags."""
import json
import sys

import pytest

from vla.cli import main
from vla.eval.ray_sweep import RaySweepError, _store, import_ray
from vla.eval.sweep import EPISODES_FILE, _open_log, _RowLog, read_results


def _item(init_state: int, video: bool) -> dict:
    name = f"videos/libero_spatial_0_{init_state}_failure.mp4" if video else None
    row = {"key": f"libero_spatial/0/{init_state}", "suite": "libero_spatial", "task": 0, "init_state": init_state,
           "status": "ok", "success": False, "steps": 8, "seconds": 1.0, "attempts": 1, "video": name}
    return {"row": row, "video": b"mp4 bytes" if video else None}


def test_rows_are_stored_once_and_videos_capped_per_task_and_outcome(tmp_path):
    done: dict = {}
    videos: dict = {}
    log = _RowLog(_open_log(tmp_path / EPISODES_FILE), None)
    stored = [_store(_item(i, video=True), tmp_path, log, done, videos, limit=2) for i in range(3)]
    assert stored == [True, True, True]
    assert _store(_item(1, video=True), tmp_path, log, done, videos, limit=2) is False  # a resubmitted shard's repeat
    log.close()
    rows = read_results(tmp_path)
    assert sorted(rows) == [f"libero_spatial/0/{i}" for i in range(3)]
    assert len((tmp_path / EPISODES_FILE).read_text().splitlines()) == 3
    assert [rows[f"libero_spatial/0/{i}"]["video"] is not None for i in range(3)] == [True, True, False]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["libero_spatial_0_0_failure.mp4",
                                                                      "libero_spatial_0_1_failure.mp4"]


def test_a_missing_ray_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RaySweepError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


@pytest.mark.parametrize("flags, message", [(["--ray", "auto", "--shard", "1/2"], "leave out --shard"),
                                            (["--ray-shards", "2"], "--ray-shards needs --ray")])
def test_contradictory_ray_flags_are_refused(tmp_path, capsys, flags, message):
    assert main(["sweep", "--ckpt", str(tmp_path), "--suite", "libero_spatial", *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_protocol_travels_as_plain_json():
    from dataclasses import asdict

    from vla.eval.sweep import Protocol

    assert Protocol(**json.loads(json.dumps(asdict(Protocol())))) == Protocol()
