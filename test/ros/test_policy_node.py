"""The policy node over DDS: chunks stamped with their image, prompts and masks matter, bad input is refused."""
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.image_conversions import mono_to_image, rgb_to_image
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from support import publish_calibration
from tiny_models import BRIDGE_LIKE_WITH_STATE, save_tiny_checkpoint

pytestmark = pytest.mark.ros


@pytest.fixture
def policy(ros_node):
    node = subprocess.Popen([sys.executable, "-m", "pixelvla_ros.nodes.policy_node", "--ros-args",
                             "-p", "model_path:=untrained", "-p", "control_rate_hz:=0.0", "-r", "__node:=policy"])
    io = {
        "chunks": ros_node.collect(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND),
        "status": ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED),
        "image": ros_node.publisher(Image, "/camera/image_raw", qos.SENSOR),
        "instruction": ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED),
        "prompt": ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED),
        "mask": ros_node.publisher(Image, "/pixelvla/mask", qos.LATCHED),
        "diagnostics": ros_node.collect(DiagnosticArray, "/diagnostics", 10),
    }
    assert ros_node.spin_until(lambda: any(s.state == PolicyStatus.ACTIVE for s in io["status"]), timeout=60), "policy never became active"
    yield ros_node, io
    node.terminate()
    node.wait(timeout=20)


def frame(sec, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 123
    return msg


def chunk_for(probe, io, msg, timeout=30.0):
    """Publish `msg` until a chunk stamped with its stamp arrives; return that chunk's actions (N_c, 7)."""
    want = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def found():
        return [c for c in io["chunks"] if (c.header.stamp.sec, c.header.stamp.nanosec) == want]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not found():
        io["image"].publish(msg)
        probe.spin_for(0.2)
    chunks = found()
    assert chunks, f"no chunk for the image stamped {want}"
    c = chunks[0]
    return np.array(c.actions).reshape(c.horizon, c.action_dim)


def test_image_and_instruction_give_a_chunk_with_the_image_stamp(policy):
    probe, io = policy
    io["instruction"].publish(String(data="put the red cube on the plate"))
    actions = chunk_for(probe, io, frame(1001))
    chunk = io["chunks"][-1]
    assert actions.shape == (5, 7) and np.all(np.isfinite(actions))
    assert chunk.action_space == "ee_delta" and list(chunk.dimension_names)[-1] == "gripper"
    assert chunk.model_id == "untrained-tiny"


def test_prompt_and_mask_change_the_output(policy):
    probe, io = policy
    io["instruction"].publish(String(data="put this cube on the plate"))
    plain = chunk_for(probe, io, frame(2001))
    box = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=40.0, y=30.0), Point(x=90.0, y=80.0)], prompt_id="b1")
    io["prompt"].publish(box)
    probe.spin_for(0.5)
    prompted = chunk_for(probe, io, frame(2002))
    assert not np.allclose(plain, prompted)
    mask = np.zeros((120, 160), bool)
    mask[30:80, 40:90] = True
    io["mask"].publish(mono_to_image(mask, header=frame(2003).header))  # computed from the frame it goes with
    probe.spin_for(0.5)
    masked = chunk_for(probe, io, frame(2003))
    assert not np.allclose(prompted, masked)
    io["prompt"].publish(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
    io["mask"].publish(mono_to_image(np.zeros((120, 160), bool)))
    probe.spin_for(0.5)
    assert np.allclose(chunk_for(probe, io, frame(2004)), plain, atol=1e-5)  # cleared: the text-only output again


def test_a_mask_from_an_older_image_holds_the_policy(policy):
    """A segmenter 2 s behind the camera: no chunk from the misaligned target, the status says why."""
    probe, io = policy
    io["instruction"].publish(String(data="put this cube on the plate"))
    mask = np.zeros((120, 160), bool)
    mask[30:80, 40:90] = True
    io["mask"].publish(mono_to_image(mask, header=frame(4000).header))
    chunk_for(probe, io, frame(4000))  # the mask arrived, aligned with its frame
    io["image"].publish(frame(4002))
    assert probe.spin_until(lambda: any("max_mask_lag 0.5 s" in s.waiting_for for s in io["status"]), timeout=20), (
        f"no waiting_for about the mask; last: {io['status'][-1].waiting_for!r}")
    waiting = next(s.waiting_for for s in io["status"] if "max_mask_lag" in s.waiting_for)
    assert "the newest mask is from an image 2.0 s before the frame" in waiting
    assert not [c for c in io["chunks"] if c.header.stamp.sec == 4002]
    io["mask"].publish(mono_to_image(mask, header=frame(4002).header))  # the segmenter caught up
    chunk_for(probe, io, frame(4002))


def wait_error(probe, io, text):
    assert probe.spin_until(lambda: any(text in s.last_error for s in io["status"]), timeout=20), (
        f"no status error containing {text!r}; last: {io['status'][-1].last_error if io['status'] else None}")


@pytest.mark.parametrize(
    "make_bad, error",
    [
        (lambda: Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(32)), "unsupported image encoding"),
        (lambda: Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty image"),
        (lambda: Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(40)), "data has 40 bytes"),
        (lambda: Image(height=4100, width=4100, encoding="mono8", step=4100, data=b""), "larger than"),
        (lambda: Image(height=2, width=100000, encoding="rgb8", step=300000, data=bytes(600000)), "larger than"),
        (lambda: Image(height=4, width=4, encoding="rgb8", is_bigendian=1, step=12, data=bytes(48)), "is_bigendian=1"),
    ],
)
def test_bad_images_are_refused_and_the_node_lives_on(policy, make_bad, error):
    probe, io = policy
    io["instruction"].publish(String(data="pick up the cube"))
    bad = make_bad()
    bad.header.stamp.sec = 3001
    io["image"].publish(bad)
    wait_error(probe, io, error)
    assert not [c for c in io["chunks"] if c.header.stamp.sec == 3001]
    chunk_for(probe, io, frame(3002))  # still alive and working


