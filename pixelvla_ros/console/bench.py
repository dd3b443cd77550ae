"""`python -m pixelvla_ros.console.bench`: camera frame -> browser paint latency, and the console's cost to the policy.

1. Latency: a camera stand-in (this process) publishes frames stamped with the time of publication at
   `--camera-hz` to a console node (a process of its own); headless Chromium (pixelvla_ros.console.browser)
   shows its page, which reports the time it drew each frame (requestAnimationFrame, after drawing) as
   `performance.timeOrigin + performance.now()`: this machine's clock, as the stamps. Latency = paint - stamp:
   DDS, the console (conversion, overlay, JPEG), the WebSocket, JPEG decoding and drawing in the page.
2. Overhead: a policy node (the shipped checkpoint, its default 5 Hz, the instruction and joint states given)
   reads a 640x480 camera at `--camera-hz`; its chunks' inference latency is compared without a console,
   with the console and no page, with a page on another computer (a WebSocket client that only acks frames),
   and with the page in a browser on this machine, in short rounds (A B C D A B C D ...),
   each condition against the no-console chunks of its own round, so that the load of a shared machine, which
   drifts, does not pass for the console's cost.
Prints a table and writes JSON to `--output`. The CPU use of the console and of the browser is measured too
(a browser normally runs on the operator's computer, not the robot's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pixelvla_ros.launching.environment import missing_defaults
from pixelvla_ros.launching.node_process import NodeProcess
from pixelvla_ros.node_base import BackgroundNode

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (s); processes gone count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def pids_with(text: str) -> list[int]:
    """Processes whose command line contains `text` (the browser's profile folder names all of its processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_text(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class Ros(BackgroundNode):
    """The bench's node: a camera (and joint states) on a timer, chunks collected; spun in a background thread."""

    def __init__(self) -> None:
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String

        from pixelvla_ros import qos
        from pixelvla_ros.msg import ActionChunk
        from pixelvla_robots import wx250s

        super().__init__("console_bench")
        self.image_pub = self.node.create_publisher(Image, "/camera/image_raw", qos.SENSOR)
        self.joint_pub = self.node.create_publisher(JointState, "/joint_states", qos.SENSOR)
        self.joints = JointState(name=[*wx250s.JOINT_NAMES, "left_finger"],
                                 position=[*map(float, wx250s.HOME_Q), wx250s.FINGER_OPEN])
        self.node.create_publisher(String, "/pixelvla/instruction", qos.LATCHED).publish(
            String(data="put the red cube on the plate"))
        self.chunks: list = []
        self.node.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.chunks.append, qos.COMMAND)
        self.frames: list = []
        self.published = 0
        self.timer = None

    def camera(self, width: int, height: int, hz: float) -> None:
        """Publish frames of this size at `hz`, stamped when published (replaces the previous camera)."""
        from pixelvla_ros.benchmarks import synthetic_frame
        from pixelvla_ros.image_conversions import rgb_to_image

        self.frames = [rgb_to_image(synthetic_frame(width, height, seed)) for seed in range(4)]
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
        self.timer = self.node.create_timer(1.0 / hz, self.tick)

    def tick(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        frame = self.frames[self.published % len(self.frames)]
        frame.header.stamp = self.joints.header.stamp = stamp
        self.image_pub.publish(frame)
        self.joint_pub.publish(self.joints)
        self.published += 1


class RemotePage:
    """A page on another computer, as far as this machine's CPU goes: a WebSocket client that takes each frame and
    reports it painted at once (no decoding, no drawing), so the console does all of its work for it."""

    def __init__(self, url: str) -> None:
        import asyncio

        self.ws, self.frames = None, 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.run(url),), daemon=True)
        self.thread.start()

    async def run(self, url: str) -> None:
        import struct

        from aiohttp import ClientSession, WSMsgType

        async with ClientSession() as http:
            async with http.ws_connect(url.replace("http://", "ws://", 1).split("?")[0] + "ws") as self.ws:
                async for message in self.ws:
                    if message.type == WSMsgType.BINARY:
                        length = struct.unpack_from("<I", message.data)[0]
                        seq = json.loads(message.data[4:4 + length])["seq"]
                        await self.ws.send_json({"type": "ack", "seq": seq, "painted": time.time() * 1e3})
                        self.frames += 1

    def close(self) -> None:
        import asyncio

        if self.ws is not None:
            asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(timeout=5)
        self.thread.join(timeout=5)


