"""One node as a child process (`python -m <module> --ros-args ...`), its output read line by line so that a log
line can be waited for: used by benchmarks and tests that start single nodes without a node set."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time


class NodeProcess:
    def __init__(self, module: str, *ros_args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-u", "-m", module, "--ros-args", *ros_args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first log line matching `pattern`, waited for; RuntimeError with the output if the process ends or
        `timeout` (s) passes first."""
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no log line matches {pattern!r}:\n{self.output}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT, then SIGKILL after `timeout` s; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode
