"""The console's web server without ROS or a browser: HTTP, the WebSocket protocol, flow control, who operates, and
who may connect. An aiohttp client stands in for the page; every connection stays on this machine."""
import asyncio
import concurrent.futures
import io
import json
import struct
import time

import numpy as np
import pytest
from aiohttp import ClientSession, CookieJar, WSMsgType, WSServerHandshakeError
from PIL import Image

from pixelvla_ros.console.server import Actions, ConsoleServer
from pixelvla_ros.console.state import ConsoleState
from support.console import listening_addresses, this_machines_address


class Recorder:
    """Actions that record what the page asked for."""

    def __init__(self):
        self.calls = []

    def actions(self) -> Actions:
        def reset():
            done = concurrent.futures.Future()
            done.set_result((True, "e-stop reset"))
            self.calls.append(("reset_estop",))
            return done

        return Actions(publish_prompt=lambda spec, frame: self.calls.append(("prompt", spec, frame)),
                       clear_prompts=lambda: self.calls.append(("clear",)),
                       publish_instruction=lambda text: self.calls.append(("instruction", text)),
                       estop=lambda: self.calls.append(("estop",)), reset_estop=reset,
                       sim_reset=lambda request: self.calls.append(("sim_reset", request)),
                       accept_words=lambda: self.calls.append(("accept_words",)))


@pytest.fixture
def console():
    """A server on a free loopback port with a state and recorded actions; yields (server, state, recorder)."""
    state, recorder = ConsoleState(tasks=["put_red_cube_on_plate"]), Recorder()
    server = ConsoleServer(state, recorder.actions(), host="127.0.0.1", port=0, max_fps=50.0, control_grace=0.0)
    server.start()
    try:
        yield server, state, recorder
    finally:
        server.stop()


def put_frame(server, state, seq_stamp: int, size=(48, 64)):
    state.put_frame(np.full((*size, 3), seq_stamp % 256, np.uint8), (seq_stamp, 0), "camera_optical", time.monotonic())
    server.notify()


