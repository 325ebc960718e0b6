"""Typed, immutable configuration loaded from one TOML file.

Every section is a frozen dataclass; :func:`load_config` validates the whole file at
load time (unknown keys, wrong types, out-of-range values) and raises one
:class:`ConfigError` listing every problem with the file and key, so a technician
fixes a config in one pass instead of one restart per typo.

Secrets and per-vehicle values can be overridden from the environment:
``LPR_EDGE_<SECTION>_<KEY>`` (e.g. ``LPR_EDGE_MQTT_PASSWORD``) for any scalar key of a
table section.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge.textrules import IDENTIFIER, IDENTIFIER_RULE, redact, unshowable_in

ENV_PREFIX = "LPR_EDGE_"
SECRET_KEYS = frozenset({"password", "token"})
PROJECT_ROOT = Path(__file__).resolve().parent.parent


#: What a vehicle id may be: it is a topic level and the broker's user name, and HQ's
#: hit schema checks it with the same pattern.
VEHICLE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Keys an older release knew, and what took their place: a config file kept from then
# gets told, not given the nearest spelling.
REPLACED_KEYS = {
    "tracking.decide_reads": (
        "replaced by 'decide_margin': the summed confidence of the agreeing readings "
        "over the others, not a count; 1.9 is about two sure readings"
    ),
}


class ConfigError(Exception):
    """A configuration file (or override) is unusable; each line names file and key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True, slots=True)
class VehicleConfig:
    #: Identifies the car in every topic and hit; letters, digits, '-' and '_'.
    id: str = "demo-vehicle"


@dataclass(frozen=True, slots=True)
class CameraConfig:
    name: str = ""
    #: V4L2 device (/dev/video0 or an index), network stream URL or video file. A URL
    #: may carry the camera's password (rtsp://user:password@host/...): masked on output.
    source: str = field(default="", metadata={"password_in_url": True})
    enabled: bool = True
    #: For file sources run live: restart at the end.
    loop: bool = False
    #: Frames held for processing, oldest first; when full the oldest is dropped. A
    #: whole-frame search takes longer than a frame interval, and the frames after it
    #: are cheap: a few frames of buffer let processing catch up instead of dropping
    #: them (1 keeps only the newest frame). Adds at most this many frame intervals of
    #: latency and one decoded frame each of memory (6 MB at 1080p).
    buffer_frames: int = field(default=4, metadata=_range(1, 60))
    #: ...but a waiting frame older than this is dropped when a newer one waits: under
    #: sustained overload the buffer would otherwise add buffer_frames / processed fps
    #: of latency (0.8 s at 5 fps). About two frame intervals at 30 fps: enough to
    #: absorb a whole-frame search, and a read never waits behind stale frames. Against
    #: 0.2 s, two cameras live: read latency 125 -> 80 ms, about 1 fps fewer processed.
    buffer_max_age_seconds: float = field(default=0.07, metadata=_range(0.0, 60))
    #: A lost or stalled source is reopened after a delay that starts here and doubles
    #: on each failure up to the maximum.
    reconnect_min_seconds: float = field(default=0.5, metadata=_range(0.05, 3600))
    reconnect_max_seconds: float = field(default=30.0, metadata=_range(0.05, 86400))
    #: No frame for this long: the stream is taken as stalled and reopened.
    stall_seconds: float = field(default=5.0, metadata=_range(0.5, 3600))


