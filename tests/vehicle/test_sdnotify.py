"""systemd notifications: the sd_notify datagrams received on a socket the test owns
(a file-system one and an abstract one), watchdog interval parsing, the watchdog that
stops pinging when the work stops, and `lpr-edge run` under a simulated systemd."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec
from edge.vehicle.sdnotify import STATUS_MAX_CHARS, SystemdNotifier, Watchdog, one_line, status_line
from tests.conftest import model_path

# AF_UNIX paths are limited to 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107
UCRED = struct.Struct("iII")  # pid, uid, gid


@dataclass(frozen=True)
class Datagram:
    fields: dict[str, str]
    lines: tuple[str, ...]
    pid: int | None
    at: float


class NotifyListener:
    """What systemd does with NOTIFY_SOCKET: a datagram socket that receives the
    service's messages, with the sender's credentials (SO_PASSCRED), as systemd checks
    NotifyAccess=main against them."""

    def __init__(self, address: str | bytes, env_value: str):
        self.address = address
        self.env_value = env_value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.received: list[Datagram] = []

    def receive(self, timeout: float) -> Datagram | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        except TimeoutError:
            return None
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[: UCRED.size])[0]
        lines = tuple(data.decode().split("\n"))
        fields = dict(line.split("=", 1) for line in lines)
        message = Datagram(fields, lines, pid, time.monotonic())
        self.received.append(message)
        return message

    def wait_for(self, key: str, timeout: float) -> Datagram | None:
        """The next datagram with ``key`` (others are kept in ``received``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message.fields:
                return message
        return None

    def drain(self, seconds: float) -> list[Datagram]:
        """Everything arriving within ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


def short_socket_path(tmp_path: Path) -> Path:
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        path = Path(tempfile.mkdtemp(prefix="sdn-")) / "notify.sock"
    return path


@pytest.fixture
def listener(tmp_path, monkeypatch):
    path = short_socket_path(tmp_path)
    instance = NotifyListener(str(path), str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", instance.env_value)
    yield instance
    instance.close()


@pytest.fixture
def abstract_listener(monkeypatch):
    name = f"lpr-edge-test-{uuid.uuid4().hex}"
    instance = NotifyListener(b"\0" + name.encode(), "@" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", instance.env_value)
    yield instance
    instance.close()


class RecordingNotifier(SystemdNotifier):
    """A notifier that records instead of sending (for the pure watchdog logic)."""

    def __init__(self, watchdog_usec: str | None = None):
        env = {} if watchdog_usec is None else {"WATCHDOG_USEC": watchdog_usec}
        super().__init__(env)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.sent.append(assignments)
        return True

    def pings(self) -> int:
        return sum(1 for fields in self.sent if "WATCHDOG=1" in fields)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the protocol ------------------------------------------------------------------------


def test_each_message_arrives_on_a_filesystem_socket(listener):
    notifier = SystemdNotifier()
    assert notifier.enabled
    assert notifier.ready(status="cameras front-left, rear-right up")
    assert notifier.status("2 cameras\nconnected")
    assert notifier.watchdog()
    assert notifier.stopping(status="stopping")
    assert not notifier.stopping(), "STOPPING=1 is sent once"
    got = [listener.receive(2.0) for _ in range(4)]
    assert [m.lines for m in got] == [
        ("READY=1", "STATUS=cameras front-left, rear-right up"),
        ("STATUS=2 cameras connected",),
        ("WATCHDOG=1",),
        ("STOPPING=1", "STATUS=stopping"),
    ]
    assert {m.pid for m in got} == {os.getpid()}, "sent by this process (NotifyAccess=main)"
    assert listener.receive(0.1) is None
    notifier.close()


def test_an_abstract_socket_is_named_with_an_at_sign(abstract_listener):
    with SystemdNotifier() as notifier:
        assert notifier.ready()
        assert notifier.watchdog()
    assert abstract_listener.receive(2.0).lines == ("READY=1",)
    assert abstract_listener.receive(2.0).lines == ("WATCHDOG=1",)


def test_without_notify_socket_everything_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


@pytest.mark.parametrize("value", ["relative/notify.sock", "@", "vsock:2:1234"])
def test_an_unusable_socket_name_turns_notifications_off(value):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_a_failed_send_never_raises_and_is_logged_once(tmp_path, caplog):
    missing = short_socket_path(tmp_path).with_name("gone.sock")
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(missing)})
    with caplog.at_level(logging.DEBUG, logger="edge.sdnotify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("still going") is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(missing) in warnings[0].getMessage()


def test_sending_recovers_when_the_socket_comes_back(tmp_path):
    path = short_socket_path(tmp_path)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.watchdog() is False
    listener = NotifyListener(str(path), str(path))
    try:
        assert notifier.watchdog() is True
        assert listener.receive(2.0).lines == ("WATCHDOG=1",)
    finally:
        listener.close()


def test_the_environment_can_be_withheld_from_child_processes(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier(unset_environment=True)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    assert notifier.watchdog_interval() == 30.0
    assert notifier.ready()
    assert listener.receive(2.0).lines == ("READY=1",)


def test_status_is_always_one_short_line():
    assert one_line("  a\n\tb  \r\n c ") == "a b c"
    long = one_line("x" * 1000)
    assert len(long) == STATUS_MAX_CHARS and long.endswith("...")


# --- the watchdog interval ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("1500000", "self", 1.5),
        ("30000000", "other", None),
        ("30000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("", None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(usec, pid, expected):
    env = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid == "self":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif pid == "other":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif pid is not None:
        env["WATCHDOG_PID"] = pid
    assert SystemdNotifier(env).watchdog_interval() == expected


# --- the watchdog logic ------------------------------------------------------------------------


def test_pings_at_most_every_half_interval_and_only_after_progress():
    notifier, clock = RecordingNotifier("10000000"), FakeClock()
    dog = Watchdog(notifier, clock=clock)
    assert dog.enabled and dog.interval == 10.0
    assert not dog.maybe_ping(), "nothing done yet"
    dog.progress()
    assert dog.maybe_ping(), "first progress: ping at once"
    dog.progress()
    clock.now += 4.9
    assert not dog.maybe_ping(), "within half the interval"
    clock.now += 0.2
    assert dog.maybe_ping()
    clock.now += 6
    assert not dog.maybe_ping(), "due, but no progress since the last ping"
    dog.progress()
    assert dog.maybe_ping()
    assert notifier.pings() == dog.pings == 3


def test_a_hung_loop_stops_the_pings_and_systemd_would_restart(caplog):
    """A loop making progress every 0.1 s for 20 s, then stuck: the last ping is
    followed by silence longer than the interval, which is when systemd acts."""
    notifier, clock = RecordingNotifier("4000000"), FakeClock()
    dog = Watchdog(notifier, clock=clock)
    ping_times = []
    hang_at = clock.now + 20
    with caplog.at_level(logging.WARNING, logger="edge.sdnotify"):
        for _ in range(600):  # 60 s of main-loop turns, 0.1 s apart
            clock.now += 0.1
            if clock.now < hang_at:
                dog.progress()
            if dog.maybe_ping():
                ping_times.append(clock.now)
    assert len(ping_times) >= 9
    gaps = [b - a for a, b in itertools.pairwise(ping_times)]
    assert all(2.0 - 1e-6 <= g <= 2.2 for g in gaps), gaps
    # The last ping may still use progress made just before the hang, never later.
    assert ping_times[-1] <= hang_at + 0.15
    assert clock.now - ping_times[-1] > dog.interval, "silent longer than WatchdogSec"
    stalls = [r for r in caplog.records if "no progress" in r.getMessage()]
    assert len(stalls) == 1, "the stall is logged once, not every turn"


def test_every_required_source_must_progress():
    """The loop goes on but the delivery thread is stuck: no pings."""
    notifier, clock = RecordingNotifier("2000000"), FakeClock()
    dog = Watchdog(notifier, sources=("loop", "deliver"), clock=clock)
    dog.progress("loop")
    assert not dog.maybe_ping()
    dog.progress("deliver")
    assert dog.maybe_ping()
    for _ in range(30):
        clock.now += 0.5
        dog.progress("loop")
        dog.maybe_ping()
    assert dog.pings == 1
    dog.progress("deliver")
    assert dog.maybe_ping()
    with pytest.raises(ValueError, match="unknown progress source"):
        dog.progress("capture")


def test_no_watchdog_means_no_pings():
    notifier = RecordingNotifier(None)
    dog = Watchdog(notifier)
    dog.progress()
    assert not dog.enabled
    assert not dog.maybe_ping()
    assert notifier.sent == []
    assert not Watchdog(RecordingNotifier("1000000"), interval=0).enabled


def test_status_updates_are_throttled_and_computed_only_when_due():
    notifier, clock = RecordingNotifier("2000000"), FakeClock()
    dog = Watchdog(notifier, status_every=10.0, clock=clock)
    calls = []

    def summary() -> str:
        calls.append(clock.now)
        return f"reads {(len(calls) - 1) // 2}\nhits 0"

    assert dog.maybe_status(summary)
    for _ in range(99):
        clock.now += 0.1
        assert not dog.maybe_status(summary)
    clock.now += 0.1
    assert not dog.maybe_status(summary), "due, but the line did not change"
    clock.now += 10
    assert dog.maybe_status(summary)
    assert len(calls) == 3
    assert notifier.sent == [("STATUS=reads 0 hits 0",), ("STATUS=reads 1 hits 0",)]


def test_status_line_summarises_cameras_and_counts():
    cameras = {
        "front-left": {"state": "connected", "fps": 14.94, "frames_processed": 10},
        "rear-right": {"state": "reconnecting", "fps": 0.0, "last_error": "timeout"},
    }
    line = status_line(cameras, reads=12, hits=1, outbox=0, broker=None)
    assert (
        line == "front-left connected 14.9 fps, rear-right reconnecting; reads 12, hits 1, outbox 0"
    )
    assert status_line({}) == "no cameras"


def test_a_real_loop_thread_pings_the_socket_until_it_hangs(listener, monkeypatch):
    """Real time, real socket: a worker thread doing progress() + tick() every 10 ms
    with a 0.4 s watchdog, then blocked: the pings stop at once."""
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    dog = Watchdog(SystemdNotifier())
    hang, stop = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if hang.is_set():
                stop.wait()  # stuck, e.g. in a model call that never returns
                return
            dog.progress()
            dog.tick(lambda: "1 camera")
            time.sleep(0.01)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        running = listener.drain(1.0)
        hang.set()
        time.sleep(0.05)
        silent = listener.drain(1.0)
    finally:
        stop.set()
        worker.join(2)
    pings = [m.at for m in running if "WATCHDOG" in m.fields]
    assert 3 <= len(pings) <= 7, pings
    assert any(m.fields.get("STATUS") == "1 camera" for m in running)
    assert not [m for m in silent if "WATCHDOG" in m.fields]


# --- lpr-edge run under a simulated systemd ---------------------------------------------------


@pytest.fixture(scope="module")
def models():
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")


def test_run_notifies_ready_watchdog_status_and_stopping(models, listener, tmp_path):
    clip = tmp_path / "traffic.mp4"
    render_clip(clip, ClipSpec(size=(640, 360), fps=15, plates=("HN2468",), seed=8))
    config = tmp_path / "edge.toml"
    config.write_text(
        "[[cameras]]\n"
        'name = "front-left"\n'
        f'source = "{clip}"\n'
        "loop = true\n"
        "\n[storage]\n"
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    env = {**os.environ, "NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        run = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            text=True,
        )
    try:
        # Models load, the outbox opens, the camera starts: then READY=1. Until this is
        # wired in, give up 15 s after the service says it is running.
        ready, began, running_since = None, time.monotonic(), None
        while ready is None and time.monotonic() - began < 90 and run.poll() is None:
            ready = listener.wait_for("READY", 1.0)
            if running_since is None and "running 1 camera" in stderr_path.read_text():
                running_since = time.monotonic()
            if running_since is not None and time.monotonic() - running_since > 15:
                break
        assert ready is not None, "no READY=1: " + stderr_path.read_text()[-2000:]
        assert ready.pid == run.pid
        # Working: a keep-alive at most every half interval (1 s), and a status line.
        after_ready = listener.drain(5.0)
        pings = [m.at for m in [ready, *after_ready] if "WATCHDOG" in m.fields]
        assert len(pings) >= 3, [m.lines for m in after_ready]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert min(gaps) > 0.8, gaps
        statuses = [m.fields["STATUS"] for m in listener.received if "STATUS" in m.fields]
        assert statuses and all("\n" not in s and s for s in statuses)
        assert any("front-left" in s for s in statuses)
        run.send_signal(signal.SIGTERM)
        stopping = listener.wait_for("STOPPING", 10.0)
        assert stopping is not None, "no STOPPING=1 after SIGTERM"
        stdout, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr_path.read_text()[-3000:]
    assert stdout.strip(), "the JSON stats line"
    messages = listener.received
    assert {m.pid for m in messages} == {run.pid}, "only the main process notifies"
    keys = [k for m in messages for k in m.fields if k in ("READY", "STOPPING")]
    assert keys == ["READY", "STOPPING"], "one READY=1, then one STOPPING=1"


def test_a_hung_pipeline_stops_the_keepalives(models, listener, tmp_path, monkeypatch):
    """The processing loop blocks inside a frame (as in a hung model call) while the
    capture and delivery threads go on: the keep-alives stop, so systemd restarts."""
    from edge.config import load_config
    from edge.recognition.recognize import open_recognizer
    from edge.vehicle.service import LiveService

    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    clip = tmp_path / "traffic.mp4"
    render_clip(clip, ClipSpec(size=(640, 360), fps=15, plates=("HN2468",), seed=8))
    path = tmp_path / "edge.toml"
    path.write_text(f'[[cameras]]\nname = "front-left"\nsource = "{clip}"\nloop = true\n')
    config = load_config(path)
    dog = Watchdog(SystemdNotifier(), sources=("loop", "deliver"))
    with open_recognizer(config) as recognizer:
        service = LiveService(config, recognizer, lambda read: None, watchdog=dog)
        process, frames, hung, release = (
            service.pipeline.process,
            [],
            threading.Event(),
            threading.Event(),
        )

        def hanging_process(frame):
            frames.append(frame)
            if len(frames) > 20:
                hung.set()
                release.wait(30)
            return process(frame)

        service.pipeline.process = hanging_process
        runner = threading.Thread(target=service.run, daemon=True)
        runner.start()
        try:
            assert listener.wait_for("READY", 30) is not None
            assert hung.wait(30), "the loop never got 20 frames"
            listener.drain(0.2)  # what was sent up to the hang
            before = [m for m in listener.received if "WATCHDOG" in m.fields]
            during = [m for m in listener.drain(2.5) if "WATCHDOG" in m.fields]
        finally:
            release.set()
            service.stop()
            runner.join(15)
    assert before, "keep-alives while frames were processed"
    assert during == [], "no keep-alive while the loop is stuck (2.5 watchdog intervals)"