class Page:
    """One WebSocket client: collects what the server sends."""

    def __init__(self, ws):
        self.ws = ws

    async def next(self, kind: str, timeout: float = 5.0):
        """The next message of `kind` ("frame", "state", "result", "hello"); frames as (header, JPEG bytes)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await asyncio.wait_for(self.ws.receive(), max(0.01, deadline - time.monotonic()))
            if message.type == WSMsgType.BINARY:
                length = struct.unpack_from("<I", message.data)[0]
                if kind == "frame":
                    return json.loads(message.data[4:4 + length]), message.data[4 + length:]
            elif message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if data["type"] == kind:
                    return data
            else:
                raise ConnectionError(f"connection closed: {message}")

    async def send(self, **request):
        await self.ws.send_json(request)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_page_and_assets_are_served_from_the_package_with_a_strict_policy(console):
    server, _, _ = console

    async def go():
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/") as page:
                assert page.status == 200 and "PixelVLA console" in await page.text()
                assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            for asset in ("console.js", "console.css"):
                async with http.get(f"http://127.0.0.1:{server.port}/static/{asset}") as response:
                    assert response.status == 200 and len(await response.read()) > 1000
            # a page elsewhere whose host name was rebound to 127.0.0.1 sends its own Host header
            async with http.get(f"http://127.0.0.1:{server.port}/", headers={"Host": "evil.example"}) as response:
                assert response.status == 403
            with pytest.raises(WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://127.0.0.1:{server.port}/ws", headers={"Origin": "http://evil.example"})
            assert refused.value.status == 403

    run(go())


def test_frames_are_jpeg_newest_only_and_one_at_a_time(console):
    server, state, _ = console

    async def go():
        async with ClientSession() as http:
            page = Page(await http.ws_connect(f"http://127.0.0.1:{server.port}/ws?session=a"))
            hello = await page.next("hello")
            assert hello["colors"]["target"] == [60, 255, 60]
            put_frame(server, state, 1)
            header, jpeg = await page.next("frame")
            assert header == {"seq": 1, "stamp": [1, 0], "frame_id": "camera_optical", "width": 64, "height": 48,
                              "path": None}
            image = np.asarray(Image.open(io.BytesIO(jpeg)))
            assert image.shape == (48, 64, 3) and abs(int(image.mean()) - 1) <= 2
            for stamp in range(2, 7):  # five frames while the page has not painted the first
                put_frame(server, state, stamp)
                await asyncio.sleep(0.02)
            with pytest.raises(asyncio.TimeoutError):
                await page.next("frame", timeout=0.5)  # nothing until the page says it painted frame 1
            await page.send(type="ack", seq=1, painted=time.time() * 1e3)
            header, _ = await page.next("frame")
            assert header["seq"] == 6  # the newest; 2..5 were never encoded or sent

    run(go())


def test_frame_rate_is_bounded_per_page(console):
    server, state, _ = console
    server.max_fps = 5.0

    async def go():
        async with ClientSession() as http:
            page = Page(await http.ws_connect(f"http://127.0.0.1:{server.port}/ws"))
            received, start = 0, time.monotonic()
            while time.monotonic() - start < 2.0:
                put_frame(server, state, int((time.monotonic() - start) * 1000) + 1)
                try:
                    header, _ = await page.next("frame", timeout=0.05)
                except asyncio.TimeoutError:
                    continue
                received += 1
                await page.send(type="ack", seq=header["seq"], painted=time.time() * 1e3)
            assert 5 <= received <= 12, received  # 5 a second (+ the first at once), not the 50 published

    run(go())


def test_one_page_operates_others_watch_and_anyone_may_stop(console):
    server, state, recorder = console

    async def go():
        async with ClientSession() as http:
            a = Page(await http.ws_connect(f"http://127.0.0.1:{server.port}/ws?session=a"))
            assert (await a.next("state"))["control"]["you"]
            b = Page(await http.ws_connect(f"http://127.0.0.1:{server.port}/ws?session=b"))
            assert not (await b.next("state"))["control"]["you"]
            put_frame(server, state, 41)
            header, _ = await a.next("frame")
            await a.send(type="prompt", frame=header["seq"], marks="target", kind="point", points=[[10.5, 20.5]])
            result = await a.next("result")
            assert result["ok"] and result["prompt"] == {"marks": "target", "kind": "point", "points": [[10.5, 20.5]]}
            (_, spec, frame), = [c for c in recorder.calls if c[0] == "prompt"]
            assert spec.points == ((10.5, 20.5),) and frame["stamp"] == [41, 0] and frame["frame_id"] == "camera_optical"
            await b.send(type="instruction", text="pick it")
            refused = await b.next("result")
            assert not refused["ok"] and "another page has control" in refused["message"]
            await b.send(type="estop")  # a watcher may stop the robot
            assert (await b.next("result"))["ok"] and ("estop",) in recorder.calls
            await b.send(type="take_control")
            assert (await b.next("result"))["ok"]
            await b.send(type="instruction", text="  pick it  ")
            assert (await b.next("result"))["ok"] and ("instruction", "pick it") in recorder.calls
            await b.send(type="reset_estop")
            assert (await b.next("result"))["message"] == "e-stop reset"
            while (await a.next("state"))["control"]["you"]:
                pass  # a learns it is watching now
            await b.send(type="sim_reset", task="put_red_cube_on_plate", seed=4)
            assert (await b.next("result"))["ok"] and ("sim_reset", {"task": "put_red_cube_on_plate", "seed": 4}) in recorder.calls
            await b.send(type="sim_reset", task="fly", seed=4)
            assert "unknown task" in (await b.next("result"))["message"]
            await b.send(type="prompt", frame=999, marks="target", kind="point", points=[[1, 1]])
            assert "too old" in (await b.next("result"))["message"]
            await b.send(type="accept_words")
            assert "no words' prompts to accept" in (await b.next("result"))["message"]
            state.set_prompt("target", {"kind": "box", "id": "words-1", "points": [[1, 2], [5, 6]]}, proposed=True)
            await b.send(type="accept_words")
            assert (await b.next("result"))["ok"] and ("accept_words",) in recorder.calls
            await b.ws.close()
            while not (await a.next("state"))["control"]["you"]:
                pass  # b left: control comes back to a (grace 0 s here)

    run(go())


def test_display_latency_from_the_pages_paint_reports(console):
    server, state, _ = console

    async def go():
        async with ClientSession() as http:
            page = Page(await http.ws_connect(f"http://127.0.0.1:{server.port}/ws"))
            now = time.time()
            state.put_frame(np.zeros((8, 8, 3), np.uint8), (int(now), int(now % 1 * 1e9)), "cam", time.monotonic())
            server.notify()
            header, _ = await page.next("frame")
            await page.send(type="ack", seq=header["seq"], painted=(now + 0.025) * 1e3)
            for _ in range(20):
                summary = (await page.next("state"))["display_latency"]
                if summary:
                    break
            assert summary["n"] == 1 and summary["p50_ms"] == pytest.approx(25.0, abs=0.5)

    run(go())


def test_a_console_beyond_loopback_refuses_requests_without_its_token():
    """Bound to this machine's own LAN address (traffic to it never leaves the machine), else to 0.0.0.0 and
    reached through 127.0.0.1: without a token given, one is generated, and requests without it are refused."""
    from pixelvla_ros.console.security import access_token

    address = this_machines_address()
    bind, connect = (address, address) if address else ("0.0.0.0", "127.0.0.1")
    token = access_token(bind, "")
    assert token
    server = ConsoleServer(ConsoleState(), Recorder().actions(), host=bind, port=0, token=token)
    server.start()
    base = f"http://{connect}:{server.port}"
    assert server.url.endswith(f":{server.port}/?token={token}")

    async def go():
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:  # keeps cookies of IP hosts, as browsers do
            for url in (f"{base}/", f"{base}/static/console.js", f"{base}/?token=wrong"):
                async with http.get(url) as response:
                    assert response.status == 401, url
            with pytest.raises(WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}/ws")
            assert refused.value.status == 401
            async with http.get(f"{base}/?token={token}") as response:  # the printed address
                assert response.status == 200
            async with http.get(f"{base}/static/console.js") as response:  # the page's assets: the cookie
                assert response.status == 200
            async with ClientSession() as other:
                async with other.get(f"{base}/static/console.js", headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 200
            ws = await http.ws_connect(f"{base}/ws?session=x")
            assert (await Page(ws).next("hello"))["session"] == "x"
            await ws.close()

    try:
        run(go())
    finally:
        server.stop()


def test_by_default_nothing_listens_beyond_loopback(console):
    server, _, _ = console
    assert listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, and nothing else on that port
