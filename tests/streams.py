"""Test video: small generated clips and real ffmpeg network streams on loopback ports."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from tests.mosquitto import free_port

WIDTH, HEIGHT, FPS = 320, 240, 25
_BITS = 8
_BLOCK = WIDTH // _BITS


def clip_image(index: int) -> np.ndarray:
    """A frame whose number is written in black/white blocks along the top edge:
    big enough to survive lossy codecs, so order can be checked after decoding."""
    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for bit in range(_BITS):
        image[:40, bit * _BLOCK : (bit + 1) * _BLOCK] = 255 if (index >> bit) & 1 else 0
    cv2.putText(image, str(index), (60, 180), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 255, 255), 6)
    return image


def frame_index(image: np.ndarray) -> int:
    """The number :func:`clip_image` wrote into a (decoded) frame."""
    value = 0
    for bit in range(_BITS):
        block = image[5:35, bit * _BLOCK + 5 : (bit + 1) * _BLOCK - 5]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def write_clip(path: Path, frames: int = 75, fourcc: str = "mp4v") -> Path:
    """A numbered clip at 320x240, 25 fps (mp4v in .mp4 or MJPG in .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {fourcc} to {path}")
    for index in range(frames):
        writer.write(clip_image(index))
    writer.release()
    return path


def find_ffmpeg() -> str:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise RuntimeError("ffmpeg is not installed (make test installs it)")
    return binary


def remux_faststart(src: Path, dst: Path) -> Path:
    """The same MP4 with its index ('moov') first, as recorders that stream to disk write."""
    subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(dst),
        ],
        check=True,
        timeout=30,
    )
    return dst


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _encoder_args(ffmpeg: str) -> list[str]:
    listing = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
    ).stdout
    # H.264 is what IP cameras send; short GOPs let a receiver that joins mid-stream
    # (UDP) or reconnects start decoding within a fraction of a second.
    if " libx264 " in listing:
        return ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10"]
    if " mpeg2video " in listing:
        return ["-c:v", "mpeg2video", "-g", "10", "-q:v", "4"]
    raise RuntimeError("ffmpeg has neither the libx264 nor the mpeg2video encoder")


class StreamServer:
    """ffmpeg looping a clip in real time as MPEG-TS over UDP or TCP on a loopback port.

    UDP: ffmpeg sends to the port and the camera listens there. TCP: ffmpeg listens
    (like an IP camera) and serves one client. The port stays the same across
    :meth:`stop`/:meth:`kill` and :meth:`start`, so a restart is where the camera
    expects it.
    """

    def __init__(self, clip: Path, protocol: str, workdir: Path):
        if protocol not in ("udp", "tcp"):
            raise ValueError(f"protocol must be udp or tcp, got {protocol!r}")
        self.ffmpeg = find_ffmpeg()
        self.encoder = _encoder_args(self.ffmpeg)
        self.clip = clip
        self.protocol = protocol
        self.port = free_udp_port() if protocol == "udp" else free_port()
        self.url = f"{protocol}://127.0.0.1:{self.port}"
        self.log_path = workdir / f"ffmpeg-{protocol}-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> StreamServer:
        target = f"{self.url}?listen=1" if self.protocol == "tcp" else f"{self.url}?pkt_size=1316"
        command = [self.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-re"]
        command += ["-stream_loop", "-1", "-i", str(self.clip), "-an", *self.encoder]
        command += ["-f", "mpegts", target]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ffmpeg exited at start: {self.log_tail()}")
            # Probing a TCP listener would use up the one client ffmpeg serves, so
            # readiness is read from the kernel's socket table instead.
            if self.protocol == "udp" or _tcp_serving(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ffmpeg did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """End the stream abruptly, like a camera losing power."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tcp_serving(port: int) -> bool:
    """Listening on ``port``, or already serving a client there: a camera retrying
    every fraction of a second can connect before a poll sees the listening socket,
    and ffmpeg stops listening once it has its one client."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields[1] is the local address:port in hex, fields[3] the state:
            # 0A listening, 01 established.
            if fields[1].endswith(wanted) and fields[3] in ("0A", "01"):
                return True
    return False