@dataclass(frozen=True, slots=True)
class RecognitionConfig:
    #: A plate detector model from models/manifest.toml. A fixed list, not any string:
    #: the name is looked up in the manifest to find a file, so only these are models
    #: a detector can run (a test checks they are in the manifest).
    detector: Literal["platedet-int8", "platedet-dynamic", "platedet"] = "platedet-int8"
    #: Longest side of the detector input in pixels (multiple of 32); frames are
    #: letterboxed to the smallest stride-aligned rectangle (384x640 for 16:9 at 640).
    #: The fixed-size "platedet" model takes 640 only.
    detector_input: int = field(default=640, metadata=_range(160, 1920))
    #: Still images whose longer side is over 1.5 times this are also searched in overlapping
    #: tiles of this side, each at detector_input: a 4000 px photo letterboxed to 640
    #: shrinks a 150 px plate to 24 px, below what the detector finds. 0: never.
    #: Video frames are not tiled (their searches have their own sizes, see tracking).
    detector_tile: int = field(default=1024, metadata=_range(0, 8192))
    #: Still images: where the detector drew only a weak box (score 0.01 up to
    #: detection_threshold) it looks again, zoomed in, and a plate box it then draws is
    #: read. Real photos: HK plates read 36 -> 38 of 43, US 149 -> 151 of 222, no more
    #: wrong reads, about 10-30% more time per image. Video frames never do.
    second_look: bool = True
    #: Still images are also searched for text with PP-OCRv6's text detector, and the
    #: plate detector looks again, zoomed in, around text boxes no plate box covers
    #: (a bare text box is read only as a cross-boundary plate): 3-4 times the time per
    #: image on 2 cores. Video frames never are.
    text_proposals: bool = False
    ocr: Literal["ppocr", "easyocr"] = "ppocr"
    #: The recogniser model the ppocr engine runs, from models/manifest.toml:
    #: "ppocr-v6-rec" (PP-OCRv6 small) or "ppocr-rec" (PP-OCRv4 mobile).
    ppocr_model: Literal["ppocr-v6-rec", "ppocr-rec"] = "ppocr-v6-rec"
    #: How the easyocr engine runs: converted to ONNX (no PyTorch), or through the
    #: easyocr package (optional extra, pulls PyTorch).
    easyocr_backend: Literal["onnx", "torch"] = "onnx"
    plate_format: str = "hk"
    #: Low on purpose: every box is verified by OCR and the plate format, so a missed
    #: plate costs more than an extra box (recall on distant generated plates 0.98 -> 1.0
    #: going from 0.25 to 0.15, with no false boxes).
    detection_threshold: float = field(default=0.15, metadata=_range(0.0, 1.0))
    nms_iou: float = field(default=0.45, metadata=_range(0.0, 1.0))
    min_confidence: float = field(default=0.5, metadata=_range(0.0, 1.0))
    #: onnxruntime intra-op threads; 0 lets onnxruntime choose.
    threads: int = field(default=0, metadata=_range(0, 256))
    #: Execution providers in order of preference; CPU is always the fallback.
    providers: tuple[str, ...] = ("cpu",)
    #: Where `lpr-edge models fetch` puts the models; empty means the project's models/.
    models_dir: str = ""


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    #: Overlap (IoU) a detection needs with a track's predicted box to continue it.
    iou_threshold: float = field(default=0.15, metadata=_range(0.0, 1.0))
    #: A track not seen for this long has ended and gives its read.
    track_timeout_seconds: float = field(default=0.6, metadata=_range(0.05, 60))
    #: A track still going after this long gives its read anyway (a parked car).
    max_track_seconds: float = field(default=10.0, metadata=_range(0.5, 3600))
    #: A track needs this many frames read in the plate format to give a read.
    min_reads: int = field(default=2, metadata=_range(1, 100))
    #: A track gives its read at once, without waiting for the car to leave the
    #: picture (then only rechecked now and then), when the readings agreeing with its vote
    #: outweigh the others by this much summed confidence: 1.9 is two readings at 0.95
    #: or better, or three fair ones. 0 waits for the track's end.
    decide_margin: float = field(default=1.9, metadata=_range(0.0, 100))
    #: The same plate from the same camera within this long is the same pass.
    dedup_seconds: float = field(default=60.0, metadata=_range(0.0, 86400))
    #: The whole frame is searched for new plates this often; frames in between are
    #: searched only around live tracks. Cameras take turns (a scan due just after
    #: another camera's waits, half an interval at most). 0 searches every frame whole.
    scan_interval_seconds: float = field(default=0.25, metadata=_range(0.0, 10))
    #: Detector input (longest side, multiple of 32) for whole-frame searches in video.
    #: Lower than recognition.detector_input (still images): a passing plate is found
    #: a little later, when larger, and is only read from min_read_width anyway.
    scan_input: int = field(default=512, metadata=_range(64, 1920))
    #: Detector input (longest side, multiple of 32) for the regions around live tracks.
    #: 160 rather than 256: a search region is 3 plate widths, so a plate is still 50+
    #: pixels wide in it, and the run costs half (replay 1.3x faster, same passes read).
    region_input: int = field(default=160, metadata=_range(64, 1920))
    #: Tracks that need no reading now (read already given, or still narrower than
    #: min_read_width) are searched for only this often between whole-frame scans:
    #: enough to keep them alive (track_timeout_seconds) and their motion known. Tracks
    #: being read, and tracks at the frame's border, are searched every frame. 0
    #: searches around every track every frame.
    follow_interval_seconds: float = field(default=0.15, metadata=_range(0.0, 10))
    #: Plates narrower than this (pixels) are tracked but not read: too small to read
    #: reliably, and a passing car comes closer.
    min_read_width: int = field(default=60, metadata=_range(0, 1000))
    #: A read goes out only when its confidence (calibrated: the share of reads right
    #: at that confidence, see edge/tracking/calibration.py) is at least this: a track short of
    #: it keeps being read, and when it ends unsure nothing goes out (a wrong read is
    #: worse than none). 0.5: a read more likely wrong than right does not go out.
    #: 0 publishes every decided read.
    min_read_confidence: float = field(default=0.5, metadata=_range(0.0, 1.0))
    #: The confidence calibration table (JSON, see edge/tracking/calibration.py); "" is the
    #: shipped one (fitted on clips made from the US and European dev photos).
    confidence_calibration: str = ""


