"""The console's web server: the page, its assets and one WebSocket per open page (aiohttp, in a thread of its own).

Server -> page over the WebSocket:
- camera frames as binary messages: a 4-byte little-endian length, a JSON header (`Frame.info`: seq, stamp,
  frame_id, width, height; and the predicted TCP path of the latest chunk in image pixels), then a JPEG of the
  frame with the target mask blended in (encode_frame). Each page gets the newest frame only, at most
  `max_fps` a second, and the next one only after it reported the previous one painted ("ack"): a slow page or
  network never builds a backlog, and skipped frames cost nothing (a frame is encoded once for all pages, off the
  event loop, and only when a page wants it);
- JSON: {"type": "hello"} once, {"type": "state"} (ConsoleState.snapshot plus who operates) when something
  changed (at most 10 a second) and every second, {"type": "result"} for each request.
Page -> server, JSON: "ack" {seq, painted: epoch ms}; "estop" (anyone, never rate-limited); "take_control";
and, from the page in control only: "prompt" {frame: seq of the frame shown, marks, kind, points},
"clear", "instruction" {text}, "reset_estop", "sim_reset" {task, seed}, "next_episode".
Everything a request makes happen goes through `Actions`, which the node supplies.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import secrets
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image

from pixelvla_ros.console import security
from pixelvla_ros.console.prompts import GestureError, PromptSpec, build_prompt
from pixelvla_ros.console.state import ConsoleState, ControlArbiter, Frame, RateLimiter, next_episode, sim_reset_request
from pixelvla_training.visualization import MASK_COLOR, PATH_COLOR, PLACE_COLOR, TARGET_COLOR, tint_mask

STATIC = Path(__file__).parent / "static"
STATE_INTERVAL = 0.1    # s: state updates at most this often per page
STATE_REFRESH = 1.0     # s: and at least this often (ages, control hand-over after a grace period)
MAX_INSTRUCTION = 500   # characters
SHOWN_FRAMES = 64       # frames remembered, to stamp a prompt with the frame it was drawn on
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"}


@dataclass
class Actions:
    """What the page can make happen; supplied by the node, called from the server's thread."""

    publish_prompt: Callable[[PromptSpec, dict], None]          # the prompt, the info of the frame it was drawn on
    clear_prompts: Callable[[], None]
    publish_instruction: Callable[[str], None]
    estop: Callable[[], None]
    reset_estop: Callable[[], concurrent.futures.Future]        # resolves to (success, message)
    sim_reset: Callable[[dict], None]                           # {"task", "seed"}
    accept_words: Callable[[], None]                            # the policy's words' prompts become the prompts
    pages: Callable[[int], None] = lambda count: None           # pages open now (the node reads the camera for them)


def encode_frame(frame: Frame, mask: np.ndarray | None, path_xy: np.ndarray | None, quality: int) -> bytes:
    """The binary WebSocket message of a frame: header length (uint32 LE), JSON header, JPEG.

    The target mask is blended into the pixels (training.visualization.tint_mask, as the visualizer's overlay);
    the predicted path goes in the header ("path": image px, corner origin, null where behind the camera) and
    the page draws it, as the prompts, with lines as thin and sharp as the screen allows: the JPEG can then
    subsample its colours (4:2:0, ~40 % less encoding and decoding than 4:4:4) without smearing thin lines.
    """
    rgb = tint_mask(frame.rgb, mask) if mask is not None and mask.shape == frame.rgb.shape[:2] else frame.rgb
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    path = None if path_xy is None else [[x, y] if np.isfinite(x) and np.isfinite(y) else None
                                          for x, y in np.asarray(path_xy, dtype=float).tolist()]
    header = json.dumps({**frame.info, "path": path}).encode()
    return struct.pack("<I", len(header)) + header + buffer.getvalue()


@dataclass(eq=False)
class Client:
    """One open page."""

    ws: web.WebSocketResponse
    session: str
    frames: RateLimiter              # frames to this page
    requests: RateLimiter            # requests from this page
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    frame_seq: int = 0               # the last frame sent
    acked: bool = True               # the page painted it
    state_sent: float = -1e9         # monotonic s
    state_version: int = -1
    control: bool | None = None      # as last told


