"""sim.libero_setup's asset and config handling on a fake package dir (no LIBERO import, < 1 s)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from sim import libero_setup

SUBDIRS = ("scenes", "articulated_objects", "stable_scanned_objects", "turbosquid_objects")


def _archive(tmp_path, subdirs=SUBDIRS):
    src = tmp_path / "src"
    for d in subdirs:
        (src / "assets" / d).mkdir(parents=True)
        (src / "assets" / d / "x.xml").write_text("<mujoco/>")
    out = tmp_path / "assets.tar.zst"
    subprocess.run(f"tar -C {src} -c assets | zstd -q -o {out}", shell=True, check=True)
    return out


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "libero" / "libero"
    (pkg / "bddl_files").mkdir(parents=True)
    (pkg / "init_files").mkdir()
    monkeypatch.setattr(libero_setup, "libero_package_dir", lambda: pkg)
    monkeypatch.setattr(libero_setup, "SHARED_ARCHIVE", tmp_path / "no_such_archive.tar.zst")
    monkeypatch.setattr(libero_setup, "DEFAULT_CONFIG_DIR", tmp_path / "cfg")
    # setenv first so teardown restores these even though prepare_libero sets them again
    for name in ("LIBERO_CONFIG_PATH", libero_setup.ASSETS_ENV_VAR, "MUJOCO_GL"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    return pkg


needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")


@needs_zstd
def test_unpacks_archive_and_writes_config_once(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv(libero_setup.ASSETS_ENV_VAR, str(_archive(tmp_path)))
    first = libero_setup.prepare_libero()
    assert any("unpacked" in line for line in first) and any("wrote" in line for line in first)
    assert (pkg / "assets" / "scenes" / "x.xml").is_file()
    assert not [p for p in pkg.iterdir() if p.name.startswith(".assets-unpack-")]  # temp dir cleaned up
    config = yaml.safe_load((tmp_path / "cfg" / "config.yaml").read_text())
    assert config["bddl_files"] == str(pkg / "bddl_files") and set(libero_setup.CONFIG_KEYS) == set(config)
    second = libero_setup.prepare_libero()
    assert any("found" in line for line in second) and any("kept" in line for line in second)


@needs_zstd
def test_incomplete_archive_is_rejected(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv(libero_setup.ASSETS_ENV_VAR, str(_archive(tmp_path, subdirs=("scenes",))))
    with pytest.raises(RuntimeError, match="no complete assets"):
        libero_setup.prepare_libero()
    assert not (pkg / "assets").exists()


def test_offline_without_archive_says_where_to_put_it(pkg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="libero_assets.tar.zst"):
        libero_setup.prepare_libero()


def test_online_without_archive_leaves_it_to_the_hub(pkg, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert any("download" in line for line in libero_setup.prepare_libero())


def test_bad_archive_path_and_user_config_are_errors(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv(libero_setup.ASSETS_ENV_VAR, str(tmp_path / "missing.tar.zst"))
    with pytest.raises(FileNotFoundError, match="not an existing .tar.zst"):
        libero_setup.prepare_libero()
    monkeypatch.delenv(libero_setup.ASSETS_ENV_VAR)
    user_cfg = tmp_path / "mine"
    user_cfg.mkdir()
    (user_cfg / "config.yaml").write_text("benchmark_root: /nowhere\n")
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(user_cfg))
    with pytest.raises(RuntimeError, match="lacks keys"):
        libero_setup.prepare_libero()