def open_page(playwright, url: str, profile: str):
    from pixelvla_ros.console.browser import open_browser

    browser = open_browser(playwright, profile)
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("() => window.pixelvlaConsole && window.pixelvlaConsole.connected")
    return browser, page


def paint_latency(ros: Ros, playwright, width: int, height: int, camera_hz: float, frames: int, warmup: int) -> dict:
    """Part 1 for one frame size."""
    ros.camera(width, height, camera_hz)
    console = NodeProcess("pixelvla_ros.nodes.console_node", "-p", "port:=0")
    profile = tempfile.mkdtemp(prefix="pixelvla-bench-browser-")
    try:
        url = console.find(r"operator console: (\S+)", timeout=60).group(1)
        browser, page = open_page(playwright, url, profile)
        page.wait_for_function(f"() => window.pixelvlaConsole.painted.length >= {warmup}", timeout=60_000)
        start = time.monotonic()
        cpu_console, cpu_browser = cpu_seconds([console.pid]), cpu_seconds(pids_with(profile))
        page.wait_for_function(f"() => window.pixelvlaConsole.painted.length >= {warmup + frames}", timeout=300_000)
        seconds = time.monotonic() - start
        cpu_console = cpu_seconds([console.pid]) - cpu_console
        cpu_browser = cpu_seconds(pids_with(profile)) - cpu_browser
        painted = page.evaluate("() => window.pixelvlaConsole.painted.map(p => p.latency_ms)")
        latencies = np.array(painted)[warmup:warmup + frames]
        browser.close()
    finally:
        console.stop()
        shutil.rmtree(profile, ignore_errors=True)
    return {"size": f"{width}x{height}", "camera_hz": camera_hz, "frames": len(latencies),
            "painted_per_s": round(len(latencies) / seconds, 1),
            "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 1),
                           "p95": round(float(np.percentile(latencies, 95)), 1)},
            "console_cpu_percent": round(100 * cpu_console / seconds, 1),
            "browser_cpu_percent": round(100 * cpu_browser / seconds, 1)}