class ConsoleServer:
    """Serves the console on host:port from a thread of its own; `start()` returns once it listens."""

    def __init__(self, state: ConsoleState, actions: Actions, *, host: str = "127.0.0.1", port: int = 8080,
                 token: str | None = None, max_fps: float = 10.0, jpeg_quality: int = 80,
                 control_grace: float = 5.0) -> None:
        self.state, self.actions = state, actions
        self.host, self.port, self.token = host, port, token
        self.max_fps, self.jpeg_quality = max_fps, jpeg_quality
        self.arbiter = ControlArbiter(control_grace)
        self.clients: set[Client] = set()
        self.shown: OrderedDict[int, dict] = OrderedDict()  # seq -> Frame.info of frames sent to pages
        self.jpeg: tuple[int, bytes] = (0, b"")  # the newest encoded frame (seq, message)
        self.encoding: asyncio.Lock | None = None  # one encoder at a time: pages asking together share its result
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.runner: web.AppRunner | None = None
        self.started = threading.Event()
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ life cycle (any thread)
    def start(self, timeout: float = 10.0) -> str:
        """Listen; the page's address (with the token, if one is needed). OSError if the address is taken."""
        self.thread = threading.Thread(target=self._run, name="console-server", daemon=True)
        self.thread.start()
        if not self.started.wait(timeout):
            raise TimeoutError("the console server did not start")
        if self.error is not None:
            raise self.error
        return self.url

    def stop(self) -> None:
        if self.loop is not None and self.thread is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5.0)

    def notify(self) -> None:
        """Something the pages show changed (a frame, a status): wake their senders. Thread-safe."""
        if self.loop is not None and self.clients:
            try:
                self.loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:  # the loop is closing
                pass

    @property
    def url(self) -> str:
        every_address = self.host in security.EVERY_ADDRESS
        host = socket.gethostname() if every_address else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.error = exc
            self.started.set()
            self.loop.close()
            return
        self.started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self._close())
            self.loop.close()

    async def _listen(self) -> None:
        self.encoding = asyncio.Lock()
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_static("/static", STATIC)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host or None, self.port).start()
        self.port = self.runner.addresses[0][1]  # the one chosen, for port 0

    async def _close(self) -> None:
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"console stopping")
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        if not security.host_header_allowed(request.host, self.token is not None):
            return web.Response(status=403, text="this console answers requests to 127.0.0.1 or localhost only\n")
        if self.token is not None:
            presented = security.presented_token(request.query, request.cookies, request.headers)
            if not any(security.token_matches(self.token, t) for t in presented):
                return web.Response(status=401, text="this console needs its access token: open the address the "
                                                      "console node printed (it ends in ?token=...)\n")
        response = await handler(request)
        if not response.prepared:
            response.headers.update(HEADERS)
            if self.token is not None and security.token_matches(self.token, request.query.get("token")):
                response.set_cookie(security.COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    # ------------------------------------------------------------------ WebSocket
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not security.origin_allowed(request.headers.get("Origin"), request.host):
            return web.Response(status=403, text="WebSocket from another site's page refused\n")
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        session = request.query.get("session", "")[:64] or secrets.token_hex(8)
        client = Client(ws, session, RateLimiter(self.max_fps), RateLimiter(20.0, burst=40))
        self.clients.add(client)
        self.actions.pages(len(self.clients))
        self.arbiter.connect(session, time.monotonic())
        self._wake_all()  # the others learn who operates
        sender = asyncio.create_task(self._send_loop(client))
        try:
            await ws.send_json({"type": "hello", "session": session, "max_fps": self.max_fps, "colors": {
                "target": TARGET_COLOR, "place": PLACE_COLOR, "path": PATH_COLOR, "mask": MASK_COLOR}})
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_request(client, message.data)
        finally:
            sender.cancel()
            self.clients.discard(client)
            self.actions.pages(len(self.clients))
            self.arbiter.disconnect(session, time.monotonic())
            self._wake_all()
        return ws

    def _wake_all(self) -> None:
        for client in self.clients:
            client.wake.set()

    async def _send_loop(self, client: Client) -> None:
        try:
            while not client.ws.closed:
                try:
                    await asyncio.wait_for(client.wake.wait(), timeout=STATE_REFRESH)
                except asyncio.TimeoutError:
                    pass
                client.wake.clear()
                await self._send_state(client, time.monotonic())
                await self._send_frame(client, time.monotonic())
        except (ConnectionError, RuntimeError):  # the page went away while a message was on its way
            pass

    async def _send_state(self, client: Client, now: float) -> None:
        control = self.arbiter.may_operate(client.session, now)
        changed = self.state.version != client.state_version or control != client.control
        if not changed and now - client.state_sent < STATE_REFRESH:
            return
        if now - client.state_sent < STATE_INTERVAL:
            self.loop.call_later(STATE_INTERVAL - (now - client.state_sent), client.wake.set)
            return
        client.state_version, client.control, client.state_sent = self.state.version, control, now
        holder = self.arbiter.current(now)
        await client.ws.send_json({"type": "state", **self.state.snapshot(now), "control": {
            "you": control, "held": holder is not None, "pages": len(self.clients)}})

    async def _send_frame(self, client: Client, now: float) -> None:
        frame = self.state.frame
        if frame is None or frame.seq == client.frame_seq or not client.acked:
            return
        wait = client.frames.wait(now)
        if wait > 0:
            self.loop.call_later(wait, client.wake.set)
            return
        client.frames.allow(now)
        data = await self._encoded(frame)
        client.frame_seq = frame.seq
        if data is None:  # a frame that cannot be decoded: the page waits for the next one
            return
        client.acked = False
        await client.ws.send_bytes(data)

    async def _encoded(self, frame: Frame) -> bytes | None:
        """The frame's message, encoded once for every page (in a worker thread: the event loop stays free); None
        for a frame whose pixels cannot be decoded (a corrupt JPEG), reported as the camera's error."""
        async with self.encoding:
            if self.jpeg[0] == frame.seq:
                return self.jpeg[1]
            mask, path_xy = self.state.overlay()
            try:
                data = await self.loop.run_in_executor(None, encode_frame, frame, mask, path_xy, self.jpeg_quality)
            except ValueError as exc:
                self.state.add_error("camera", str(exc), time.time())
                return None
            self.jpeg = (frame.seq, data)
            self.shown[frame.seq] = frame.info
            while len(self.shown) > SHOWN_FRAMES:
                self.shown.popitem(last=False)
            return data

    async def _on_request(self, client: Client, text: str) -> None:
        try:
            request = json.loads(text)
            kind = request["type"]
        except (ValueError, KeyError, TypeError):
            await self._reply(client, "?", False, "not a console request")
            return
        now = time.monotonic()
        if kind == "ack":
            self._on_ack(client, request)
            return
        if kind == "estop":  # anyone, at once
            self.actions.estop()
            await self._reply(client, kind, True, "e-stop sent")
            return
        if not client.requests.allow(now):
            await self._reply(client, kind, False, "too many requests: slow down")
            return
        if kind == "take_control":
            self.arbiter.take(client.session, now)
            self._wake_all()
            await self._reply(client, kind, True, "you have control")
            return
        if not self.arbiter.may_operate(client.session, now):
            await self._reply(client, kind, False, "another page has control: take control first")
            return
        try:
            ok, message, extra = await self._operate(kind, request)
        except (GestureError, ValueError, KeyError, TypeError) as exc:
            ok, message, extra = False, str(exc) or type(exc).__name__, {}
        await self._reply(client, kind, ok, message, **extra)

    async def _operate(self, kind: str, request: dict) -> tuple[bool, str, dict]:
        if kind == "prompt":
            info = self.shown.get(request.get("frame"))
            if info is None:
                return False, "that frame is too old: click again", {}
            spec = build_prompt(request["marks"], request["kind"], request["points"], info["width"], info["height"])
            self.actions.publish_prompt(spec, info)
            return True, f"{spec.kind} on the {spec.marks}", {"prompt": spec.to_json()}
        if kind == "clear":
            self.actions.clear_prompts()
            return True, "prompts cleared", {}
        if kind == "accept_words":
            if self.state.words["target"] is None:
                return False, "no words' prompts to accept: the policy proposes them after an instruction", {}
            self.actions.accept_words()
            return True, "the words' prompts accepted", {}
        if kind == "instruction":
            text = str(request.get("text", "")).strip()
            if not text or len(text) > MAX_INSTRUCTION:
                return False, f"an instruction is 1 to {MAX_INSTRUCTION} characters", {}
            self.actions.publish_instruction(text)
            return True, "instruction sent", {}
        if kind == "reset_estop":
            try:
                ok, message = await asyncio.wait_for(asyncio.wrap_future(self.actions.reset_estop()), timeout=5.0)
            except asyncio.TimeoutError:
                ok, message = False, "the executor did not answer the reset within 5 s"
            return ok, message, {}
        if kind in ("sim_reset", "next_episode"):
            reset = (next_episode(self.state.episode) if kind == "next_episode"
                     else sim_reset_request(request.get("task"), request.get("seed"), self.state.tasks))
            self.actions.sim_reset(reset)
            return True, f"episode {reset['task']} seed {reset['seed']} requested", {}
        return False, f"unknown request {kind!r}", {}

    def _on_ack(self, client: Client, request: dict) -> None:
        seq = request.get("seq")
        if seq == client.frame_seq:
            client.acked = True
            client.wake.set()
        info, painted = self.shown.get(seq), request.get("painted")
        if info is not None and isinstance(painted, (int, float)):
            latency = painted / 1e3 - (info["stamp"][0] + info["stamp"][1] * 1e-9)
            if 0.0 <= latency < 60.0:  # the page's clock is this machine's (a remote browser's may not be)
                self.state.add_display_latency(latency)

    async def _reply(self, client: Client, request: str, ok: bool, message: str, **extra) -> None:
        if not client.ws.closed:
            await client.ws.send_json({"type": "result", "request": request, "ok": ok, "message": message, **extra})
