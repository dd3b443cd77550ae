"""Shared fixtures. ROS: every test gets a DDS domain of its own, and discovery stays on localhost."""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports rclpy: DDS discovery never leaves this machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Camera-sized frames over shared memory, in the test process and the nodes it starts (config/fastdds.xml).
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(Path(__file__).resolve().parents[1] / "config" / "fastdds.xml"))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ["HF_HUB_OFFLINE"] = "1"

TEST_DIR = Path(__file__).resolve().parent
# Nodes written for tests (test/support) must import in the node processes a test starts.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_DIR), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(TEST_DIR))

# Fast DDS derives its ports from the domain id; 1..90 stay in the safe range (0..101) and leave
# 91..101 to interactive runs (the Makefile uses 95 unless ROS_DOMAIN_ID is set).
DOMAIN_IDS = range(1, 91)


@pytest.fixture
def ros_domain(monkeypatch):
    """A DDS domain id no other test on this machine holds (parallel runs included), set in the env."""
    lock_dir = Path(tempfile.gettempdir()) / "pixelvla_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    start = os.getpid() % len(DOMAIN_IDS)
    for offset in range(len(DOMAIN_IDS)):
        domain = DOMAIN_IDS[(start + offset) % len(DOMAIN_IDS)]
        handle = open(lock_dir / f"{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        try:
            yield domain
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    pytest.fail("no free ROS domain id (1..90): too many ROS tests run at once on this machine")


@pytest.fixture
def ros_node(ros_domain):
    """An rclpy context + node in the test process, on the test's domain, with an executor to spin."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from support import Probe

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    node = rclpy.create_node("test_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    probe = Probe(node, executor)
    try:
        yield probe
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
