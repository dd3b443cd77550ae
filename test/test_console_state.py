"""The console's decisions without ROS or a browser: who operates, rates, latency summaries, status meaning."""
import json

import numpy as np
import pytest

from pixelvla_ros.console.state import (
    ConsoleState, ControlArbiter, LatencyWindow, RateLimiter, executor_summary, json_safe, next_episode,
    sim_reset_request,
)


def test_the_first_page_operates_until_it_leaves_or_another_takes_control():
    arbiter = ControlArbiter(grace=5.0)
    arbiter.connect("a", 0.0)
    arbiter.connect("b", 1.0)
    assert arbiter.may_operate("a", 1.0) and not arbiter.may_operate("b", 1.0)
    assert arbiter.take("b", 2.0)
    assert arbiter.may_operate("b", 2.0) and not arbiter.may_operate("a", 2.0)
    assert not arbiter.take("stranger", 3.0)  # only a connected page can take control
    assert arbiter.current(3.0) == "b"


def test_a_reconnecting_operator_keeps_control_within_the_grace_period():
    arbiter = ControlArbiter(grace=5.0)
    arbiter.connect("a", 0.0)
    arbiter.connect("b", 0.0)
    arbiter.disconnect("a", 10.0)  # a reload
    assert arbiter.current(12.0) == "a"
    arbiter.connect("a", 12.0)
    assert arbiter.current(100.0) == "a"


def test_control_passes_to_the_longest_connected_page_after_the_grace_period():
    arbiter = ControlArbiter(grace=5.0)
    for t, page in enumerate("abc"):
        arbiter.connect(page, float(t))
    arbiter.disconnect("a", 10.0)
    assert arbiter.current(14.9) == "a"
    assert arbiter.current(15.0) == "b"
    arbiter.disconnect("b", 20.0)
    arbiter.disconnect("c", 20.0)
    assert arbiter.current(30.0) is None
    arbiter.connect("d", 31.0)  # the next page to come operates
    assert arbiter.current(31.0) == "d"


def test_two_tabs_of_one_session_count_as_one_page_until_both_close():
    arbiter = ControlArbiter(grace=0.0)
    arbiter.connect("a", 0.0)
    arbiter.connect("a", 0.0)
    arbiter.connect("b", 0.0)
    arbiter.disconnect("a", 1.0)
    assert arbiter.current(2.0) == "a"
    arbiter.disconnect("a", 3.0)
    assert arbiter.current(3.0) == "b"


def test_rate_limiter_is_a_token_bucket():
    frames = RateLimiter(rate=10.0)  # 10 a second, no burst
    assert frames.allow(0.0) and not frames.allow(0.05)
    assert frames.wait(0.05) == pytest.approx(0.05)
    assert frames.allow(0.1)
    requests = RateLimiter(rate=2.0, burst=3)
    assert [requests.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert requests.allow(0.5) and not requests.allow(0.5)


def test_latency_window_percentiles_in_milliseconds():
    window = LatencyWindow(size=100)
    assert window.summary() is None
    for ms in range(1, 201):  # only the last 100 (101..200 ms) count
        window.add(ms / 1e3)
    window.add(float("nan"))
    summary = window.summary()
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(150.5) and summary["p95_ms"] == pytest.approx(195.05)


@pytest.mark.parametrize("level, message, state, detail", [
    (0, "executing chunks (executing)", "moving", "executing chunks (executing)"),
    (1, "holding: watchdog: no chunk", "holding", "watchdog: no chunk"),
    (2, "e-stop latched", "e-stop", "e-stop latched"),
    (2, "joint elbow beyond its limit", "fault", "joint elbow beyond its limit"),
    (3, "no data", "stale", "no data"),
])
def test_executor_diagnostics_mean_moving_holding_estop_or_fault(level, message, state, detail):
    summary = executor_summary(level, message, {"last_rejection": "chunk 3: too old"})
    assert summary["state"] == state and summary["detail"] == detail
    assert summary["last_rejection"] == "chunk 3: too old"


def test_episode_controls():
    assert next_episode({"task": "put_red_cube_on_plate", "seed": 7, "step": 30}) == {"task": "put_red_cube_on_plate", "seed": 8}
    with pytest.raises(ValueError, match="no simulated episode"):
        next_episode(None)
    tasks = ["put_red_cube_on_plate", "put_this_cube_in_bowl"]
    assert sim_reset_request("put_this_cube_in_bowl", "3", tasks) == {"task": "put_this_cube_in_bowl", "seed": 3}
    with pytest.raises(ValueError, match="unknown task 'fly'"):
        sim_reset_request("fly", 1, tasks)
    with pytest.raises(ValueError, match="whole number"):
        sim_reset_request("put_red_cube_on_plate", "x", tasks)
    with pytest.raises(ValueError, match="negative"):
        sim_reset_request("put_red_cube_on_plate", -1, tasks)


def test_snapshot_is_json_a_browser_parses():
    state = ConsoleState(tasks=["t"])
    version = state.version
    state.update(policy={"model_id": "m", "last_frame_age": float("nan")}, policy_received=1.0)
    state.update(mask=np.ones((2, 2), bool), bump=False)  # drawn into the frames only
    assert state.version == version + 1
    state.add_instruction("pick the cube")
    state.add_instruction("place it")
    state.add_instruction("pick the cube")  # again: to the top, once
    state.put_frame(np.zeros((4, 6, 3), np.uint8), (12, 500), "camera_optical", now=2.0)
    snapshot = state.snapshot(now=3.5)
    text = json.dumps(snapshot, allow_nan=False)  # raises on NaN
    assert snapshot["policy"] == {"model_id": "m", "last_frame_age": None, "age": 2.5}
    assert snapshot["instructions"] == ["pick the cube", "place it"]
    assert snapshot["camera"] == {"seq": 1, "stamp": [12, 500], "frame_id": "camera_optical", "width": 6, "height": 4,
                                  "age": 1.5}
    assert "mask" not in text
    assert json_safe({"a": [float("inf"), 1.0]}) == {"a": [None, 1.0]}


def test_a_repeated_error_is_listed_once():
    state = ConsoleState()
    state.add_error("camera", "unsupported encoding", 1.0)
    version = state.version
    state.add_error("camera", "unsupported encoding", 2.0)
    assert list(state.errors) == [(2.0, "camera", "unsupported encoding")] and state.version == version