@dataclass(frozen=True, slots=True)
class WatchlistConfig:
    path: str = ""
    max_distance: int = field(default=1, metadata=_range(0, 3))
    #: Ed25519 public keys trusted to sign pushed lists: each the base64 of the raw
    #: 32-byte key, or the path of a PEM or .pub key file (relative to the config's folder).
    public_keys: tuple[str, ...] = ()
    #: Seconds between checks of the CSV file for a change (it is then reloaded).
    reload_check_seconds: float = field(default=2.0, metadata=_range(0.1, 3600))
    #: Command run for each non-covert hit, with the hit JSON on stdin (e.g. a sound).
    alert_command: str = ""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class MqttConfig:
    #: Empty: no broker; hits stay in the local outbox and are printed.
    host: str = ""
    port: int = field(default=1883, metadata=_range(1, 65535))
    topic_prefix: str = "lpr/v1"
    client_id: str = ""
    username: str = ""
    password: str = ""
    keepalive: int = field(default=30, metadata=_range(5, 3600))
    reconnect_min_seconds: float = field(default=1.0, metadata=_range(0.1, 3600))
    reconnect_max_seconds: float = field(default=60.0, metadata=_range(0.1, 86400))
    heartbeat_seconds: float = field(default=30.0, metadata=_range(1, 86400))
    #: Cap on the hit's plate crop JPEG; 0 sends no image.
    plate_image_max_bytes: int = field(default=20000, metadata=_range(0, 1_000_000))
    tls: TlsConfig = TlsConfig()


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    #: Only false is accepted (see _cross_checks): non-hit reads never leave the car.
    #: The key stays so that configs which spell out the default still load.
    publish_reads: bool = False
    keep_reads_seconds: int = field(default=0, metadata=_range(0, None))
    context_image: Literal["none", "blurred"] = "none"
    hit_retention_days: int = field(default=28, metadata=_range(1, 3650))


