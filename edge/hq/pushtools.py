"""HQ's commands for pushed watchlists: `lpr-edge watchlist keygen` (a signing key
pair), `sign` (a watchlist CSV into a signed document), `verify` (a document checked
as a vehicle would) and `publish` (a signed document to the broker, retained).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge.errors import UsageError
from edge.files import write_private
from edge.timefmt import iso_utc
from edge.watchlist.csvfile import read_csv
from edge.watchlist.document import SCHEMA, PushRejected, valid_vehicle_id
from edge.watchlist.keys import (
    PushKeyError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_keys,
    public_key_base64,
    write_private_key,
    write_public_key,
)
from edge.watchlist.lists import WatchlistError
from edge.watchlist.signing import sign_document, verify_document


def _target(vehicle_id: str | None) -> str:
    return f"vehicle {vehicle_id}" if vehicle_id else "every vehicle"


def cmd_watchlist_keygen(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist keygen --out PREFIX`: PREFIX.key (0600) and PREFIX.pub."""
    key_path, pub_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} already exists; not overwriting a key")
    if not key_path.parent.is_dir():
        raise UsageError(f"folder {key_path.parent} does not exist")
    private_key, public_key = generate_keypair()
    try:
        write_private_key(key_path, private_key)
    except FileExistsError:  # created since the check above
        raise UsageError(f"{key_path} already exists; not overwriting a key") from None
    except OSError as exc:
        raise UsageError(f"cannot write {key_path}: {exc.strerror}") from None
    try:
        write_public_key(pub_path, public_key)
    except OSError as exc:
        # Half a key pair is of no use and would block the next try: take it back.
        key_path.unlink()
        reason = "it already exists" if isinstance(exc, FileExistsError) else exc.strerror
        raise UsageError(f"cannot write {pub_path}: {reason}") from None
    print(f"key id:      {key_id(public_key)}")
    print(f"private key: {key_path} (mode 0600; keep it at HQ, never on a vehicle)")
    print(f"public key:  {pub_path}")
    print("vehicles trust it with, in the config's [watchlist] section:")
    print(f'public_keys = ["{public_key_base64(public_key)}"]')
    return 0


def cmd_watchlist_sign(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist sign CSV --key FILE`: the signed document for a CSV list."""
    version = int(time.time()) if args.version is None else args.version
    if version < 1:
        raise UsageError(f"--version must be 1 or more, got {version}")
    if args.vehicle is not None and not valid_vehicle_id(args.vehicle):
        raise UsageError(f"--vehicle expected letters, digits, '-' or '_', got {args.vehicle!r}")
    try:
        entries = read_csv(args.csv)
        private_key = load_private_key(args.key)
    except (WatchlistError, PushKeyError) as exc:
        raise UsageError(str(exc)) from None
    payload = sign_document(entries, version, private_key, vehicle_id=args.vehicle)
    out = args.out
    if out in (None, "-"):
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        where = "stdout"
    else:
        try:
            # 0600 whatever the shell's umask: a list can hold covert entries.
            write_private(out, payload)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from None
        where = str(out)
    print(
        f"signed {len(entries)} entries as version {version} with key "
        f"{key_id(private_key.public_key())} for {_target(args.vehicle)}: "
        f"{len(payload)} bytes to {where}",
        file=sys.stderr,
    )
    return 0


def cmd_watchlist_verify(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist verify FILE`: would a vehicle accept this document?"""
    from edge.config import load_config

    config = load_config(getattr(args, "config", None))
    if getattr(args, "public_key", None):
        keys = load_public_keys(args.public_key, Path.cwd(), label="--public-key")
    else:
        base = config.source_path.parent if config.source_path else Path.cwd()
        keys = load_public_keys(config.watchlist.public_keys, base)
    if not keys:
        raise UsageError("no public keys: set [watchlist] public_keys or give --public-key")
    vehicle = getattr(args, "vehicle", None) or config.vehicle.id
    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        pushed = verify_document(payload, keys, vehicle_id=vehicle, current_version=0)
    except PushRejected as exc:
        print(f"{args.file}: REJECTED for vehicle {vehicle} ({exc.code}): {exc.message}")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    print(
        f"{args.file}: OK for vehicle {vehicle}: version {pushed.version}, signed by key "
        f"{pushed.key_id}, issued {iso_utc(pushed.issued_at)}, "
        f"{len(pushed.watchlist)} entries, for {_target(pushed.vehicle_id)}"
    )
    return 0


#: How long `watchlist publish` waits for the broker to accept the document.
PUBLISH_TIMEOUT_S = 30.0
#: Where `watchlist publish` takes the broker password from when not given.
PASSWORD_ENV = "LPR_EDGE_HQ_PUBLISH_PASSWORD"


def cmd_watchlist_publish(args: argparse.Namespace) -> int:
    """`lpr-edge watchlist publish FILE`: a signed document to the broker, retained,
    on the fleet topic or (for a one-vehicle list) that vehicle's topic."""
    import threading

    from edge.delivery.mqtt import Topics, broker_config, connect, new_client, reason_ok

    try:
        payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(payload)
    except ValueError:
        raise UsageError(f"{args.file}: not a JSON document") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "signature" not in doc:
        raise UsageError(
            f"{args.file}: not a signed {SCHEMA} document ('watchlist sign' makes one)"
        )
    try:
        config = broker_config(args, client_id="lpr-edge-hq-publish", password_env=PASSWORD_ENV)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vehicle = doc.get("vehicle_id")
    topics = Topics(config.topic_prefix, vehicle or "-")
    topic = topics.vehicle_watchlist if vehicle else topics.fleet_watchlist

    connected = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["connect"] = reason_code
        connected.set()

    def on_connect_fail(client, userdata):
        # TCP or TLS failed (paho logs the cause): no point retrying for 30 s.
        outcome["failed"] = (
            "connection failed (network, or TLS: check --ca-file, --cert-file and --key-file)"
        )
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        outcome["publish"] = reason_code

    client = new_client(config, config.client_id)
    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_publish = on_publish
    connect(client, config)
    client.loop_start()
    try:
        answered = connected.wait(PUBLISH_TIMEOUT_S)
        if not answered or "failed" in outcome or not reason_ok(outcome["connect"]):
            why = outcome.get("failed") or outcome.get("connect", "no answer")
            print(
                f"lpr-edge watchlist publish: cannot connect to {config.host}:{config.port}: {why}",
                file=sys.stderr,
            )
            return 1
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published() or not reason_ok(outcome.get("publish")):
            print(
                f"lpr-edge watchlist publish: the broker did not accept it on {topic}: "
                f"{outcome.get('publish', 'no acknowledgement')}",
                file=sys.stderr,
            )
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    print(
        f"published version {doc.get('version')} ({len(payload)} bytes) to "
        f"{_target(vehicle)} on {topic}, retained"
    )
    return 0
