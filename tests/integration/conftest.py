"""Fixtures shared by the integration tests."""
import pytest


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray cluster started by this process; its address for drivers run as subprocesses."""
    import ray  # here, not at import: `pytest -m "not integration"` collects these files without the ray extra

    info = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()  # stops the cluster this process started
