"""The policy's input decisions without ROS: refused inputs change nothing, stale or non-finite robot states
block the model, waiting reasons, prompt limits, the camera-rate / lost-frame estimator, duplicate filter."""
import math

import numpy as np
import pytest
from geometry_msgs.msg import Point
from rclpy.serialization import serialize_message

from pixelvla_ros.msg import VisualPrompt
from pixelvla_ros.node_base import DuplicateFilter
from pixelvla_ros.policy_inputs import (CameraRate, InputError, ModelLimits, PolicyInputs, estimate_period,
                                        mask_lag_problem)
from pixelvla_ros.prompt_conversions import (PromptError, PromptSlots, check_prompt, msg_from_prompt, prompt_from_msg,
                                              words_to_accept)

JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger"]
HW = (120, 160)


def check_words(text):
    if len(text.split()) > 20:
        raise ValueError(f"{len(text.split())} words, at most 20")


def limits(**kw):
    return ModelLimits(check_words, **{"max_prompts": 4, "place_prompts": True, "state_width": 0, **kw})


def points(*xy, pid="p", labels=()):
    return VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=float(x), y=float(y)) for x, y in xy],
                        labels=list(labels), prompt_id=pid)


def inputs(**kw):
    i = PolicyInputs(JOINTS, max_state_age=1.0)
    i.set_model(limits(**kw))
    return i


# ---------------------------------------------------------------- instruction (item 10)
def test_an_instruction_the_model_refuses_keeps_the_previous_one():
    i = inputs()
    i.set_instruction("  pick up the cube ")
    with pytest.raises(InputError, match="21 words, at most 20"):
        i.set_instruction("go " * 21)
    with pytest.raises(InputError, match="empty"):
        i.set_instruction("   ")
    assert i.instruction == "pick up the cube"


def test_the_token_limit_is_the_models(tmp_path):
    from pixelvla_model import PixelVLAConfig, PixelVLAPolicy

    policy = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny"))
    low, high = policy.text_len_range
    assert (low, high) == (1, policy.config.max_position_embeddings - policy.config.prefix_tokens)
    assert policy.check_instruction("pick up the cube") < high
    with pytest.raises(ValueError, match=rf"tokens with the prompt template; this model takes 1..{high}"):
        policy.check_instruction("\U0001F600" * 300)  # 300 emoji: 4 byte tokens each
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(policy.processor)).text_tokens("pick up the cube") > 0  # the lock is not pickled
    assert copy.deepcopy(policy.processor).text_tokens("pick up the cube") > 0
    i = PolicyInputs(JOINTS, 1.0)
    i.set_instruction("\U0001F600" * 300)  # before a model is loaded only the characters are counted ...
    refused = i.set_model(ModelLimits.of(policy))  # ... and the model checks it when it comes
    assert i.instruction == "" and "tokens" in refused[0]


# ---------------------------------------------------------------- prompts (items 11, 12)
def test_target_and_place_prompts_together_are_limited_to_max_prompts():
    i = inputs()
    i.frame_arrived(HW, now=0.0)
    with pytest.raises(PromptError, match="5 prompts .* at most 4"):
        i.set_prompt(points(*[(10 + k, 10) for k in range(5)]))
    i.set_prompt(points((10, 10), (20, 20), (30, 30), pid="three"))
    with pytest.raises(PromptError, match="2 prompts .* with the 3 of the target prompt in force, .* at most 4"):
        i.set_prompt(points((50, 50), (60, 60), pid="two"), place=True)
    i.set_prompt(points((50, 50), pid="one"), place=True)
    assert len(i.snapshot()[1]) == 4