@pytest.mark.parametrize(
    "prompt, error",
    [
        (VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=float("nan"), y=3.0)], prompt_id="p"), "NaN"),
        (VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=500.0, y=3.0)], prompt_id="p"), "outside"),
        (VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=5.0, y=5.0)], prompt_id="p"), "exactly 2 corner"),
        (VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=5.0, y=5.0)], labels=[2], prompt_id="p"),
         "belongs on /pixelvla/place_prompt"),
    ],
)
def test_bad_prompts_are_refused(policy, prompt, error):
    probe, io = policy
    io["instruction"].publish(String(data="pick up the cube"))
    io["prompt"].publish(prompt)
    probe.spin_for(0.3)
    msg = frame(4001)
    io["image"].publish(msg)
    wait_error(probe, io, error)
    assert not [c for c in io["chunks"] if c.header.stamp.sec == 4001]


def test_a_refused_prompt_changes_nothing(policy):
    """A prompt the model cannot take (NaN; more points than config.max_prompts) leaves the previous one in
    force: the chunks stay the prompted ones, not the text-only ones."""
    probe, io = policy
    io["instruction"].publish(String(data="pick up this cube"))
    plain = chunk_for(probe, io, frame(4101))
    io["prompt"].publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=40.5, y=30.5)], prompt_id="good"))
    probe.spin_for(0.5)
    prompted = chunk_for(probe, io, frame(4102))
    assert not np.allclose(plain, prompted)
    nan = VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=float("nan"), y=3.0)], prompt_id="nan")
    five = VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=10.5 + 10 * k, y=20.5) for k in range(5)], prompt_id="five")
    for bad, error in [(nan, "NaN"), (five, "at most 4")]:
        io["prompt"].publish(bad)
        wait_error(probe, io, error)
        assert np.allclose(chunk_for(probe, io, frame(4103 + len(io["chunks"]))), prompted, atol=1e-6)
    errors = [s for s in io["status"] if s.state == PolicyStatus.ERROR]
    assert len([s for s in errors if "at most 4" in s.last_error]) == 1  # refused once, not on every frame


