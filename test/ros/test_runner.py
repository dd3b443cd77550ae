"""pixelvla-launch starting real nodes: parameters, remaps, shutdown, required nodes, bad input."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from std_msgs.msg import String

from support import start_launch

pytestmark = pytest.mark.ros
CHATTER = str(Path(__file__).parent / "node_sets" / "chatter.nodes.yaml")
CHATTER_EXECUTOR = str(Path(__file__).parent / "node_sets" / "chatter_executor.nodes.yaml")


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    """Wait for the runner to exit; return (code, output, seconds waited). Kills it on timeout."""
    start = time.monotonic()
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"runner did not exit within {timeout} s:\n{out}")
    return process.returncode, out, time.monotonic() - start


def relay_then_sigint(ros_node, *launch_args: str, messages: int = 1) -> tuple[list, int, str, float]:
    """Launch the chatter set, wait for `messages` relayed messages, Ctrl-C the runner.

    Returns (relayed messages, exit code, output, seconds the runner took to stop).
    """
    relayed = ros_node.collect(String, "/relay_out")
    runner = start_launch(*launch_args)
    try:
        # talker -> /launch_test/wire (remapped from chatter) -> relay -> /relay_out (absolute remap)
        assert ros_node.spin_until(lambda: len(relayed) >= messages, timeout=30), "nothing came through the relay"
    finally:
        runner.send_signal(signal.SIGINT)
        code, out, waited = finish(runner, timeout=20)
    return relayed, code, out, waited


def test_two_nodes_with_parameters_and_remaps_then_sigint(ros_node):
    relayed, code, out, waited = relay_then_sigint(ros_node, CHATTER, "greeting:=bonjour", messages=3)
    assert relayed[0].data == "relayed: bonjour"  # parameter overrides from the node set and the CLI
    assert code == 0, out
    assert waited < 8, f"stopping took {waited:.1f} s:\n{out}"
    assert "[talker]" in out or "[launch] started talker" in out


def test_node_ignoring_sigint_is_escalated(ros_node):
    _, _, out, waited = relay_then_sigint(ros_node, "--grace", "1.0", CHATTER, "stubborn:=true")
    assert "sending SIGTERM to talker" in out and "sending SIGKILL to talker" in out, out
    assert "SIGKILL to relay" not in out  # the well-behaved node stopped on SIGINT
    assert waited < 6, f"stopping took {waited:.1f} s:\n{out}"


def test_sigterm_ends_a_node_whose_cleanup_hangs(ros_node):
    _, _, out, waited = relay_then_sigint(ros_node, "--grace", "1.0", CHATTER, "hang:=true")
    assert "sending SIGTERM to talker" in out, out
    assert "SIGKILL" not in out, out  # SIGINT's cleanup hung; SIGTERM ended it
    assert waited < 6, f"stopping took {waited:.1f} s:\n{out}"


def test_required_node_crash_stops_the_rest(ros_domain):
    runner = start_launch(CHATTER, "crash_after:=1.5")
    code, out, _ = finish(runner, timeout=30)
    assert code == 3, out
    assert "required node talker ended" in out
    assert "relay exited" in out


def test_required_node_crash_stops_the_executor_cleanly(ros_domain):
    runner = start_launch(CHATTER_EXECUTOR, "crash_after:=3.0")
    code, out, _ = finish(runner, timeout=60)
    assert code == 3 and "required node talker ended" in out, out
    assert "sending SIGINT to executor" in out and "executor exited with code 0" in out, out
    assert "SIGTERM to executor" not in out and "SIGKILL" not in out, out  # SIGINT was enough: its own clean stop


def running(pid: int) -> bool:
    """`pid` exists and is not a zombie (an orphan's zombie waits for a reaper that may never come)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# a tool that drives a stack (as pixelvla-eval does), then hangs
TOOL = """import sys, time
from pixelvla_ros.launching.runner import start_in_background
runner = start_in_background(sys.argv[1:], sys.stdout)
print(f"started runner (pid {runner.pid})", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("killed", ["runner", "tool"])
def test_kill_9_leaves_no_orphans(ros_node, killed):
    """kill -9 of pixelvla-launch (or of a tool that started it in the background): no chance to stop
    anything, yet no node outlives it (PR_SET_PDEATHSIG: SIGTERM, their clean stop)."""
    relayed = ros_node.collect(String, "/relay_out")
    if killed == "runner":
        process = start_launch(CHATTER_EXECUTOR)
    else:
        process = subprocess.Popen([sys.executable, "-c", TOOL, CHATTER_EXECUTOR], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    pids: dict[int, str] = {}
    try:
        assert ros_node.spin_until(lambda: relayed, timeout=30), "nothing came through the relay"
        pids = {int(m.group(2)): m.group(1) for m in re.finditer(r"started (\w+) \(pid (\d+)\)", "".join(lines))}
        assert sorted(pids.values()) == sorted(["executor", "relay", "talker"] + (["runner"] if killed == "tool" else [])), lines
        assert all(running(pid) for pid in pids)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 30  # a clean stop takes ~1 s; generous for a loaded machine
        while time.monotonic() < deadline and any(running(pid) for pid in pids):
            time.sleep(0.1)
        assert not [name for pid, name in pids.items() if running(pid)], f"outlived the {killed}: {''.join(lines)}"
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=5)
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)  # the test's own orphans: never leave them behind


@pytest.mark.parametrize(
    "args, message",
    [
        (["no_such_set"], "unknown node set 'no_such_set'"),
        ([CHATTER, "greeting"], "bad argument 'greeting': write name:=value"),
        ([CHATTER, "volume:=11"], "unknown argument 'volume'"),
        ([CHATTER, "rate:=fast"], "rate:='fast' is not a float"),
        ([CHATTER, "stubborn:=maybe"], "is not a boolean"),
        (["/nonexistent/x.nodes.yaml"], "node set file /nonexistent/x.nodes.yaml does not exist"),
    ],
)
def test_bad_input_fails_at_once(args, message):
    code, out, waited = finish(start_launch(*args), timeout=30)
    assert code == 2
    assert message in out, out


ORPHAN_WHOSE_CLEANUP_HANGS = """
import sys, time
from rclpy.node import Node
from pixelvla_ros.node_base import run_node

class Orphan(Node):
    def __init__(self):
        super().__init__("orphan")

    def on_stop(self):
        print("cleaning up", flush=True)
        time.sleep(120)  # a teardown that never ends

sys.exit(run_node(Orphan, on_start=lambda node: print("spinning", flush=True), cleanup_deadline_s=1.0))
"""


def test_a_node_whose_cleanup_hangs_ends_by_itself_without_a_launcher(ros_domain):
    """A node orphaned by its launcher's kill -9 gets one SIGTERM and no escalation: its own deadline ends it."""
    node = subprocess.Popen([sys.executable, "-c", ORPHAN_WHOSE_CLEANUP_HANGS], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert node.stdout.readline().strip() == "spinning"
        node.send_signal(signal.SIGTERM)
        assert node.stdout.readline().strip() == "cleaning up"
        assert node.wait(timeout=60) == -signal.SIGALRM  # the 120 s cleanup did not run to its end
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