@dataclass(frozen=True, slots=True)
class StorageConfig:
    #: Outbox, audit log and local database; systemd's StateDirectory in production.
    state_dir: str = "var/lpr-edge"
    #: Undelivered messages in the outbox beyond which status raises an alarm (none
    #: is ever dropped for it).
    outbox_alarm_pending: int = field(default=10000, metadata=_range(1, None))
    #: Age in hours of the oldest undelivered message that raises the alarm.
    outbox_alarm_hours: float = field(default=24.0, metadata=_range(0.01, 87600))
    #: Free space (MB) the state directory's disk must keep: below it, non-hit data
    #: and then delivered hits are deleted early; undelivered hits never.
    min_free_mb: int = field(default=500, metadata=_range(0, None))


@dataclass(frozen=True, slots=True)
class GpsConfig:
    source: Literal["none", "gpsd", "nmea"] = "none"
    host: str = "127.0.0.1"
    port: int = field(default=2947, metadata=_range(1, 65535))
    device: str = "/dev/ttyUSB0"
    baud: int = field(default=4800, metadata=_range(300, 921600))
    max_fix_age_seconds: float = field(default=5.0, metadata=_range(0.1, 3600))


#: Reject reasons offered to the officer unless configured: the usual causes of a
#: false hit in patrol LPR systems.
DEFAULT_REJECT_REASONS = (
    "misread",
    "wrong-state-or-country",
    "plate-on-another-vehicle",
    "not-the-listed-vehicle",
    "entry-out-of-date",
    "other",
)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The in-car console: a web page for the car's mobile data terminal."""

    enabled: bool = False
    #: The IP address to listen on: loopback unless the terminal is another box on the
    #: car's own network (then that interface's address, never 0.0.0.0 on a modem).
    listen: str = "127.0.0.1"
    #: 0: any free port (logged), for tests.
    port: int = field(default=8780, metadata=_range(0, 65535))
    #: The login token, preferably from LPR_EDGE_CONSOLE_TOKEN; at least 16 characters.
    token: str = ""
    #: ...or a file holding it (0600). With neither, one is made at first start in the
    #: state directory as console.token.
    token_file: str = ""
    #: Codes the officer picks from to reject a hit (sent to HQ as they are).
    reject_reasons: tuple[str, ...] = DEFAULT_REJECT_REASONS
    #: The officer or badge on duty, put in each decision ("" for none).
    officer: str = ""
    #: Show the blurred context image of a hit when it has one ([privacy] context_image).
    show_context: bool = True
    #: Hits listed on the page, newest first.
    recent_hits: int = field(default=50, metadata=_range(1, 1000))


@dataclass(frozen=True, slots=True)
class Config:
    vehicle: VehicleConfig = VehicleConfig()
    cameras: tuple[CameraConfig, ...] = ()
    recognition: RecognitionConfig = RecognitionConfig()
    tracking: TrackingConfig = TrackingConfig()
    watchlist: WatchlistConfig = WatchlistConfig()
    mqtt: MqttConfig = MqttConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    storage: StorageConfig = StorageConfig()
    gps: GpsConfig = GpsConfig()
    console: ConsoleConfig = ConsoleConfig()
    #: The file this was loaded from (None for built-in defaults); relative paths
    #: in the file are resolved against its folder.
    source_path: Path | None = field(default=None, compare=False)

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        base = self.source_path.parent if self.source_path else Path.cwd()
        return base / path

    @property
    def models_dir(self) -> Path:
        env = os.environ.get(ENV_PREFIX + "MODELS_DIR")
        if env:
            return Path(env)
        if self.recognition.models_dir:
            return self.resolve_path(self.recognition.models_dir)
        return PROJECT_ROOT / "models"

    @property
    def state_dir(self) -> Path:
        return self.resolve_path(self.storage.state_dir)


# --- loading ---------------------------------------------------------------------


def load_config(path: Path | str | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load and validate ``path`` (built-in defaults when None), then apply env overrides."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    label = "<defaults>"
    if path is not None:
        path = Path(path)
        label = str(path)
        raw = _parse_toml(path, label)
    problems: list[str] = []
    config = _build(Config, raw, label, "", problems)
    if not problems:
        config = _apply_env(config, environ, problems)
    if not problems:
        problems.extend(_cross_checks(config, label))
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config, source_path=Path(path).resolve() if path else None)


