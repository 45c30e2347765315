"""ManiSkill's GPU simulation set up on a machine that cannot download (no GPU needed to check the message)."""
import pytest


def test_the_gpu_simulation_without_its_physx_library_says_where_it_goes(monkeypatch):
    """SAPIEN fetches libPhysXGpu_64.so from GitHub on first GPU use; offline that was a bare connection error."""
    import requests
    from sapien import physx

    from sim.maniskill import ensure_physx_gpu

    def offline():
        raise requests.ConnectionError("no route to github.com")

    monkeypatch.setattr(physx, "is_gpu_enabled", lambda: False)
    monkeypatch.setattr(physx, "enable_gpu", offline)
    with pytest.raises(RuntimeError, match=r"libPhysXGpu_64.so.*\.sapien/physx/.*ConnectionError.*linux-so.zip"):
        ensure_physx_gpu()
