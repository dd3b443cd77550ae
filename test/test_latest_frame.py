"""The policy's and the segmenter's frame slot and worker thread (ROS-free)."""
import threading
import time

from pixelvla_ros.latest_frame import LatestFrameWorker


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


class Owner:
    """A node's side: its lock, a readiness flag and the runs the worker made."""

    def __init__(self, min_period=0.0, idle=None, take_s=0.0):
        self.lock = threading.Lock()
        self.take_s = take_s      # how long take() keeps the worker (the node's snapshot of its inputs)
        self.allowed = True
        self.runs = []            # (frame, taken, monotonic start)
        self.release = threading.Event()
        self.release.set()        # cleared: a run blocks until set (a slow model)
        self.taken = 0
        self.worker = LatestFrameWorker(self.lock, min_period=min_period, ready=lambda: self.allowed,
                                        take=self.take, run=self.run, idle=idle)

    def take(self):
        time.sleep(self.take_s)
        self.taken += 1
        return self.taken

    def run(self, frame, taken):
        self.runs.append((frame, taken, time.monotonic()))
        self.release.wait()

    def put(self, frame):
        with self.lock:
            return self.worker.put(frame)


def test_a_slow_run_never_works_through_a_backlog():
    owner = Owner()
    owner.release.clear()
    owner.worker.start()
    try:
        assert owner.put(1) is False
        assert wait_for(lambda: len(owner.runs) == 1)
        replaced = [owner.put(frame) for frame in (2, 3, 4)]  # while frame 1 is being processed
        assert replaced == [False, True, True]               # 2 and 3 were replaced before the worker took them
        owner.release.set()
        assert wait_for(lambda: len(owner.runs) == 2)
        time.sleep(0.05)
        assert [frame for frame, _, _ in owner.runs] == [1, 4]  # the newest, once
        assert [taken for _, taken, _ in owner.runs] == [1, 2]  # take() ran once per run
    finally:
        owner.worker.stop()


def test_nothing_runs_until_the_owner_is_ready_and_a_dropped_slot_waits_for_a_new_frame():
    owner = Owner()
    owner.allowed = False
    owner.worker.start()
    try:
        owner.put("old")
        time.sleep(0.1)
        assert owner.runs == []
        with owner.lock:
            owner.worker.drop()       # e.g. a new prompt: segment a frame that arrives from now on
            owner.allowed = True
            owner.worker.notify()
        time.sleep(0.1)
        assert owner.runs == []
        owner.put("new")
        assert wait_for(lambda: len(owner.runs) == 1) and owner.runs[0][0] == "new"
    finally:
        owner.worker.stop()


def test_a_run_starts_at_least_min_period_after_the_previous_runs_frame_arrived():
    owner = Owner(min_period=0.2)
    owner.worker.start()
    try:
        arrivals = []
        for frame in range(4):
            arrivals.append(time.monotonic())
            owner.put(frame)
            assert wait_for(lambda: len(owner.runs) == frame + 1)
            time.sleep(0.16)  # the next frame arrives after FRESH x min_period: due, but not before min_period
        starts = [t for _, _, t in owner.runs]
        assert [frame for frame, _, _ in owner.runs] == [0, 1, 2, 3]
        assert all(start - arrival >= 0.2 for arrival, start in zip(arrivals, starts[1:]))
    finally:
        owner.worker.stop()


def test_late_starts_do_not_add_up_into_a_skipped_frame():
    """Frames every period T, a run every 2 T, each run's start a little late (take() costs 20 ms, as a busy
    interpreter delays it): every second frame is run, however many runs. Counted from the runs' starts, the
    lateness would add up, 20 ms a run, until a run took the frame after the one due."""
    period = 0.1
    owner = Owner(min_period=2 * period, take_s=0.02)
    owner.worker.start()
    try:
        start = time.monotonic()
        for frame in range(16):
            time.sleep(max(0.0, start + frame * period - time.monotonic()))  # the camera's grid
            owner.put(frame)
        assert wait_for(lambda: len(owner.runs) == 8)
        assert [frame for frame, _, _ in owner.runs] == list(range(0, 16, 2))
    finally:
        owner.worker.stop()


def test_a_frame_that_was_there_a_period_before_the_run_is_due_is_not_run():
    """Frames as slow as the rate: at the next run's time the slot may still hold the frame of one period
    before (its successor not in yet). It is not run; the run waits for a frame that arrives from then on."""
    owner = Owner(min_period=2.0)
    owner.worker.start()
    try:
        owner.put(0)
        assert wait_for(lambda: len(owner.runs) == 1)
        owner.put(1)  # right after the run started: by the next run's time it is a period old
        time.sleep(2.2)
        assert [frame for frame, _, _ in owner.runs] == [0]
        owner.put(2)
        assert wait_for(lambda: len(owner.runs) == 2) and owner.runs[1][0] == 2
    finally:
        owner.worker.stop()


def test_idle_is_called_when_there_is_nothing_to_do_and_stop_waits_for_the_run_in_progress():
    idle_calls = []
    owner = Owner(idle=lambda: idle_calls.append(1))
    owner.worker.start()
    with owner.lock:
        owner.worker.notify()
    assert wait_for(lambda: idle_calls)
    owner.release.clear()
    owner.put("frame")
    assert wait_for(lambda: owner.runs)
    slow = []
    stopper = threading.Thread(target=owner.worker.stop, kwargs={"on_slow": lambda: slow.append(1)})
    stopper.start()
    time.sleep(0.1)
    assert stopper.is_alive()  # the run in progress is never abandoned
    owner.release.set()
    stopper.join(timeout=10)
    assert not stopper.is_alive() and owner.worker.thread is None and slow == []
