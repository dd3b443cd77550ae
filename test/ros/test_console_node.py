"""The console node without a browser: where it listens, its token beyond loopback, and its relative topic names."""
import urllib.error
import urllib.request

import pytest

from support.console import NodeProcess, listening_addresses, start_console, this_machines_address, wait_until

pytestmark = pytest.mark.ros


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_by_default_the_console_listens_on_loopback_only(ros_domain):
    node, url = start_console()
    try:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening_addresses(port) == ["0100007F"], "something listens beyond 127.0.0.1 on the console's port"
        assert status(url) == 200
    finally:
        assert node.stop() == 0, node.output


def test_beyond_loopback_the_console_prints_a_token_and_refuses_requests_without_it(ros_domain):
    """This machine's own address where it has one (traffic to it never leaves the machine), else every address,
    reached through 127.0.0.1."""
    address = this_machines_address()
    node, url = start_console(f"host:={address or '0.0.0.0'}")
    try:
        assert "?token=" in url
        port, token = url.split(":")[-1].split("/")[0], url.split("?token=")[1]
        base = f"http://{address or '127.0.0.1'}:{port}"
        assert status(f"{base}/") == 401
        assert status(f"{base}/?token=nope") == 401
        assert status(f"{base}/?token={token}") == 200
    finally:
        assert node.stop() == 0, node.output


def test_a_taken_port_stops_the_node_with_a_message_that_says_what_to_do(ros_domain):
    first, url = start_console()
    port = url.rsplit(":", 1)[1].strip("/")
    second = None
    try:
        second = NodeProcess("pixelvla_ros.nodes.console_node", "-p", f"port:={port}")
        assert wait_until(lambda: second.process.poll() is not None, timeout=30)
        assert second.process.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.output and "console:=false" in second.output
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_topics_are_relative_so_a_namespace_moves_them(ros_node):
    process = NodeProcess("pixelvla_ros.nodes.console_node", "-p", "port:=0", "-r", "__ns:=/arm1")
    try:
        process.find("operator console: ")
        graph = ros_node.node
        assert ros_node.spin_until(lambda: graph.count_publishers("/arm1/pixelvla/prompt") == 1
                                   and graph.count_subscribers("/arm1/pixelvla/status") == 2
                                   and graph.count_publishers("/arm1/pixelvla/estop") == 1, timeout=20)
        assert graph.count_publishers("/pixelvla/prompt") == 0
        names = dict(graph.get_service_names_and_types())
        assert "/arm1/console/describe_parameters" in names
    finally:
        assert process.stop() == 0, process.output


def test_the_camera_is_read_only_while_a_page_is_open(ros_node):
    """A console nobody watches costs the camera's stream nothing (no subscription, no frames copied)."""
    import asyncio

    from aiohttp import ClientSession

    node, url = start_console()
    graph = ros_node.node
    try:
        assert ros_node.spin_until(lambda: graph.count_publishers("/pixelvla/estop") == 1, timeout=20)
        ros_node.spin_for(1.0)
        assert graph.count_subscribers("/camera/image_raw") == 0

        async def page_open_then_closed():
            async with ClientSession() as http:
                ws = await http.ws_connect(url.replace("http", "ws") + "ws")
                counts = []
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    counts.append(graph.count_subscribers("/camera/image_raw"))
                    if counts[-1]:
                        break
                await ws.close()
                return counts[-1]

        assert asyncio.run(page_open_then_closed()) == 1
        assert ros_node.spin_until(lambda: graph.count_subscribers("/camera/image_raw") == 0, timeout=20)
    finally:
        assert node.stop() == 0, node.output


def test_a_compressed_camera_reaches_the_page(ros_node):
    """image_transport compressed: JPEG frames on camera/image_raw/compressed reach a page at their size and
    content (decoded when sent, encoded again for the page), stamped as they were; a corrupt one is skipped."""
    import asyncio
    import io
    import json
    import struct

    import numpy as np
    from aiohttp import ClientSession, WSMsgType
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    from pixelvla_ros import qos
    from pixelvla_ros.benchmarks import synthetic_frame
    from pixelvla_ros.image_conversions import rgb_to_compressed

    node, url = start_console("image_transport:=compressed")
    camera = ros_node.publisher(CompressedImage, "/camera/image_raw/compressed", qos.SENSOR)
    rgb = synthetic_frame(640, 480)
    good = rgb_to_compressed(rgb, "jpeg", quality=95)
    good.header.stamp.sec, good.header.frame_id = 7, "camera_optical"
    corrupt = rgb_to_compressed(rgb, "jpeg")
    corrupt.data = bytes(corrupt.data[:200])  # a valid header, the pixels cut off
    corrupt.header.stamp.sec = 8

    async def first_frame():
        async with ClientSession() as http:
            async with http.ws_connect(url.replace("http", "ws") + "ws") as ws:
                for _ in range(300):
                    camera.publish(corrupt)
                    camera.publish(good)
                    try:
                        message = await ws.receive(timeout=0.1)
                    except asyncio.TimeoutError:
                        continue
                    if message.type == WSMsgType.BINARY:
                        length = struct.unpack_from("<I", message.data)[0]
                        return json.loads(message.data[4:4 + length]), message.data[4 + length:]
        return None, None

    try:
        info, jpeg = asyncio.run(first_frame())
        assert info is not None, node.output
        assert (info["width"], info["height"], info["stamp"], info["frame_id"]) == (640, 480, [7, 0], "camera_optical")
        shown = np.asarray(PILImage.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)
        assert np.abs(shown - rgb).mean() < 4.0  # two JPEG round trips
    finally:
        assert node.stop() == 0, node.output