def policy_overhead(ros: Ros, playwright, camera_hz: float, chunks: int, rounds: int, threads: int,
                    browser_nice: int) -> dict:
    """Part 2: inference latency of the policy node's chunks under four conditions, round after round.

    Each round measures `chunks` chunks per condition: no console; a console and no page (the browser shows
    about:blank); a console and a page on another computer (RemotePage: the console's whole cost, none of a
    browser's); a console and its page in the browser here. The machine's load drifts (other work shares it):
    each condition is compared with the no-console chunks of its own round (the median of the rounds' ratios of
    medians).
    """
    ros.camera(640, 480, camera_hz)
    policy = NodeProcess("pixelvla_ros.nodes.policy_node", "-r", "__node:=policy", "-p", f"threads:={threads}")
    profile = tempfile.mkdtemp(prefix="pixelvla-bench-browser-")
    conditions = ("no console", "console, no page", "console + page elsewhere", "console + page")
    latencies: dict[str, list[list[float]]] = {c: [] for c in conditions}  # per round
    cpu: dict[str, list[float]] = {c: [] for c in conditions}  # console + browser CPU, % of one core
    browser = console = remote = None
    try:
        deadline = time.monotonic() + 180
        while len(ros.chunks) < 10:
            if time.monotonic() > deadline or policy.process.poll() is not None:
                raise RuntimeError(f"the policy produced no chunks:\n{policy.output}")
            time.sleep(0.1)
        from pixelvla_ros.console.browser import open_browser

        browser = open_browser(playwright, profile)
        page = browser.new_page()
        for _ in range(rounds):
            for condition in conditions:
                if condition == "no console" and console is not None:
                    page.goto("about:blank")
                    console.stop()
                    console = None
                elif condition == "console, no page":
                    console = NodeProcess("pixelvla_ros.nodes.console_node", "-p", "port:=0")
                    url = console.find(r"operator console: (\S+)", timeout=60).group(1)
                elif condition == "console + page elsewhere":
                    remote = RemotePage(url)
                elif condition == "console + page":
                    remote.close()
                    page.goto(url)
                    page.wait_for_function("() => window.pixelvlaConsole && window.pixelvlaConsole.painted.length >= 5",
                                           timeout=60_000)
                    for pid in pids_with(profile) if browser_nice else []:  # a browser that yields to the robot
                        try:
                            os.setpriority(os.PRIO_PROCESS, pid, browser_nice)
                        except ProcessLookupError:
                            pass
                time.sleep(2.0)  # start-up costs settle (a new console imports its modules for ~1 s)
                others = ([console.pid] if console is not None else []) + pids_with(profile)
                first, start, used = len(ros.chunks), time.monotonic(), cpu_seconds(others)
                while len(ros.chunks) < first + chunks:
                    time.sleep(0.05)
                latencies[condition].append([c.inference_latency for c in ros.chunks[first:first + chunks]])
                cpu[condition].append(100 * (cpu_seconds(others) - used) / (time.monotonic() - start))
    finally:
        if browser is not None:
            browser.close()
        if console is not None:
            console.stop()
        policy.stop()
        shutil.rmtree(profile, ignore_errors=True)
    result = {}
    for condition in conditions:
        pooled = np.concatenate(latencies[condition])
        ratios = [np.median(mine) / np.median(base)  # against the same round's baseline
                  for mine, base in zip(latencies[condition], latencies["no console"])]
        rounds_ms = [1e3 * float(np.median(r)) for r in latencies[condition]]
        result[condition] = {"chunks": len(pooled), "p50_ms": round(1e3 * float(np.median(pooled)), 2),
                             "p95_ms": round(1e3 * float(np.percentile(pooled, 95)), 2),
                             "round_p50_range_ms": [round(min(rounds_ms), 2), round(max(rounds_ms), 2)],
                             "round_p50_ms": [round(r, 2) for r in rounds_ms],
                             "console_and_browser_cpu_percent": round(float(np.mean(cpu[condition])), 1),
                             "vs_no_console_percent": round(100 * (float(np.median(ratios)) - 1), 1)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixelvla_ros.console.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224x224,640x480", help="camera frame sizes WxH, comma-separated ('': none)")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera frame rate")
    parser.add_argument("--frames", type=int, default=200, help="painted frames measured per size")
    parser.add_argument("--warmup", type=int, default=20, help="painted frames not counted first")
    parser.add_argument("--chunks", type=int, default=15, help="policy chunks per condition and round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the three policy conditions")
    parser.add_argument("--policy-threads", type=int, default=0, help="the policy node's `threads` (0: its default)")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="run the browser at this CPU priority in the policy part (0: as started)")
    parser.add_argument("--skip-policy", action="store_true", help="measure the paint latency only")
    parser.add_argument("--output", type=Path, default=Path("build/bench/console.json"))
    opts = parser.parse_args(argv)
    os.environ.setdefault("ROS_DOMAIN_ID", "96")
    os.environ.update(missing_defaults())  # DDS on localhost, the Fast DDS profile for camera frames
    from playwright.sync_api import sync_playwright

    ros = Ros()
    result: dict = {"machine": f"{os.cpu_count()} CPUs", "latency": [], "policy": None}
    try:
        with sync_playwright() as playwright:
            for size in filter(None, opts.sizes.split(",")):
                width, height = map(int, size.lower().split("x"))
                result["latency"].append(paint_latency(ros, playwright, width, height, opts.camera_hz, opts.frames,
                                                       opts.warmup))
                print(json.dumps(result["latency"][-1]), flush=True)
            if not opts.skip_policy:
                result["policy"] = policy_overhead(ros, playwright, opts.camera_hz, opts.chunks, opts.rounds,
                                                   opts.policy_threads, opts.browser_nice)
    finally:
        ros.close()
    print("\n| camera | frames painted | painted / s | camera -> paint p50 | p95 | console CPU | browser CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in result["latency"]:
        print(f"| {r['size']} @ {r['camera_hz']:g} Hz | {r['frames']} | {r['painted_per_s']} "
              f"| {r['latency_ms']['p50']} ms | {r['latency_ms']['p95']} ms | {r['console_cpu_percent']} % "
              f"| {r['browser_cpu_percent']} % |")
    if result["policy"]:
        print(f"\n| policy inference (640x480 camera, threads {opts.policy_threads or 'default'}, browser nice "
              f"{opts.browser_nice}) | chunks | p50 | p95 "
              "| p50 of a round | vs no console (median of rounds) | console + browser CPU |")
        print("|---|---|---|---|---|---|---|")
        for condition, r in result["policy"].items():
            low, high = r["round_p50_range_ms"]
            print(f"| {condition} | {r['chunks']} | {r['p50_ms']} ms | {r['p95_ms']} ms | {low}-{high} ms "
                  f"| {r['vs_no_console_percent']:+} % | {r['console_and_browser_cpu_percent']} % |")
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(result, indent=2))
    print(f"\n{opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
