"""`pixelvla-launch <name> [arg:=value ...]`: start a node set where no `ros2 launch` exists.

Reads the same node-set description as launch/<name>.launch.py. Each node runs as its own
process (`python -m pixelvla_ros.nodes.<executable> --ros-args ...`) in its own session, so a
terminal Ctrl-C reaches only this runner, which then stops the nodes itself: SIGINT, a grace
period, SIGTERM, another, then SIGKILL, always to its own children only. Node output is
forwarded line by line, prefixed with the node's name. When a required node exits, the rest
are stopped and the runner exits non-zero. Should the runner itself die without stopping them
(kill -9, a crash), Linux sends each node SIGTERM (PR_SET_PDEATHSIG), its clean stop: no orphans.
(`start_in_background` ties a runner to the tool that starts it the same way.)
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from pixelvla_ros.launching.description import LaunchError, NodeSpec, available_node_sets, load_node_set
from pixelvla_ros.launching.environment import ros_environment


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_this_process():
    """A `preexec_fn` for Popen (Linux; None elsewhere): the child gets SIGTERM when this process dies.

    The kernel sends the signal when the *thread* that forked the child exits, so start children
    from the main thread (or one that lives as long as the process).
    """
    return functools.partial(_die_with, os.getpid()) if _libc is not None else None


def _die_with(parent_pid: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect: do not start
        os._exit(1)


def ros_arguments(spec: NodeSpec, overrides_file: Path | None) -> list[str]:
    """The `--ros-args` command line that gives a node its name, namespace, parameters and remaps."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:={spec.namespace if spec.namespace.startswith('/') else '/' + spec.namespace}"]
    for path in spec.parameter_files:
        args += ["--params-file", str(path)]
    if overrides_file is not None:
        args += ["--params-file", str(overrides_file)]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


@dataclass
class Child:
    spec: NodeSpec
    process: subprocess.Popen
    forwarder: threading.Thread


class Runner:
    def __init__(self, specs: list[NodeSpec], *, grace_s: float = 5.0, out: IO[str] = sys.stdout) -> None:
        self.specs = specs
        self.grace_s = grace_s
        self.out = out
        self.children: list[Child] = []
        self._reported: set[int] = set()  # pids whose exit has been logged
        self.stop_requested = threading.Event()
        self._print_lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="pixelvla-launch-")

    def log(self, source: str, line: str) -> None:
        with self._print_lock:
            self.out.write(f"[{source}] {line.rstrip()}\n")
            self.out.flush()

    def _forward(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self.log(name, line)

    def _overrides_file(self, spec: NodeSpec) -> Path | None:
        """Parameter overrides as a params file: YAML keeps their types exactly (no `-p` parsing)."""
        if not spec.parameters:
            return None
        path = Path(self._tmp.name) / f"{spec.name}.overrides.yaml"
        path.write_text(yaml.safe_dump({"/**": {"ros__parameters": spec.parameters}}))
        return path

    def start(self) -> None:
        """Start every node; call from the main thread (see `die_with_this_process`)."""
        env = {**ros_environment(), "PYTHONUNBUFFERED": "1"}
        for spec in self.specs:
            command = [sys.executable, "-m", spec.module, *ros_arguments(spec, self._overrides_file(spec))]
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_this_process(),
            )
            forwarder = threading.Thread(target=self._forward, args=(spec.name, process.stdout), daemon=True)
            forwarder.start()
            self.children.append(Child(spec, process, forwarder))
            self.log("launch", f"started {spec.name} (pid {process.pid}): {' '.join(command[1:3])}")

    def wait(self) -> int:
        """Block until SIGINT/SIGTERM, a required node's exit, or every node's exit; return the exit code."""
        code = 0
        while not self.stop_requested.is_set():
            alive = 0
            for child in self.children:
                rc = child.process.poll()
                if rc is None:
                    alive += 1
                    continue
                if self._report_exit(child) and child.spec.required:
                    self.log("launch", f"required node {child.spec.name} ended: stopping the others")
                    code = rc if rc != 0 else 1
                    self.stop_requested.set()
            if alive == 0:
                break
            time.sleep(0.05)
        return code

    def _report_exit(self, child: Child) -> bool:
        """Log a child's exit once; True the first time."""
        if child.process.pid in self._reported:
            return False
        self._reported.add(child.process.pid)
        self.log("launch", f"{child.spec.name} exited with code {child.process.returncode}")
        return True

    def shutdown(self) -> None:
        """SIGINT, then SIGTERM, then SIGKILL, each to the runner's own children still running."""
        for sig, wait_s in ((signal.SIGINT, self.grace_s), (signal.SIGTERM, self.grace_s), (signal.SIGKILL, 2.0)):
            running = [c for c in self.children if c.process.poll() is None]
            if not running:
                break
            for child in running:
                self.log("launch", f"sending {signal.Signals(sig).name} to {child.spec.name} (pid {child.process.pid})")
                try:
                    child.process.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            for child in running:
                try:
                    child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for child in self.children:
            child.forwarder.join(timeout=1.0)
            self._report_exit(child)
        self._tmp.cleanup()

    def run(self) -> int:
        def request_stop(signum: int, _frame: object) -> None:
            self.log("launch", f"{signal.Signals(signum).name} received: stopping")
            self.stop_requested.set()

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            code = self.wait()
        finally:
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code


def start_in_background(arguments: list[str], log: IO[str]) -> subprocess.Popen:
    """`pixelvla-launch *arguments` as a child process writing its output to `log` (for tools that drive a stack).

    Should the tool die without `stop_background` (kill -9), the runner gets SIGTERM and stops its nodes.
    """
    return subprocess.Popen([sys.executable, "-m", "pixelvla_ros.launching.runner", *arguments],
                            stdout=log, stderr=subprocess.STDOUT, env=ros_environment(),
                            preexec_fn=die_with_this_process())


def stop_background(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Ctrl-C for a runner started by `start_in_background` (it stops its nodes itself); kill it if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pixelvla-launch",
        description="Start a pixelvla_ros node set (the same one `ros2 launch pixelvla_ros <name>.launch.py` starts).",
    )
    parser.add_argument("name", nargs="?", help="node set name (see --list) or path to a *.nodes.yaml file")
    parser.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    parser.add_argument("--list", action="store_true", help="list the node sets and exit")
    parser.add_argument("--show", action="store_true", help="print the resolved nodes and exit")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGINT, SIGTERM and SIGKILL")
    opts = parser.parse_args(argv)
    try:
        if opts.list or not opts.name:
            for name in available_node_sets():
                print(f"{name}: {load_node_set(name).description}")
            return 0 if opts.list else 2
        node_set = load_node_set(opts.name)
        values = node_set.parse_cli(opts.arguments)
        specs, left_out = node_set.resolve(values), node_set.left_out(values)
    except LaunchError as exc:
        print(f"pixelvla-launch: error: {exc}", file=sys.stderr)
        return 2
    if opts.show:
        for spec in specs:
            print(f"{spec.name}: python -m {spec.module} {' '.join(ros_arguments(spec, None))}")
            for key, value in spec.parameters.items():
                print(f"    {key} = {value!r}")
        for name, reason in left_out.items():
            print(f"{name}: not started: {reason}")
        return 0
    runner = Runner(specs, grace_s=opts.grace)
    for name, reason in left_out.items():
        runner.log("launch", f"{name} not started: {reason}")
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
