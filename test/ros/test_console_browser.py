"""The operator's console end to end in a real browser: headless Chromium (Debian's, driven by Playwright) on the
console node's page, the test's own node publishing the camera and reading what the console publishes.

Skipped only where /usr/bin/chromium is missing (`make test` installs it).
"""
import io
import json
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from pixelvla_ros import qos
from pixelvla_ros.console.browser import CHROMIUM, open_browser
from pixelvla_ros.image_conversions import mono_to_image, rgb_to_image
from pixelvla_ros.msg import ActionChunk, PolicyStatus, VisualPrompt
from pixelvla_robots import wx250s
from pixelvla_robots.camera import CameraModel
from pixelvla_training.visualization import PATH_COLOR, PLACE_COLOR, TARGET_COLOR, path_in_image, predicted_tcp_path
from support.console import RosThread, start_console, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium chromium-driver)"))]

W, H = 320, 240
GREY = 100
FRAME_ID = "camera_color_optical_frame"


def look_at(position, target) -> CameraModel:
    z = np.asarray(target, float) - position
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    return CameraModel("cam", W, H, 260.0, 260.0, (W - 1) / 2, (H - 1) / 2, np.asarray(position, float),
                       np.stack([x, np.cross(z, x), z], axis=1))


TCP = wx250s.fk(wx250s.HOME_Q)[0]
CAMERA = look_at([0.75, 0.05, 0.55], TCP)


class Camera:
    """Grey frames at 20 Hz with increasing stamps, from the test's node; `paused` stops them."""

    def __init__(self, ros: RosThread) -> None:
        self.pub = ros.publisher(Image, "/camera/image_raw", qos.SENSOR)
        self.info_pub = ros.publisher(CameraInfo, "/camera/camera_info", qos.SENSOR)
        self.paused = False
        self.sec = 1000
        self.frame = rgb_to_image(np.full((H, W, 3), GREY, np.uint8))
        self.frame.header.frame_id = FRAME_ID
        info = CameraInfo(width=W, height=H, **{k: v for k, v in CAMERA.camera_info().items() if k in ("k", "p", "d", "r")})
        info.header.frame_id = FRAME_ID
        self.info = info
        ros.timer(0.05, self.tick)

    def tick(self) -> None:
        if not self.paused:
            self.sec += 1
            self.frame.header.stamp.sec = self.sec
            self.pub.publish(self.frame)
            self.info_pub.publish(self.info)


@pytest.fixture
def ros(ros_domain):
    thread = RosThread(ros_domain)
    yield thread
    thread.close()


@pytest.fixture
def console(ros):
    node, url = start_console()
    yield node, url
    assert node.stop() == 0, node.output


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        contexts = []

        def open_page(url):
            context = open_browser(playwright, tmp_path / f"profile{len(contexts)}")
            contexts.append(context)
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("() => window.pixelvlaConsole && window.pixelvlaConsole.connected")
            return page

        yield open_page
        for context in contexts:
            context.close()


def shown(page) -> dict | None:
    return page.evaluate("() => window.pixelvlaConsole.shown")