def test_an_instruction_longer_than_the_models_token_limit_is_refused_and_the_previous_one_kept(policy):
    probe, io = policy
    io["instruction"].publish(String(data="pick up the cube"))
    first = chunk_for(probe, io, frame(4201))
    io["instruction"].publish(String(data="\U0001F600" * 300))  # 300 characters, ~1200 byte tokens
    wait_error(probe, io, "instruction refused: 1")
    refusal = io["status"][-1].last_error
    assert "tokens with the prompt template; this model takes 1..763; keeping 'pick up the cube'" in refusal
    assert np.allclose(chunk_for(probe, io, frame(4202)), first, atol=1e-6)


def test_a_mask_of_another_size_is_refused_once(policy):
    probe, io = policy
    io["instruction"].publish(String(data="pick up the cube"))
    plain = chunk_for(probe, io, frame(4301))
    io["mask"].publish(mono_to_image(np.ones((100, 100), bool)))
    wait_error(probe, io, "mask refused: mask 100x100 does not match the camera image 160x120")
    for sec in range(4302, 4306):
        assert np.allclose(chunk_for(probe, io, frame(sec)), plain, atol=1e-6)
    assert len([s for s in io["status"] if s.state == PolicyStatus.ERROR and "mask" in s.last_error]) == 1


def policy_diagnostics(io):
    return [s for a in io["diagnostics"] for s in a.status if s.name == "pixelvla: policy"]


def test_waiting_for_an_input_is_a_warning_with_the_reason(policy):
    probe, io = policy
    assert probe.spin_until(lambda: io["status"][-1].waiting_for.startswith("an instruction on /pixelvla/instruction"))
    assert probe.spin_until(lambda: any(d.level == DiagnosticStatus.WARN and "waiting for an instruction" in d.message
                                        for d in policy_diagnostics(io)))
    io["instruction"].publish(String(data="pick up the cube"))
    chunk_for(probe, io, frame(4401))
    assert probe.spin_until(lambda: (io["image"].publish(frame(4401)),  # frames keep coming: nothing is missing
                                     policy_diagnostics(io)[-1].level == DiagnosticStatus.OK
                                     and io["status"][-1].waiting_for == "")[1])
    assert probe.spin_until(lambda: "a camera frame on /camera/image_raw (none for" in io["status"][-1].waiting_for)
    assert probe.spin_until(lambda: policy_diagnostics(io)[-1].message.startswith("waiting for a camera frame"))


def test_camera_rate_lost_frames_and_frame_age_are_reported(policy):
    """Frames stamped 0.1 s apart with every third one never sent: 10 Hz and those frames lost. Frames the
    transport loses on top can only add to the count: lost <= skipped + (sent - received)."""
    probe, io = policy
    io["instruction"].publish(String(data="pick up the cube"))
    assert probe.spin_until(lambda: io["image"].get_subscription_count() > 0)
    start = probe.node.get_clock().now().nanoseconds * 1e-9 - 30.0  # 30 s ago: the frames are old
    sent = skipped = 0
    for k in range(60):
        if k % 3 == 2 and 3 <= k < 57:
            skipped += 1
            continue
        msg = frame(0)
        stamp = start + 0.1 * k
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int((stamp % 1) * 1e9)
        io["image"].publish(msg)
        sent += 1
        probe.spin_for(0.03)
    assert probe.spin_until(lambda: io["status"][-1].frames_lost >= skipped and io["status"][-1].frames_used > 0)
    status = io["status"][-1]
    assert status.camera_rate == pytest.approx(10.0, rel=0.01)
    assert skipped <= status.frames_lost <= skipped + (sent - status.frames_received), (skipped, sent, status)
    assert 30.0 - 6.0 < status.last_frame_age < 30.0 + 60.0  # the chunk's image was stamped 24-30 s ago