def test_a_refused_prompt_changes_nothing():
    i = inputs()
    i.frame_arrived(HW, now=0.0)
    i.set_prompt(points((30, 40), pid="good"))
    for bad, reason in [(points((math.nan, 3)), "NaN"), (points((500, 3)), "outside"),
                        (VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=5.0, y=5.0)]), "exactly 2 corner"),
                        (points((5, 5), labels=[2]), "place_prompt")]:
        with pytest.raises(PromptError, match=reason):
            i.set_prompt(bad)
        assert i.prompts.msg[False].prompt_id == "good"
    (prompt,) = i.snapshot()[1]
    assert (prompt.x, prompt.y) == (30.0, 40.0)
    i.set_prompt(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
    assert i.snapshot()[1] == []


def test_the_words_propose_once_per_instruction_message_while_nothing_names_the_target():
    i = inputs()
    i.frame_arrived(HW, now=0.0)
    assert i.snapshot()[5] is False  # no instruction yet
    i.set_instruction("put the red cube on the plate")
    assert i.snapshot()[5] is True and i.snapshot()[5] is False  # once
    i.set_instruction("put the red cube on the plate")  # the same text again: a new episode, a new scene
    assert i.snapshot()[5] is True
    i.set_prompt(points((30, 40), pid="operator"))
    i.set_instruction("put the red cube on the plate")
    assert i.snapshot()[5] is False  # the operator's prompt names the target
    i.set_prompt(VisualPrompt(type=VisualPrompt.POINT, prompt_id="clear"))
    assert i.snapshot()[5] is False  # that instruction's chance is gone
    mask = np.zeros(HW, bool)
    mask[10:20, 10:20] = True
    i.set_mask(mask)
    i.set_instruction("put the red cube on the plate")
    assert i.snapshot()[5] is False  # so does a target mask
    i.set_mask(np.zeros(HW, bool))
    i.set_instruction("put the red cube on the plate")
    assert i.snapshot()[5] is True


def test_the_words_prompts_as_messages_convert_back_to_the_same_prompts():
    from pixelvla_model import PLACE, Box
    from pixelvla_model import Point as ModelPoint
    from std_msgs.msg import Header

    header = Header(frame_id="camera")
    header.stamp.sec = 7
    box = msg_from_prompt(Box(10.5, 20.0, 30.0, 44.5), header, "words-1")
    place = msg_from_prompt(ModelPoint(100.0, 50.5, PLACE), header, "words-place-1")
    assert box.type == VisualPrompt.BOX and box.header.stamp.sec == 7 and box.prompt_id == "words-1"
    assert prompt_from_msg(box, HW) == [Box(10.5, 20.0, 30.0, 44.5)]
    assert list(place.labels) == [1] and prompt_from_msg(place, HW, place=True) == [ModelPoint(100.0, 50.5, PLACE)]


def test_accepting_the_words_prompts_publishes_the_place_of_the_same_frame_first_then_the_target():
    target, place, older = points((5, 5), pid="words-2"), points((9, 9), pid="words-place-2"), points((9, 9))
    target.header.stamp.sec = place.header.stamp.sec = 2
    older.header.stamp.sec = 1
    assert words_to_accept(target, place) == [(True, place), (False, target)]
    assert words_to_accept(target, older) == [(False, target)]  # proposed on another frame
    assert words_to_accept(target, None) == [(False, target)] and words_to_accept(None, place) == []


def test_a_prompt_before_the_first_frame_is_checked_on_it_and_the_previous_one_comes_back():
    i = inputs()
    i.set_prompt(points((30, 40), pid="good"))
    i.set_prompt(points((500, 3), pid="outside"))  # no frame yet: its coordinates cannot be checked
    refused = i.frame_arrived(HW, now=0.0)
    assert len(refused) == 1 and "outside" in refused[0] and "prompt refused" in refused[0]
    assert i.prompts.msg[False].prompt_id == "good" and len(i.snapshot()[1]) == 1
    assert i.frame_arrived(HW, now=0.1) == []  # refused once, not per frame


def test_a_place_prompt_for_a_model_without_them_is_refused():
    i = inputs(place_prompts=False)
    with pytest.raises(PromptError, match="not trained with place prompts"):
        i.set_prompt(points((10, 10)), place=True)


def test_the_segmenters_check_is_the_same_function():
    with pytest.raises(PromptError, match="NaN"):
        check_prompt(points((math.nan, 1)), HW, max_prompts=4)
    with pytest.raises(PromptError, match="at most 4"):
        check_prompt(points(*[(k, k) for k in range(5)]), None, max_prompts=4)
    assert check_prompt(points(*[(k, k) for k in range(5)]), HW, max_prompts=0)  # 0: any number
    slots = PromptSlots(max_prompts=4)
    slots.set_image_size(HW)
    slots.offer(points((1, 1)))
    assert len(slots.prompts()) == 1


# ---------------------------------------------------------------- mask (item 13)
def test_a_mask_of_another_size_is_refused_once_and_the_previous_one_stays():
    i = inputs()
    i.frame_arrived(HW, now=0.0)
    good = np.zeros(HW, bool)
    good[10:20, 10:20] = True
    i.set_mask(good)
    with pytest.raises(InputError, match="mask 100x100 does not match the camera image 160x120"):
        i.set_mask(np.ones((100, 100), bool))
    assert i.snapshot()[2] is good
    early = inputs()
    early.set_mask(np.ones((100, 100), bool))  # before any frame: compared with the first one
    assert "mask refused: mask 100x100" in early.frame_arrived(HW, now=0.0)[0]
    assert early.snapshot()[2] is None and early.frame_arrived(HW, now=0.1) == []
    early.set_mask(np.zeros((100, 100), bool))  # an empty mask clears, whatever its size
    assert early.snapshot()[2] is None


def test_the_mask_lag_rule():
    assert mask_lag_problem(100.0, 100.0, 0.5) == ""        # computed from this very frame (the simulator's)
    assert mask_lag_problem(100.2, 100.0, 0.5) == ""        # one frame behind
    assert mask_lag_problem(100.0, 100.5, 0.5) == ""        # the segmenter saw a newer frame first
    assert "from an image 0.6 s before the frame, more than max_mask_lag 0.5 s" in mask_lag_problem(100.6, 100.0, 0.5)
    assert "from an image 0.7 s after the frame" in mask_lag_problem(100.0, 100.7, 0.5)
    assert mask_lag_problem(100.0, 0.0, 0.5) == ""            # unstamped: an operator's mask, tied to no frame
    assert mask_lag_problem(0.0, 0.0, 0.5) == ""            # nothing stamped: nothing to compare


def test_a_lagging_mask_holds_the_model_until_it_catches_up_or_is_cleared():
    i = PolicyInputs(JOINTS, max_state_age=1.0, max_mask_lag=0.5)
    i.set_model(limits())
    i.set_instruction("pick up the cube")
    target = np.zeros(HW, bool)
    target[10:20, 10:20] = True
    i.frame_arrived(HW, now=50.0, stamp=50.0)
    i.set_mask(target, stamp=50.0)
    assert i.blocking(now=50.0) == ""
    i.frame_arrived(HW, now=51.0, stamp=51.0)  # the segmenter fell 1 s behind
    assert "max_mask_lag 0.5 s" in i.blocking(now=51.0) and "max_mask_lag" in i.waiting_for(now=51.0)
    i.set_mask(target, stamp=50.9)  # caught up
    assert i.blocking(now=51.0) == ""
    i.frame_arrived(HW, now=52.0, stamp=52.0)
    assert i.blocking(now=52.0)
    i.set_mask(np.zeros(HW, bool), stamp=50.0)  # cleared: no target mask, nothing to align
    assert i.blocking(now=52.0) == "" and i.snapshot()[2] is None


# ---------------------------------------------------------------- robot state, waiting (items 4b, 14)
def test_a_missing_stale_or_non_finite_robot_state_blocks_the_model_with_the_reason():
    i = inputs(state_width=7)
    i.set_instruction("pick up the cube")
    i.frame_arrived(HW, now=10.0)
    assert "/joint_states with waist" in i.blocking(10.0) and "none complete yet" in i.waiting_for(10.0)
    i.set_state(np.zeros(7), stamp=10.0)
    assert i.blocking(10.5) == "" and i.waiting_for(10.5) == ""
    assert np.array_equal(i.snapshot()[3], np.zeros(7))
    assert "1.5 s old, more than max_joint_state_age 1 s" in i.blocking(11.5)
    i.set_state(np.array([0.0] * 6 + [math.nan]), stamp=11.5)
    assert "NaN/inf" in i.blocking(11.5)
    i.set_state(np.zeros(7), stamp=11.6)
    assert i.blocking(11.7) == ""


def test_waiting_names_every_missing_input():
    i = PolicyInputs(JOINTS, 1.0)
    assert "not configured" in i.blocking(0.0)
    i.set_model(limits())
    assert i.waiting_for(0.0) == ("an instruction on /pixelvla/instruction; "
                                  "a camera frame on /camera/image_raw (none yet)")
    i.set_instruction("pick up the cube")
    i.frame_arrived(HW, now=1.0)
    assert i.waiting_for(2.0) == ""
    assert i.waiting_for(4.0) == "a camera frame on /camera/image_raw (none for 3.0 s)"
    assert i.snapshot()[3] is None  # a model without a robot state gets none


def test_a_model_with_fewer_actions_than_the_periods_between_its_runs_is_refused():
    with pytest.raises(InputError, match="steps_per_inference 6 exceeds the model's chunk of 5 actions"):
        PolicyInputs(JOINTS, 1.0, steps_per_inference=6).set_model(limits(chunk_size=5))
    assert PolicyInputs(JOINTS, 1.0, steps_per_inference=5).set_model(limits(chunk_size=5)) == []


def test_a_model_reading_other_joints_is_refused():
    with pytest.raises(InputError, match="reads 3 robot-state values"):
        PolicyInputs(JOINTS, 1.0).set_model(limits(state_width=3))


# ---------------------------------------------------------------- camera rate, lost frames (item 20)
def camera(rate, n, loss, jitter, seed):
    """Stamps of n frames at `rate` Hz with relative stamp jitter; which ones arrive with probability 1 - loss."""
    rng = np.random.default_rng(seed)
    stamps = 1000.0 + np.arange(n) / rate + rng.normal(0.0, jitter / rate, n)
    arrived = rng.random(n) >= loss
    arrived[0] = arrived[-1] = True
    return stamps[arrived], int((~arrived).sum())


@pytest.mark.parametrize("loss", [0.0, 0.1, 0.5, 0.8])
@pytest.mark.parametrize("rate", [5.0, 30.0])
def test_camera_rate_and_lost_frames_from_stamps(rate, loss):
    stamps, lost = camera(rate, 2000, loss, jitter=0.03, seed=int(rate * 10 + loss * 100))
    monitor = CameraRate()
    for stamp in stamps:
        monitor.add(stamp)
        monitor.add(stamp)  # the same frame again counts once
    assert monitor.rate == pytest.approx(rate, rel=0.02)
    assert abs(monitor.lost - lost) <= max(2, 0.01 * lost), (monitor.lost, lost)


def test_pauses_unstamped_frames_and_clock_resets_are_not_losses():
    monitor = CameraRate()
    for k in range(20):
        monitor.add(100.0 + 0.1 * k)
    monitor.add(0.0)  # unstamped
    for k in range(20):
        monitor.add(200.0 + 0.1 * k)  # the camera paused for ~100 s (a simulator reset)
    assert monitor.lost == 0 and monitor.rate == pytest.approx(10.0)
    for k in range(20):
        monitor.add(5.0 + 0.1 * k)  # the clock went back: start over
    monitor.add(5.0 + 0.1 * 22)
    assert monitor.lost == 2


def test_estimate_period_with_mostly_lost_frames():
    intervals = [0.1] * 10 + [0.2] * 15 + [0.3] * 10 + [0.5] * 10 + [1.0] * 5
    assert estimate_period(intervals) == pytest.approx(0.1)


# ---------------------------------------------------------------- QoS duplicates (item 15)
def test_duplicate_filter_drops_the_copy_from_the_other_subscription_only():
    f = DuplicateFilter(window=2.0)
    assert not f.is_duplicate("a", "latched", now=0.0)
    assert f.is_duplicate("a", "live", now=0.01)          # a latched publisher's message, twice
    assert not f.is_duplicate("a", "live", now=1.0)       # the operator repeats it: a new message
    assert not f.is_duplicate("a", "live", now=2.0)
    assert not f.is_duplicate("b", "latched", now=3.0)
    assert not f.is_duplicate("c", "latched", now=3.01)
    assert f.is_duplicate("b", "live", now=3.02) and f.is_duplicate("c", "live", now=3.03)  # interleaved twins
    assert not f.is_duplicate("d", "latched", now=4.0)
    assert not f.is_duplicate("d", "live", now=7.0)       # too late to be its twin
    # Both subscriptions get the bytes the writer serialized once, so a NaN field equals itself. (Serializing
    # twice here could differ in CDR padding bytes, which nothing initialises.)
    nan = serialize_message(points((math.nan, 1.0)))
    assert not f.is_duplicate(nan, "live", now=8.0)
    assert f.is_duplicate(bytes(nan), "latched", now=8.0)


# ---------------------------------------------------------------- prompts placed from the gripper
def test_a_model_that_places_its_prompts_waits_for_the_calibration_and_the_state_then_gets_the_click_map():
    from pixelvla_robots.camera import CameraModel
    from pixelvla_ros.policy_inputs import PromptPlacing

    # a camera 1 m above the table looking straight down, calibrated at twice the frames' resolution
    camera = {"now": None}
    down = CameraModel("c", 320, 240, 200.0, 200.0, 159.5, 119.5, np.array([0.3, 0.0, 1.0]),
                       np.diag([1.0, -1.0, -1.0]))
    placing = PromptPlacing(lambda: camera["now"], lambda state: np.array([state[0], 0.0, 0.2]), plane_z=0.02)
    with pytest.raises(InputError, match="cannot place them"):
        PolicyInputs(JOINTS, 1.0).set_model(limits(prompt_offsets=True))
    i = PolicyInputs(JOINTS, 1.0, placing=placing)
    i.set_model(limits(prompt_offsets=True))
    i.set_instruction("put this cube in the bowl")
    i.frame_arrived(HW, now=10.0)
    assert "/joint_states" in i.blocking(10.0)  # the TCP comes from the robot state, even for a model without it
    i.set_state(np.r_[0.25, np.zeros(6)], stamp=10.0)
    assert i.blocking(10.0).startswith("the camera's calibration")
    camera["now"] = down
    assert i.blocking(10.0) == ""
    instruction, prompts, mask, state, click_map, _ = i.snapshot()
    assert state is None  # the model does not read the state itself
    h = click_map.astype(float) @ [0.5, 0.5, 1.0]  # the middle of the frame: straight below the camera
    np.testing.assert_allclose(h[:3] / h[3], [0.3 - 0.25, 0.0, 0.02 - 0.2], atol=1e-6)
    assert inputs().snapshot()[4] is None  # a model without them gets none