def screen_xy(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates (CSS px) of image pixel coordinates (x, y), corner origin."""
    box = page.locator("#view").bounding_box()
    return box["x"] + x * box["width"] / W, box["y"] + y * box["height"] / H


def still_frame(page, camera: Camera, ready=lambda header: True) -> dict:
    """Pause the camera once the page shows a frame whose header satisfies `ready`; the header of the frame
    left on screen."""
    assert wait_until(lambda: (header := shown(page)) is not None and ready(header), timeout=30), \
        "no frame (or none ready) reached the page"
    camera.paused = True
    time.sleep(0.5)  # the last frame in flight is painted
    header = shown(page)
    time.sleep(0.3)
    assert shown(page) == header
    return header


def screenshot(page) -> np.ndarray:
    """The view as the operator sees it: (h, w, 3) uint8, CSS px (device scale 1)."""
    return np.asarray(PILImage.open(io.BytesIO(page.locator("#view").screenshot())).convert("RGB"))


def pixel(image: np.ndarray, page, x: float, y: float) -> np.ndarray:
    """The screenshot's colour at image pixel coordinates (x, y)."""
    box = page.locator("#view").bounding_box()
    return image[int(y * box["height"] / H), int(x * box["width"] / W)].astype(int)


def drawn_near(image: np.ndarray, page, x: float, y: float, color, radius: int = 2) -> bool:
    """Some screenshot pixel within `radius` CSS px of image point (x, y) has exactly `color` (an outline
    drawn with anti-aliasing covers whole pixels only along its middle)."""
    box = page.locator("#view").bounding_box()
    row, col = int(y * box["height"] / H), int(x * box["width"] / W)
    patch = image[row - radius:row + radius + 1, col - radius:col + radius + 1]
    return bool(np.any(np.all(patch == color, axis=-1)))


def test_clicks_drags_and_lines_publish_prompts_where_they_were_drawn(ros, console, browser):
    camera = Camera(ros)
    targets = ros.collect(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    places = ros.collect(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    # the overlay drawn into the frames: the target mask and the predicted path of a chunk
    mask = np.zeros((H, W), np.uint8)
    mask[150:200, 20:70] = 255
    ros.publisher(Image, "/pixelvla/mask", qos.LATCHED).publish(mono_to_image(mask))
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = CAMERA.position
    qx, qy, qz, qw = CAMERA.quaternion_xyzw
    pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = qx, qy, qz, qw
    ros.publisher(PoseStamped, "/camera/pose", qos.LATCHED).publish(pose)
    joints = ros.publisher(JointState, "/joint_states", qos.SENSOR)
    chunks = ros.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    actions = np.tile([0.0, 0.03, 0.0, 0.0, 0.0, 0.0, 1.0], (5, 1))
    path = path_in_image(CAMERA, predicted_tcp_path(wx250s.HOME_Q, actions))

    def robot():
        joints.publish(JointState(name=list(wx250s.JOINT_NAMES), position=list(map(float, wx250s.HOME_Q))))
        chunks.publish(ActionChunk(horizon=5, action_dim=7, dt=0.2, actions=actions.astype(np.float32).ravel().tolist(),
                                   inference_latency=0.012))
    ros.timer(0.2, robot)

    _, url = console
    page = browser(url)
    # joint state, chunk and camera pose reach the console (under load, later than the first frames)
    frame = still_frame(page, camera, ready=lambda header: header["path"] is not None)
    assert frame["width"] == W and frame["height"] == H and frame["frame_id"] == FRAME_ID

    # a click: a target POINT at the clicked pixel, stamped with the frame on screen
    page.mouse.click(*screen_xy(page, 80.0, 60.0))
    assert wait_until(lambda: targets, timeout=10), "no prompt published"
    prompt = targets[-1][1]
    assert prompt.type == VisualPrompt.POINT and list(prompt.labels) == [1]
    assert abs(prompt.points[0].x - 80.0) <= 1 and abs(prompt.points[0].y - 60.0) <= 1
    assert [prompt.header.stamp.sec, prompt.header.stamp.nanosec] == frame["stamp"]
    assert prompt.header.frame_id == FRAME_ID
    # Shift + click: the place
    page.keyboard.down("Shift")
    page.mouse.click(*screen_xy(page, 240.0, 180.0))
    page.keyboard.up("Shift")
    assert wait_until(lambda: places, timeout=10)
    place = places[-1][1]
    assert abs(place.points[0].x - 240.0) <= 1 and abs(place.points[0].y - 180.0) <= 1

    # the screenshot: the marks where they were clicked, the mask tinted, the path drawn, the rest the camera's grey
    page.wait_for_function("() => { const s = window.pixelvlaConsole.state;"
                           " return s && s.prompts.target && s.prompts.place && s.gripper.planned !== null }")
    page.wait_for_timeout(300)
    image = screenshot(page)
    assert np.all(pixel(image, page, 80.0, 60.0) == TARGET_COLOR)
    assert np.all(pixel(image, page, 240.0, 180.0) == PLACE_COLOR)
    assert np.all(np.abs(pixel(image, page, 200.0, 40.0) - GREY) <= 6)  # untouched camera pixels
    r, g, b = pixel(image, page, 45.0, 175.0)  # the mask, tinted cyan
    assert b > r + 40 and g > r + 40
    assert frame["path"] is not None and np.allclose(frame["path"], path)  # the latest chunk's, with its frame
    for x, y in path[1:]:  # the predicted path, drawn by the page: a dot per action
        assert drawn_near(image, page, x, y, PATH_COLOR), (x, y)

    # a drag: a BOX, ordered and where it was drawn
    page.mouse.move(*screen_xy(page, 220.0, 110.0))
    page.mouse.down()
    page.mouse.move(*screen_xy(page, 180.0, 80.0), steps=5)
    page.mouse.move(*screen_xy(page, 150.0, 40.0), steps=5)
    page.mouse.up()
    assert wait_until(lambda: targets[-1][1].type == VisualPrompt.BOX, timeout=10)
    box = targets[-1][1]
    (x0, y0), (x1, y1) = [(p.x, p.y) for p in box.points]
    assert max(abs(x0 - 150), abs(y0 - 40), abs(x1 - 220), abs(y1 - 110)) <= 1, box.points
    page.wait_for_timeout(300)
    image = screenshot(page)
    assert drawn_near(image, page, 185.0, 40.0, TARGET_COLOR)  # on the box's top edge
    assert not np.all(pixel(image, page, 80.0, 60.0) == TARGET_COLOR)  # the point it replaced is gone

    # the line tool: clicks, then a double click ends the line
    page.click("button[data-tool=line]")
    for x, y in [(30.0, 200.0), (90.0, 150.0)]:
        page.mouse.click(*screen_xy(page, x, y))
    page.mouse.dblclick(*screen_xy(page, 150.0, 210.0))
    assert wait_until(lambda: targets[-1][1].type == VisualPrompt.LINE, timeout=10)
    line = [(p.x, p.y) for p in targets[-1][1].points]
    assert len(line) == 3 and np.allclose(line, [(30, 200), (90, 150), (150, 210)], atol=1), line

    # clear: a POINT without points on both topics
    page.click("#clear")
    assert wait_until(lambda: not targets[-1][1].points and not places[-1][1].points, timeout=10)


def test_the_words_prompts_are_shown_dashed_and_accepting_publishes_them_as_the_prompts(ros, console, browser):
    from geometry_msgs.msg import Point

    camera = Camera(ros)
    targets = ros.collect(VisualPrompt, "/pixelvla/prompt", qos.LATCHED)
    places = ros.collect(VisualPrompt, "/pixelvla/place_prompt", qos.LATCHED)
    _, url = console
    page = browser(url)
    frame = still_frame(page, camera)
    proposal = VisualPrompt(type=VisualPrompt.BOX, points=[Point(x=100.0, y=60.0), Point(x=180.0, y=140.0)],
                            prompt_id="words-1")
    proposal.header.stamp.sec, proposal.header.stamp.nanosec = frame["stamp"]
    place = VisualPrompt(type=VisualPrompt.POINT, points=[Point(x=250.0, y=190.0)], labels=[1], prompt_id="words-place-1")
    place.header = proposal.header
    ros.publisher(VisualPrompt, "/pixelvla/words/place_prompt", qos.LATCHED).publish(place)
    ros.publisher(VisualPrompt, "/pixelvla/words/prompt", qos.LATCHED).publish(proposal)
    page.wait_for_selector("#accept-words", state="visible", timeout=10000)
    page.wait_for_timeout(300)
    image = screenshot(page)
    assert any(drawn_near(image, page, x, 60.0, TARGET_COLOR) for x in range(105, 180, 5))  # the box's top edge, dashed
    # the place: a ring (7 CSS px), not the filled dot of a prompt in force
    assert drawn_near(image, page, 250.0, 190.0, PLACE_COLOR, radius=9)
    assert not drawn_near(image, page, 250.0, 190.0, PLACE_COLOR, radius=3)
    assert not targets or not targets[-1][1].points  # a proposal, not a prompt
    page.click("#accept-words")
    assert wait_until(lambda: targets and targets[-1][1].type == VisualPrompt.BOX and places and places[-1][1].points,
                      timeout=10), "the accepted words' prompts were not published"
    accepted, accepted_place = targets[-1][1], places[-1][1]
    assert [(p.x, p.y) for p in accepted.points] == [(100.0, 60.0), (180.0, 140.0)]
    assert [(p.x, p.y) for p in accepted_place.points] == [(250.0, 190.0)]
    assert accepted.header.stamp == proposal.header.stamp  # drawn on the frame the words saw
    page.wait_for_selector("#accept-words", state="hidden", timeout=10000)  # the target is named now


def test_instruction_status_episode_and_two_pages(ros, console, browser):
    instructions = ros.collect(String, "/pixelvla/instruction", qos.LATCHED)
    resets = ros.collect(String, "/sim/reset", qos.COMMAND)
    status = PolicyStatus(state=PolicyStatus.ACTIVE, backend="onnxruntime", model_id="console-test-model",
                          frames_received=123, frames_used=120, frames_dropped=3, mean_latency=0.02, p99_latency=0.03)
    ros.publisher(PolicyStatus, "/pixelvla/status", qos.LATCHED).publish(status)
    episode = {"task": "put_red_cube_on_plate", "seed": 7, "step": 12, "success": False, "done": False}
    ros.publisher(String, "/sim/episode", qos.LATCHED).publish(String(data=json.dumps(episode)))
    chunks = ros.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
    latencies = iter([0.010, 0.020, 0.030, 0.040] * 100)
    ros.timer(0.05, lambda: chunks.publish(ActionChunk(horizon=1, action_dim=7, inference_latency=next(latencies),
                                                       actions=[0.0] * 7)))
    _, url = console
    first = browser(url)

    # the status from /pixelvla/status, the latency percentiles from the chunks, the episode
    first.wait_for_function("() => document.querySelector('#status-table').textContent.includes('console-test-model')")
    table = first.text_content("#status-table")
    assert "onnxruntime" in table and "received 123, used 120, dropped 3" in table and "active" in table
    first.wait_for_function("() => /p50 2\\d\\.\\d ms, p95 40\\.0 ms/.test(document.querySelector('#status-table').textContent)")
    assert "put_red_cube_on_plate, seed 7, step 12" in first.text_content("#episode")

    # a typed instruction reaches the instruction topic (and the history)
    first.fill("#instruction", "put the green cube in the bowl")
    first.press("#instruction", "Enter")
    assert wait_until(lambda: any(m.data == "put the green cube in the bowl" for _, m in instructions), timeout=10)
    first.wait_for_function("() => document.querySelector('#instructions').textContent.includes('green cube')")

    # the next episode: same task, next seed
    first.click("#next-episode")
    assert wait_until(lambda: resets, timeout=10)
    assert json.loads(resets[-1][1].data) == {"task": "put_red_cube_on_plate", "seed": 8}

    # a second browser watches; its requests are refused until it takes control
    second = browser(url)
    second.wait_for_function("() => document.querySelector('#control-state').textContent.includes('another page operates')")
    assert "you operate" in first.text_content("#control-state")
    second.fill("#instruction", "from the watcher")
    second.press("#instruction", "Enter")
    second.wait_for_function("() => document.querySelector('#message').textContent.includes('another page has control')")
    second.click("#take-control")
    second.wait_for_function("() => document.querySelector('#control-state').textContent.includes('you operate')")
    first.wait_for_function("() => document.querySelector('#control-state').textContent.includes('another page operates')")
    second.fill("#instruction", "from the new operator")
    second.press("#instruction", "Enter")
    assert wait_until(lambda: any(m.data == "from the new operator" for _, m in instructions), timeout=10)
    assert not any(m.data == "from the watcher" for _, m in instructions)

    # the operator's page reloads (a dropped connection): it keeps control, and both pages keep working
    second.reload()
    second.wait_for_function("() => window.pixelvlaConsole && window.pixelvlaConsole.connected"
                             " && document.querySelector('#control-state').textContent.includes('you operate')")
    assert "another page operates" in first.text_content("#control-state")
    second.fill("#instruction", "after the reload")
    second.press("#instruction", "Enter")
    assert wait_until(lambda: any(m.data == "after the reload" for _, m in instructions), timeout=10)


PERIOD = 0.2  # s, control period of config/robots/widowx_bridge.yaml (5 Hz)


class FakeArm:
    """Joint states at 50 Hz that follow every command at once, and a policy sending a chunk every period."""

    def __init__(self, ros: RosThread) -> None:
        from trajectory_msgs.msg import JointTrajectory

        self.q = wx250s.HOME_Q.copy()
        self.commands = ros.collect(JointTrajectory, "/arm_controller/joint_trajectory", qos.COMMAND)
        self.joint_pub = ros.publisher(JointState, "/joint_states", qos.SENSOR)
        self.chunk_pub = ros.publisher(ActionChunk, "/pixelvla/action_chunk", qos.COMMAND)
        self.clock = ros.node.get_clock()
        self.sent = 0
        ros.timer(0.02, self.publish_joints)
        ros.timer(PERIOD, self.publish_chunk)

    def publish_joints(self) -> None:
        if self.commands and self.commands[-1][1].points:
            self.q = np.array(self.commands[-1][1].points[0].positions)
        msg = JointState(name=[*wx250s.JOINT_NAMES, *wx250s.FINGER_NAMES],
                         position=[*map(float, self.q), wx250s.FINGER_OPEN, -wx250s.FINGER_OPEN])
        msg.header.stamp = self.clock.now().to_msg()
        self.joint_pub.publish(msg)

    def publish_chunk(self) -> None:
        self.sent += 1
        dy = 0.01 if (self.sent // 10) % 2 == 0 else -0.01  # back and forth, inside the workspace
        msg = ActionChunk(horizon=2, action_dim=7, dt=PERIOD, action_space="ee_delta", sequence=self.sent,
                          actions=[0.0, dy, 0.0, 0.0, 0.0, 0.0, 1.0] * 2)
        msg.header.stamp = self.clock.now().to_msg()
        self.chunk_pub.publish(msg)

    def moves_after(self, t: float) -> list:
        return [m for arrived, m in list(self.commands) if arrived > t and m.points]

    def first_stop_after(self, t: float) -> float | None:
        return next((arrived for arrived, m in list(self.commands) if arrived > t and not m.points), None)


def test_estop_button_and_space_bar_hold_the_executor_until_reset(ros, console, browser):
    from pathlib import Path

    from support.console import NodeProcess

    robot = Path(__file__).resolve().parents[2] / "config" / "robots" / "widowx_bridge.yaml"
    arm = FakeArm(ros)
    executor = NodeProcess("pixelvla_ros.nodes.executor_node", "--params-file", str(robot))
    try:
        _, url = console
        page = browser(url)
        assert wait_until(lambda: arm.moves_after(0.0), timeout=60), f"the executor never moved:\n{executor.output}"
        page.wait_for_function("() => document.querySelector('#executor-state').textContent.includes('moving')")

        for press in (lambda: page.click("#estop"), lambda: page.keyboard.press("Space")):
            before = time.time()
            press()
            assert wait_until(lambda: arm.first_stop_after(before), timeout=5), "no stop command"
            pressed = page.evaluate("() => window.pixelvlaConsole.estopAt") / 1e3  # when the page handled the press
            stopped = arm.first_stop_after(before)
            print(f"e-stop: the stop command arrived {1e3 * (stopped - pressed):.0f} ms after the press")
            assert stopped - pressed < PERIOD, f"the arm stopped {stopped - pressed:.3f} s after the e-stop"
            time.sleep(1.5)  # chunks keep coming: nothing moves
            assert not arm.moves_after(stopped), "a move was sent while the e-stop was latched"
            page.wait_for_function("() => document.querySelector('#executor-state').textContent.includes('E-STOP')")
            reset = time.time()
            page.click("#reset-estop")
            page.wait_for_function("() => document.querySelector('#message').textContent.includes('e-stop reset')")
            assert wait_until(lambda: arm.moves_after(reset), timeout=10), "no move after the reset"
            page.wait_for_function("() => document.querySelector('#executor-state').textContent.includes('moving')")
    finally:
        executor.stop()