def test_empty_instruction_is_refused(policy):
    probe, io = policy
    io["instruction"].publish(String(data="   "))
    wait_error(probe, io, "instruction refused: it is empty")
    io["image"].publish(frame(5001))
    probe.spin_for(1.0)
    assert not io["chunks"]  # no instruction yet: nothing runs


# ---------------------------------------------------------------- checkpoints and engine bundles
def policy_io(probe) -> dict:
    """The policy's chunk output (collected) and camera input (a publisher)."""
    return {"chunks": probe.collect(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND),
            "image": probe.publisher(Image, "/camera/image_raw", qos.SENSOR)}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A tiny checkpoint with Bridge-like statistics, and an ONNX engine bundle exported from it."""
    from pixelvla_model.export import export_bundle

    root = tmp_path_factory.mktemp("models")
    save_tiny_checkpoint(root / "ckpt", seed=3)
    export_bundle(root / "ckpt", root / "bundle", model_id="tiny-test-bundle")
    return root / "ckpt", root / "bundle"


def start_policy(*params):
    args = [sys.executable, "-m", "pixelvla_ros.nodes.policy_node", "--ros-args", "-r", "__node:=policy",
            "-p", "control_rate_hz:=0.0"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_checkpoint_and_bundle_give_the_reference_actions(ros_node, model_dirs, backend):
    from pixelvla_model import PixelVLAPolicy

    ckpt, bundle = model_dirs
    node = start_policy(f"model_path:={ckpt if backend == 'torch' else bundle}", f"backend:={backend}",
                        "unnorm_key:=bridge_orig", "expected_chunk_size:=5")
    io = policy_io(ros_node)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put the red cube on the plate"))
    try:
        msg = frame(6001, seed=5)
        actions = chunk_for(ros_node, io, msg, timeout=60)
    finally:
        node.terminate()
        node.communicate(timeout=20)
    reference = PixelVLAPolicy.from_pretrained(ckpt).predict(np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3).copy(),
                                                            "put the red cube on the plate", unnorm_key="bridge_orig")
    assert np.abs(actions - reference).max() < 1e-5
    if backend == "onnxruntime":
        assert io["chunks"][-1].model_id == "tiny-test-bundle"


def test_unusable_models_stop_the_node_at_start_with_the_reason(ros_domain, model_dirs, tmp_path):
    import shutil

    ckpt, bundle = model_dirs
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    onnx = broken / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    cases = [
        (["model_path:=/no/such/model"], "/no/such/model"),
        ([f"model_path:={broken}", "backend:=onnxruntime"], "truncated"),
        ([f"model_path:={bundle}", "backend:=onnxruntime", "expected_chunk_size:=8"], "chunk"),
        (["backend:=tensorrt"], "needs model_path"),
        ([f"model_path:={ckpt}", "steps_per_inference:=6"], "exceeds the model's chunk of 5 actions"),
    ]
    for params, reason in cases:
        node = start_policy(*params)
        out, _ = node.communicate(timeout=60)
        assert node.returncode != 0, out
        assert reason in out, out


def test_the_untrained_model_refuses_a_backend_it_cannot_run(ros_domain):
    """model_path:=untrained is torch weights in memory: with another backend the node stops with the reason
    instead of running torch while reporting the other backend."""
    node = start_policy("model_path:=untrained", "backend:=onnxruntime")
    out, _ = node.communicate(timeout=60)
    assert node.returncode != 0, out
    assert "model_path:=untrained builds random torch weights in this process: it runs on backend torch, " \
           "not 'onnxruntime'" in out, out


def test_the_backend_reported_is_the_one_running(policy):
    probe, io = policy
    assert probe.spin_until(lambda: any(s.backend for s in io["status"]), timeout=10)
    assert {s.backend for s in io["status"] if s.backend} == {"torch"}


def test_default_model_is_the_shipped_checkpoint(ros_node):
    from pixelvla_model import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_NOTE

    from sensor_msgs.msg import JointState

    node = start_policy()
    io = policy_io(ros_node)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube in the bowl"))
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)  # the shipped model reads the robot state
    ros_node.node.create_timer(0.2, lambda: joints.publish(JointState(name=[*ARM, "left_finger"], position=[0.0] * 6 + [0.037])))
    publish_calibration(ros_node)  # and places its prompts (the words' clicks too) through the camera's calibration
    try:
        actions = chunk_for(ros_node, io, frame(7001), timeout=60)
    finally:
        node.terminate()
        out, _ = node.communicate(timeout=20)
    assert actions.shape == (5, 7)
    assert io["chunks"][-1].model_id == DEFAULT_CHECKPOINT.name and DEFAULT_CHECKPOINT_NOTE in out


# ---------------------------------------------------------------- models that read the robot state
ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]


@pytest.fixture(scope="module")
def state_model(tmp_path_factory):
    """A tiny checkpoint that reads 7 robot-state values (6 arm joints + the gripper finger)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("state_model") / "ckpt", seed=4,
                                norm_stats=BRIDGE_LIKE_WITH_STATE, proprio_dim=7)


def test_a_state_model_waits_for_joint_states_and_uses_them(ros_node, state_model):
    from sensor_msgs.msg import JointState

    from pixelvla_model import PixelVLAPolicy

    node = start_policy(f"model_path:={state_model}")
    io = policy_io(ros_node)
    status = ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube in the bowl"))
    msg = frame(8001, seed=6)
    # the gripper's second finger and an unknown joint are ignored; the order is the configured one
    state = JointState(name=["right_finger", *reversed(ARM), "left_finger", "extra"],
                       position=[-0.03, 0.5, -0.4, 0.3, -0.2, 0.1, 0.0, 0.03, 9.0])
    want_state = np.array([0.0, 0.1, -0.2, 0.3, -0.4, 0.5, 0.03])
    try:
        assert ros_node.spin_until(lambda: any(m.state == PolicyStatus.ACTIVE for m in status), timeout=60)
        assert ros_node.spin_until(lambda: io["image"].get_subscription_count() > 0, timeout=30)
        for _ in range(15):  # 3 s of images without a joint state: nothing is published
            io["image"].publish(msg)
            ros_node.spin_for(0.2)
        assert not io["chunks"], "a state model ran without a robot state"
        # a joint state stream, as a robot's (one message, best effort, could be lost or go stale on a busy machine)
        ros_node.node.create_timer(0.1, lambda: joints.publish(state))
        actions = chunk_for(ros_node, io, msg, timeout=60)
    finally:
        node.terminate()
        out, _ = node.communicate(timeout=20)
    assert "waiting for /joint_states" in out  # the user is told what is missing
    policy = PixelVLAPolicy.from_pretrained(state_model)
    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3).copy()
    reference = policy.predict(rgb, "put this cube in the bowl", proprio=want_state)
    assert np.abs(actions - reference).max() < 1e-5
    other = policy.predict(rgb, "put this cube in the bowl", proprio=want_state + 0.5)
    assert np.abs(other - reference).max() > 1e-7, "the robot state does not reach the actions"