def _parse_toml(path: Path, label: str) -> dict[str, Any]:
    """The file's TOML tables; every way a file can be unreadable is a ConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{label}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, expected a TOML file"]) from None
    except PermissionError:
        raise ConfigError([f"{label}: permission denied"]) from None
    try:
        # Decoded here rather than by tomllib, which would raise a bare
        # UnicodeDecodeError: TOML files are UTF-8, and the technician needs the place.
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                f"{label}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}, line {line}); save the file as UTF-8"
            ]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"]) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: a few thousand
        # levels exhaust Python's stack. No real config nests more than two or three.
        raise ConfigError(
            [f"{label}: not valid TOML: arrays or tables nested too deep to be a configuration"]
        ) from None


def _build(cls: type, raw: Any, label: str, where: str, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{label}: [{where}] expected a table, got {_describe(raw)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "source_path"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else key
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            if dotted in REPLACED_KEYS:
                suggestion = f" ({REPLACED_KEYS[dotted]})"
            known = ", ".join(sorted(fields))
            problems.append(f"{label}: unknown key '{dotted}'{suggestion}; known keys: {known}")
            continue
        values[key] = _convert(hints[key], fields[key], value, label, dotted, problems)
    return cls(**values)


def _convert(
    tp: Any, fld: dataclasses.Field, value: Any, label: str, key: str, problems: list[str]
):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, label, key, problems)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{label}: '{key}' expected a list, got {_describe(value)}")
            return fld.default
        return tuple(
            _convert(item_tp, fld, item, label, f"{key}[{i}]", problems)
            for i, item in enumerate(value)
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            problems.append(f"{label}: '{key}' expected one of {allowed}, got {value!r}")
            return fld.default
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{label}: '{key}' expected true or false, got {_describe(value)}")
            return fld.default
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{label}: '{key}' expected an integer, got {_describe(value)}")
            return fld.default
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{label}: '{key}' expected a number, got {_describe(value)}")
            return fld.default
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            problems.append(f"{label}: '{key}' expected a string, got {_describe(value)}")
            return fld.default
        return value
    lo, hi = fld.metadata.get("min"), fld.metadata.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        problems.append(f"{label}: '{key}' expected a value {bounds}, got {value}")
        return fld.default
    return value


def _describe(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


def _apply_env(config: Config, environ: typing.Mapping[str, str], problems: list[str]) -> Config:
    sections: dict[str, Any] = {}
    for fld in dataclasses.fields(config):
        section = getattr(config, fld.name)
        if not dataclasses.is_dataclass(section):
            continue
        updates = _env_updates(section, f"{ENV_PREFIX}{fld.name.upper()}_", environ, problems)
        if updates:
            sections[fld.name] = dataclasses.replace(section, **updates)
    return dataclasses.replace(config, **sections) if sections else config


def _env_updates(section: Any, prefix: str, environ, problems: list[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    updates: dict[str, Any] = {}
    for fld in dataclasses.fields(section):
        tp = hints[fld.name]
        if dataclasses.is_dataclass(tp):
            nested = _env_updates(
                getattr(section, fld.name), f"{prefix}{fld.name.upper()}_", environ, problems
            )
            if nested:
                updates[fld.name] = dataclasses.replace(getattr(section, fld.name), **nested)
            continue
        name = f"{prefix}{fld.name.upper()}"
        if name not in environ:
            continue
        text = environ[name]
        parsed: Any = text
        if typing.get_origin(tp) is tuple:
            parsed = [item.strip() for item in text.split(",") if item.strip()]
        elif tp is bool:
            lowered = text.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                problems.append(f"environment: '{name}' expected true or false, got {text!r}")
                continue
            parsed = lowered in {"true", "1", "yes"}
        elif tp in (int, float):
            try:
                parsed = tp(text)
            except ValueError:
                problems.append(f"environment: '{name}' expected a number, got {text!r}")
                continue
        updates[fld.name] = _convert(tp, fld, parsed, "environment", name, problems)
    return updates


def _cross_checks(config: Config, label: str) -> list[str]:
    problems = []
    vid = config.vehicle.id
    if not VEHICLE_ID.fullmatch(vid):
        problems.append(
            f"{label}: 'vehicle.id' expected 1 to 64 ASCII letters, digits, '-' or '_' "
            f"(it is part of MQTT topics and of every hit), got {vid!r}"
        )
    names = [c.name for c in config.cameras]
    for i, cam in enumerate(config.cameras):
        if not cam.name:
            problems.append(f"{label}: 'cameras[{i}].name' is required")
        elif not IDENTIFIER.fullmatch(cam.name):
            # It is in every hit, and HQ's schema takes names of this form only.
            problems.append(
                f"{label}: 'cameras[{i}].name' expected {IDENTIFIER_RULE}, got {cam.name!r}"
            )
        if not cam.source:
            problems.append(f"{label}: 'cameras[{i}].source' is required")
        if cam.name and names.count(cam.name) > 1:
            problems.append(f"{label}: 'cameras[{i}].name' {cam.name!r} is used twice")
        if cam.reconnect_min_seconds > cam.reconnect_max_seconds:
            problems.append(
                f"{label}: 'cameras[{i}].reconnect_min_seconds' must not exceed "
                f"'cameras[{i}].reconnect_max_seconds'"
            )
    if config.mqtt.reconnect_min_seconds > config.mqtt.reconnect_max_seconds:
        problems.append(
            f"{label}: 'mqtt.reconnect_min_seconds' must not exceed 'mqtt.reconnect_max_seconds'"
        )
    if any(ch in config.mqtt.topic_prefix for ch in "#+") or config.mqtt.topic_prefix.endswith("/"):
        problems.append(
            f"{label}: 'mqtt.topic_prefix' expected a topic without wildcards or trailing '/', "
            f"got {config.mqtt.topic_prefix!r}"
        )
    for key in ("scan_input", "region_input"):
        if getattr(config.tracking, key) % 32:
            problems.append(
                f"{label}: 'tracking.{key}' expected a multiple of 32, "
                f"got {getattr(config.tracking, key)}"
            )
    if config.recognition.detector_input % 32:
        problems.append(
            f"{label}: 'recognition.detector_input' expected a multiple of 32, "
            f"got {config.recognition.detector_input}"
        )
    if config.privacy.publish_reads:
        # Under Hong Kong's Personal Data (Privacy) Ordinance this product keeps non-hit
        # reads in the car and purges them; the broker's ACL refuses a vehicle's /read
        # topic and HQ does not subscribe to it, so such reads could never be delivered.
        problems.append(
            f"{label}: 'privacy.publish_reads' = true is not supported: non-hit reads stay "
            "in the car and are purged (Personal Data (Privacy) Ordinance; see PRIVACY.md), "
            "and neither the broker nor HQ accepts them; set it to false or remove it"
        )
    tls = config.mqtt.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append(f"{label}: 'mqtt.tls.cert_file' and 'mqtt.tls.key_file' go together")
    problems += _console_problems(config.console, label)
    for i, key in enumerate(config.watchlist.public_keys):
        problem = _public_key_problem(key.strip())
        if problem:
            problems.append(f"{label}: 'watchlist.public_keys[{i}]' {problem}")
    return problems


#: The shortest console token: guessing one must be hopeless.
CONSOLE_TOKEN_MIN_LENGTH = 16


def _console_problems(console: ConsoleConfig, label: str) -> list[str]:
    problems = []
    try:
        address = ipaddress.ip_address(console.listen)
    except ValueError:
        problems.append(
            f"{label}: 'console.listen' expected an IP address (127.0.0.1, or the address "
            f"of the car network's interface), got {console.listen!r}"
        )
    else:
        if address.is_unspecified:
            # Every interface would include the cellular modem's: the console speaks
            # plain HTTP, and the token would cross networks it must not.
            problems.append(
                f"{label}: 'console.listen' {console.listen} listens on every interface; "
                "the console is plain HTTP: give 127.0.0.1, or the address of the car "
                "network's interface the terminal (MDT) is on"
            )
    if console.token and len(console.token) < CONSOLE_TOKEN_MIN_LENGTH:
        problems.append(
            f"{label}: 'console.token' expected at least {CONSOLE_TOKEN_MIN_LENGTH} characters"
        )
    if console.token and console.token_file:
        problems.append(f"{label}: 'console.token' and 'console.token_file' exclude each other")
    if not console.reject_reasons:
        problems.append(f"{label}: 'console.reject_reasons' expected at least one reason")
    for i, reason in enumerate(console.reject_reasons):
        if not IDENTIFIER.fullmatch(reason):
            problems.append(
                f"{label}: 'console.reject_reasons[{i}]' expected {IDENTIFIER_RULE}, got {reason!r}"
            )
        elif console.reject_reasons.index(reason) != i:
            problems.append(f"{label}: 'console.reject_reasons[{i}]' {reason!r} is listed twice")
    officer = console.officer
    if len(officer) > 64 or unshowable_in(officer) is not None:
        problems.append(
            f"{label}: 'console.officer' expected at most 64 characters without control or "
            "invisible characters"
        )
    return problems


#: Bytes of a raw Ed25519 public key, the form a vehicle's public_keys holds in base64.
ED25519_PUBLIC_KEY_BYTES = 32


def _public_key_problem(key: str) -> str | None:
    """What is wrong with a public_keys entry that can be told without reading files.

    A value that decodes as base64 is meant as a key, and must be one; anything else
    is a key file's path, read (and checked) by edge.watchlist.keys where it is used
    and by `config check`."""
    if not key:
        return "is empty: expected the base64 of a 32-byte Ed25519 public key or a key file"
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) == ED25519_PUBLIC_KEY_BYTES:
        return None
    return (
        "expected the base64 of a 32-byte Ed25519 public key (44 characters) or a key "
        f"file's path, got {key!r} (the base64 of {len(raw)} bytes)"
    )


def state_dir_problem(state_dir: Path) -> str | None:
    """Why this process could not create or write ``state_dir``, or None if it could.

    Only looks (nothing is created): for `config check`, which must not leave folders
    behind, and which may run as another user than the service (under systemd,
    StateDirectory= creates the folder for the service's user)."""
    path = state_dir.absolute()
    # os.path rather than Path: its exists() is False, not an exception, for a path
    # under a file or an unreadable folder; the walk up then finds why.
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable: no write permission in it for this user"
        return None
    ancestor = path.parent
    while not os.path.exists(ancestor):
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: no write permission in {ancestor} for this user"
    return None


# --- presentation ------------------------------------------------------------------


def to_dict(config: Config, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by '********'."""

    def convert(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            out = {}
            for fld in dataclasses.fields(obj):
                if fld.name == "source_path":
                    continue
                value = getattr(obj, fld.name)
                if mask_secrets and fld.name in SECRET_KEYS and value:
                    value = "********"
                elif mask_secrets and fld.metadata.get("password_in_url"):
                    # The logs' masking, so output and logs agree.
                    value = redact(value)
                out[fld.name] = convert(value)
            return out
        if isinstance(obj, tuple):
            return [convert(v) for v in obj]
        return obj

    return convert(config)


def dumps_toml(data: dict[str, Any]) -> str:
    """Render :func:`to_dict` output as TOML (scalars, lists, tables, arrays of tables)."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    def table(prefix: str, obj: dict[str, Any], header: str) -> None:
        if header:
            lines.append("")
            lines.append(header)
        nested = []
        for key, value in obj.items():
            is_tables = (
                isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
            )
            if isinstance(value, dict) or is_tables:
                nested.append((key, value))
            else:
                lines.append(f"{key} = {scalar(value)}")
        for key, value in nested:
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                table(f"{name}.", value, f"[{name}]")
            else:
                for item in value:
                    table(f"{name}.", item, f"[[{name}]]")

    table("", data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
