"""Make hf-libero importable without prompts or network: config yaml, assets, MuJoCo GL backend.

Call `ensure_libero_ready()` before importing anything from `libero.libero`: that package's
`__init__` calls `input()` when its config yaml is missing (EOFError without a tty), and hf-libero
downloads the scene assets from the HF hub when `<site-packages>/libero/libero/assets` is missing.

`python -m sim.libero_setup` does the same and prints what it did (used by the install script).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")
DEFAULT_CONFIG_DIR = Path("~/.cache/vla/libero_config").expanduser()
ASSETS_ENV_VAR = "VLA_LIBERO_ASSETS"
ARCHIVE_NAME = "libero_assets.tar.zst"
# The repo's parent holds a `shared/` folder with the archive on the dev machines.
SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / ARCHIVE_NAME
# A few top-level asset folders every LIBERO scene needs; used to tell a complete unpack from a stub.
_ASSET_SUBDIRS = ("scenes", "articulated_objects", "stable_scanned_objects", "turbosquid_objects")

_ready = False


def libero_package_dir() -> Path:
    """`<site-packages>/libero/libero`, found without running its prompting `__init__`."""
    # find_spec of a submodule imports the parent (`libero`, an empty __init__) but not the submodule.
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LIBERO is not installed: `pip install hf-libero==0.1.4 'mujoco<3.9'`")
    return Path(list(spec.submodule_search_locations)[0])


def _config_dict(pkg: Path) -> dict[str, str]:
    # Same layout as libero.libero.get_default_path_dict(), which we cannot call without the prompt.
    return {
        "benchmark_root": str(pkg),
        "bddl_files": str(pkg / "bddl_files"),
        "init_states": str(pkg / "init_files"),
        "datasets": str(pkg.parent / "datasets"),
        "assets": str(pkg / "assets"),
    }


def _config_problem(config_file: Path) -> str | None:
    """Why an existing config yaml is unusable, or None if it is fine."""
    try:
        config = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError) as e:
        return f"cannot be read ({e})"
    if not isinstance(config, dict):
        return "is not a mapping"
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        return f"lacks keys {missing}"
    for key in ("bddl_files", "init_states"):
        if not Path(str(config[key])).is_dir():
            return f"points {key} at {config[key]}, which does not exist (stale install?)"
    return None


def _ensure_config(pkg: Path) -> str:
    user_chose = "LIBERO_CONFIG_PATH" in os.environ
    config_dir = Path(os.environ.setdefault("LIBERO_CONFIG_PATH", str(DEFAULT_CONFIG_DIR))).expanduser()
    config_file = config_dir / "config.yaml"
    if config_file.exists():
        problem = _config_problem(config_file)
        if problem is None:
            return f"LIBERO config: kept {config_file}"
        if user_chose and config_dir != DEFAULT_CONFIG_DIR:
            # A config the user placed themselves: do not overwrite it behind their back.
            raise RuntimeError(
                f"LIBERO config {config_file} (from $LIBERO_CONFIG_PATH) {problem}. Fix or delete it, "
                f"or unset LIBERO_CONFIG_PATH to use {DEFAULT_CONFIG_DIR}."
            )
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(_config_dict(pkg)))
    os.replace(tmp, config_file)  # atomic: a concurrent reader never sees half a file
    return f"LIBERO config: wrote {config_file}"


def _assets_complete(assets: Path) -> bool:
    return all((assets / d).is_dir() for d in _ASSET_SUBDIRS)


def _find_archive() -> Path | None:
    chosen = os.environ.get(ASSETS_ENV_VAR)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file() or not path.name.endswith(".tar.zst"):
            raise FileNotFoundError(f"${ASSETS_ENV_VAR}={chosen} is not an existing .tar.zst file")
        return path
    return SHARED_ARCHIVE if SHARED_ARCHIVE.is_file() else None


def _unpack(archive: Path, pkg: Path) -> None:
    if shutil.which("zstd") is None or shutil.which("tar") is None:
        raise RuntimeError(f"unpacking {archive} needs the `zstd` and `tar` programs (apt-get install zstd)")
    target = pkg / "assets"
    # Unpack beside the target (same filesystem) so the final rename is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=".assets-unpack-", dir=pkg))
    try:
        zstd = subprocess.Popen(["zstd", "-dc", str(archive)], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=zstd.stdout, capture_output=True)
        assert zstd.stdout is not None
        zstd.stdout.close()
        if zstd.wait() != 0 or tar.returncode != 0:
            raise RuntimeError(f"unpacking {archive} failed: {tar.stderr.decode(errors='replace').strip()}")
        unpacked = tmp / "assets"
        if not _assets_complete(unpacked):
            raise RuntimeError(f"{archive} has no complete assets/ folder (expected {list(_ASSET_SUBDIRS)})")
        try:
            os.rename(unpacked, target)
        except OSError:
            if not _assets_complete(target):  # lost a race to another process: fine if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_assets(pkg: Path) -> str:
    target = pkg / "assets"
    if target.exists():
        if not _assets_complete(target):
            raise RuntimeError(
                f"LIBERO assets folder {target} is incomplete (needs {list(_ASSET_SUBDIRS)}): delete it and rerun "
                "`python -m sim.libero_setup`"
            )
        return f"LIBERO assets: found {target}"
    archive = _find_archive()
    if archive is not None:
        _unpack(archive, pkg)
        return f"LIBERO assets: unpacked {archive} into {target}"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise RuntimeError(
            f"LIBERO assets are missing ({target}) and HF_HUB_OFFLINE is set, so hf-libero cannot download them. "
            f"Put {ARCHIVE_NAME} at {SHARED_ARCHIVE} or point ${ASSETS_ENV_VAR} at it, or unset HF_HUB_OFFLINE."
        )
    return "LIBERO assets: none local; hf-libero will download them from the HF hub at first env creation"


def prepare_libero() -> list[str]:
    """Do the setup steps and return one line per step saying what was done."""
    done = []
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"  # headless; must be set before mujoco/robosuite are imported
        done.append("MUJOCO_GL: set to egl")
    else:
        done.append(f"MUJOCO_GL: kept {os.environ['MUJOCO_GL']}")
    pkg = libero_package_dir()
    done.append(_ensure_config(pkg))
    done.append(_ensure_assets(pkg))
    return done


def ensure_libero_ready() -> None:
    """Idempotent; cheap after the first call in a process."""
    global _ready
    if not _ready:
        prepare_libero()
        _ready = True


def main() -> int:
    try:
        lines = prepare_libero()
    except (ImportError, RuntimeError, FileNotFoundError) as e:
        print(f"LIBERO setup failed: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