def test_a_stale_or_non_finite_robot_state_stops_the_model_with_a_warning(ros_node, state_model):
    from rclpy.duration import Duration

    node = start_policy(f"model_path:={state_model}", "max_joint_state_age:=1.0")
    io = policy_io(ros_node)
    status = ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    diagnostics = ros_node.collect(DiagnosticArray, "/diagnostics", 10)
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube in the bowl"))

    def state(age=0.0, gripper=0.03):
        msg = JointState(name=[*ARM, "left_finger"], position=[0.0] * 6 + [gripper])
        msg.header.stamp = (ros_node.node.get_clock().now() - Duration(seconds=age)).to_msg()
        return msg

    def waiting(text):
        return ros_node.spin_until(
            lambda: (io["image"].publish(frame(9500)), status and text in status[-1].waiting_for)[1], timeout=30)

    def no_chunk_for(secs):
        for sec in secs:
            io["image"].publish(frame(sec))
            ros_node.spin_for(0.2)
        return not [c for c in io["chunks"] if c.header.stamp.sec in secs]

    try:
        assert ros_node.spin_until(lambda: any(m.state == PolicyStatus.ACTIVE for m in status), timeout=60)
        assert waiting("/joint_states with waist")
        assert ros_node.spin_until(lambda: any(
            d.level == DiagnosticStatus.WARN and d.message.startswith("waiting for") and "/joint_states with" in d.message
            for a in diagnostics for d in a.status if d.name == "pixelvla: policy"))
        for _ in range(3):
            joints.publish(state(age=10.0))  # measured 10 s ago
            ros_node.spin_for(0.1)
        assert waiting("s old, more than max_joint_state_age 1 s")
        assert no_chunk_for(range(9501, 9511)), "the model ran on a 10 s old robot state"
        fresh = ros_node.node.create_timer(0.1, lambda: joints.publish(state()))
        chunk_for(ros_node, io, frame(9520), timeout=60)
        ros_node.node.destroy_timer(fresh)
        ros_node.node.create_timer(0.1, lambda: joints.publish(state(gripper=float("nan"))))
        assert waiting("(the newest holds NaN/inf)")
        assert no_chunk_for(range(9531, 9541)), "the model ran on a NaN robot state"
    finally:
        node.terminate()
        node.communicate(timeout=20)


def test_a_state_model_with_other_joints_stops_at_start(ros_domain, state_model):
    node = start_policy(f"model_path:={state_model}", "joint_names:=[waist, shoulder]")
    out, _ = node.communicate(timeout=60)
    assert node.returncode != 0 and "robot-state values" in out, out


# ---------------------------------------------------------------- place prompts (where the target goes)
@pytest.fixture(scope="module")
def place_model(tmp_path_factory):
    """A tiny checkpoint trained (here: built) with place prompts."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("place_model") / "ckpt", seed=5, place_prompts=True)


def test_a_place_prompt_reaches_the_model_with_the_target_prompt(ros_node, place_model):
    from pixelvla_model import PLACE, PixelVLAPolicy
    from pixelvla_model import Point as PromptPoint

    node = start_policy(f"model_path:={place_model}")
    io = policy_io(ros_node)
    status = ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    prompt = ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    place = ros_node.publisher(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube on the plate"))
    try:
        assert ros_node.spin_until(lambda: any(m.state == PolicyStatus.ACTIVE for m in status), timeout=60)
        prompt.publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=30.5, y=40.5)], prompt_id="cube"))
        place.publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=120.5, y=90.5)], prompt_id="plate"))
        ros_node.spin_for(0.5)
        msg = frame(9001, seed=7)
        both = chunk_for(ros_node, io, msg, timeout=60)
        prompt.publish(VisualPrompt(type=VisualPrompt.POINT, prompt_id="four",  # 4 + the place's 1 > max_prompts
                                    points=[Point(x=10.5 + 10 * k, y=20.5) for k in range(4)]))
        wait_error(ros_node, {"status": status}, "4 prompts (one per point) with the 1 of the place prompt in force")
        place.publish(VisualPrompt(type=VisualPrompt.POINT, labels=[1, 0], prompt_id="bad",
                                   points=[Point(x=120.5, y=90.5), Point(x=10.5, y=10.5)]))
        wait_error(ros_node, {"status": status}, "place prompt refused")
        still_both = chunk_for(ros_node, io, frame(9003, seed=7), timeout=60)  # the refused place changes nothing
        place.publish(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
        ros_node.spin_for(0.5)
        target_only = chunk_for(ros_node, io, frame(9004, seed=7), timeout=60)
    finally:
        node.terminate()
        node.communicate(timeout=20)
    policy = PixelVLAPolicy.from_pretrained(place_model)
    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3).copy()
    cube = PromptPoint(30.5, 40.5)
    reference = policy.predict(rgb, "put this cube on the plate", prompts=[cube, PromptPoint(120.5, 90.5, PLACE)])
    assert np.abs(both - reference).max() < 1e-5 and np.abs(still_both - reference).max() < 1e-5
    alone = policy.predict(rgb, "put this cube on the plate", prompts=[cube])
    assert np.abs(target_only - alone).max() < 1e-5 and np.abs(alone - reference).max() > 1e-7


def test_a_place_prompt_for_a_model_without_them_is_refused(policy):
    probe, io = policy
    io["instruction"].publish(String(data="put this cube on the plate"))
    place = probe.publisher(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    place.publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=120.5, y=90.5)], prompt_id="plate"))
    probe.spin_for(0.3)
    io["image"].publish(frame(9101))
    wait_error(probe, io, "not trained with place prompts")
    chunk_for(probe, io, frame(9102))  # refused once; the node goes on without it


@pytest.fixture(scope="module")
def offsets_model(tmp_path_factory):
    """A tiny checkpoint that reads the robot state and where the prompts are from the gripper, its offset MLP
    given weights (a new one is zero-initialised: the offsets would not show in the actions)."""
    import torch

    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy

    policy = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny", proprio_dim=7, prompt_offsets=True),
                                        seed=5, norm_stats=BRIDGE_LIKE_WITH_STATE)
    torch.nn.init.normal_(policy.model.prompt_offsets.mlp[4].weight, std=0.5)
    path = tmp_path_factory.mktemp("offsets_model") / "ckpt"
    policy.save_pretrained(path)
    return path


def test_a_model_that_places_its_prompts_waits_for_the_calibration_and_gets_the_click_map(ros_node, offsets_model):
    from pixelvla_model import Point as Click
    from pixelvla_model import PixelVLAPolicy
    from pixelvla_robots.base import get_robot
    from pixelvla_robots.camera import CameraModel, plane_click_map

    node = start_policy(f"model_path:={offsets_model}")
    io = policy_io(ros_node)
    status = ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    joints = ros_node.publisher(JointState, "/joint_states", qos.SENSOR)
    ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(String(data="put this cube in the bowl"))
    ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED).publish(
        VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=100.0, y=70.0)], prompt_id="cube"))
    q = np.array([0.2, -0.3, 0.4, 0.0, 0.9, 0.0, 0.03])
    ros_node.node.create_timer(0.1, lambda: joints.publish(JointState(name=[*ARM, "left_finger"], position=q.tolist())))
    # calibrated at twice the frames' resolution, looking down at the table from 60 cm
    camera = CameraModel("c", 320, 240, 260.0, 260.0, 159.5, 119.5, np.array([0.25, 0.0, 0.6]),
                         np.diag([1.0, -1.0, -1.0]))
    msg = frame(8101, seed=7)
    try:
        assert ros_node.spin_until(lambda: any(m.state == PolicyStatus.ACTIVE for m in status), timeout=60)
        assert ros_node.spin_until(lambda: io["image"].get_subscription_count() > 0, timeout=30)
        for _ in range(15):  # 3 s of images and joint states without a calibration: nothing is published
            io["image"].publish(msg)
            ros_node.spin_for(0.2)
        assert not io["chunks"], "the model ran without knowing where the camera is"
        publish_calibration(ros_node, camera)
        actions = chunk_for(ros_node, io, msg, timeout=60)
    finally:
        node.terminate()
        out, _ = node.communicate(timeout=20)
    assert "waiting for" in out and "the camera's calibration" in out  # the user is told what is missing
    tcp = get_robot("wx250s").fk(q[:6])[0]
    policy = PixelVLAPolicy.from_pretrained(offsets_model)
    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3).copy()
    click_map = plane_click_map(camera, 0.018, tcp)
    reference = policy.predict(rgb, "put this cube in the bowl", [Click(100.0, 70.0)], proprio=q, click_to_tcp=click_map)
    assert np.abs(actions - reference).max() < 1e-5
    elsewhere = plane_click_map(camera, 0.018, tcp - [0.05, 0.0, 0.0])  # the gripper 5 cm further back
    other = policy.predict(rgb, "put this cube in the bowl", [Click(100.0, 70.0)], proprio=q, click_to_tcp=elsewhere)
    assert np.abs(other - reference).max() > 1e-4, "the offsets do not reach the actions"


@pytest.fixture(scope="module")
def words_model(tmp_path_factory):
    """A tiny checkpoint whose words point (text grounding), with a place map."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("words_model") / "ckpt", seed=6, place_prompts=True,
                                text_grounding=True)


