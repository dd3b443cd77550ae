"""The newest camera frame in one slot, and one worker thread that takes it: the policy's and the segmenter's loop.

A camera callback `put`s every frame it accepts; a frame replaced before the worker took it is gone (the
caller counts it as dropped), so a slow model never works through a backlog of old frames. The worker waits
until a frame is there and the owner's `ready()` allows a run, takes the frame and, under the same lock, what
the run needs (`take()`: the inputs in force at that moment), then runs `run(frame, taken)` without the lock.
Both limits on when count from the arrival of the frame the previous run took: a run starts no earlier than
`min_period` s after it (newer frames keep replacing the slot meanwhile), and only on a frame that arrived at
least FRESH x `min_period` s after it: with a camera as slow as the rate (the simulator's 5 Hz, a policy every
two periods) the run waits for the frame due then instead of taking the one a period older. When it wakes with nothing to do it calls `idle()`, if given (the segmenter frees a finished track
there). No ROS here: the nodes own the lock, their callbacks and what a run does.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

# A run takes a frame that arrived at least this fraction of min_period after the previous run's frame: with
# frames every T and min_period k T, the frame k periods on (not k - 1) is the first one due, with T / 4 (k = 1)
# to 3 T / 4 of arrival jitter allowed.
FRESH = 0.75


class LatestFrameWorker:
    def __init__(self, lock: threading.Lock, *, min_period: float, ready: Callable[[], bool],
                 take: Callable[[], Any], run: Callable[[Any, Any], None], idle: Callable[[], None] | None = None,
                 name: str = "worker") -> None:
        self.lock = lock  # the owner's: `ready` and `take` read the owner's state under it
        self.wakeup = threading.Condition(lock)
        self.min_period, self.ready, self.take, self.run, self.idle, self.name = min_period, ready, take, run, idle, name
        self.frame: Any | None = None  # the slot (lock held)
        self.arrival = 0.0             # monotonic s: when the frame in the slot arrived (lock held)
        self.fresh_after = 0.0         # monotonic s: a frame arriving earlier is not run (lock held)
        self.running = False           # (lock held)
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ called with the lock held
    def put(self, frame: Any) -> bool:
        """The newest frame; True if it replaced one the worker never took."""
        replaced = self.frame is not None
        self.frame, self.arrival = frame, time.monotonic()
        self.wakeup.notify()
        return replaced

    def drop(self) -> None:
        """Empty the slot: the next run takes a frame that arrives from now on."""
        self.frame = None

    def notify(self) -> None:
        """Something `ready` or `idle` reads has changed."""
        self.wakeup.notify()

    # ------------------------------------------------------------------ called without the lock
    def start(self) -> None:
        with self.lock:
            self.running = True
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def stop(self, on_slow: Callable[[], None] | None = None) -> None:
        """End the thread after the run in progress and wait for it. Never given up on: a thread left inside torch
        makes the interpreter abort at exit, and a second worker must not start. `on_slow` is called once if the
        run takes longer than 5 s to finish."""
        with self.lock:
            self.running = False
            self.wakeup.notify_all()
        if self.thread is None:
            return
        self.thread.join(timeout=5.0)
        if self.thread.is_alive():
            if on_slow is not None:
                on_slow()
            self.thread.join()
        self.thread = None

    def _due(self) -> bool:
        return self.frame is not None and self.arrival >= self.fresh_after and self.ready()

    def _loop(self) -> None:
        next_time = 0.0
        while True:
            with self.lock:
                if self.running and not self._due():
                    self.wakeup.wait(timeout=0.5)
                if not self.running:
                    return
                due = self._due()
            if not due:
                if self.idle is not None:
                    self.idle()
                continue
            wait = next_time - time.monotonic()
            if wait > 0:  # the rate limit; newer frames keep replacing the slot meanwhile
                time.sleep(wait)
            with self.lock:
                if not self.running:
                    return
                if not self._due():
                    continue  # an input went stale while waiting
                frame, self.frame, arrival = self.frame, None, self.arrival
                taken = self.take()
                # Counted from the frame's arrival, not from now: a run that starts a little late (a busy
                # interpreter, a slow `take`) must not push the next one later too. Counted from the start,
                # every run's lateness added up until a frame was skipped: the chunks' latency ramped from
                # ~30 ms to a period, and the arm ran some actions a period late.
                self.fresh_after = arrival + FRESH * self.min_period
            next_time = arrival + self.min_period
            self.run(frame, taken)