def test_the_words_propose_prompts_after_each_instruction_until_an_operator_prompts(ros_node, words_model):
    from pixelvla_model import PixelVLAPolicy

    node = start_policy(f"model_path:={words_model}")
    io = policy_io(ros_node)
    status = ros_node.collect(PolicyStatus, "/pixelvla/status", qos.LATCHED)
    words = ros_node.collect(VisualPrompt, "/pixelvla/words/prompt", qos.LATCHED)
    words_place = ros_node.collect(VisualPrompt, "/pixelvla/words/place_prompt", qos.LATCHED)
    instruction = ros_node.publisher(String, "/pixelvla/instruction", qos.LATCHED)
    prompt = ros_node.publisher(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    text = "put the red cube on the plate"
    try:
        assert ros_node.spin_until(lambda: any(m.state == PolicyStatus.ACTIVE for m in status), timeout=60)
        instruction.publish(String(data=text))
        ros_node.spin_for(0.5)
        msg = frame(9501, seed=8)
        chunk_for(ros_node, io, msg, timeout=60)
        assert ros_node.spin_until(lambda: words and words_place, timeout=10), "no words' prompts proposed"
        (proposal,), (place,) = words, words_place
        assert proposal.header.stamp == msg.header.stamp == place.header.stamp  # drawn on the frame it came from
        chunk_for(ros_node, io, frame(9502, seed=9), timeout=60)
        assert len(words) == 1  # once per instruction message
        prompt.publish(VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=30.5, y=40.5)], prompt_id="operator"))
        ros_node.spin_for(0.5)
        instruction.publish(String(data=text))  # a new episode, but the operator names the target
        ros_node.spin_for(0.5)
        chunk_for(ros_node, io, frame(9503, seed=9), timeout=60)
        prompt.publish(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
        ros_node.spin_for(0.5)
        chunk_for(ros_node, io, frame(9504, seed=9), timeout=60)
        assert len(words) == 1
        instruction.publish(String(data=text))
        ros_node.spin_for(0.5)
        chunk_for(ros_node, io, frame(9505, seed=10), timeout=60)
        assert ros_node.spin_until(lambda: len(words) == 2, timeout=10), "no proposal for the new instruction"
    finally:
        node.terminate()
        node.communicate(timeout=20)
    rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3).copy()
    box, place_point = PixelVLAPolicy.from_pretrained(words_model).words_prompts(rgb, text)
    assert proposal.type == VisualPrompt.BOX and place.type == VisualPrompt.POINT and list(place.labels) == [1]
    np.testing.assert_allclose([[p.x, p.y] for p in proposal.points], [[box.x0, box.y0], [box.x1, box.y1]], rtol=1e-5)
    np.testing.assert_allclose([place.points[0].x, place.points[0].y], [place_point.x, place_point.y], rtol=1e-5)
