"""Ed25519 keys for pushed watchlists: key pairs made and written at HQ (the private
key owner-only), and the public keys a vehicle trusts, from ``[watchlist]
public_keys`` (each the base64 of the raw 32-byte key, or a path to a PEM public key
or to a ``.pub`` file holding that base64). A key's id is the first 8 bytes of SHA-256
of its raw public key, in hex.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.config import ConfigError

KEY_ID_BYTES = 8

PublicKeys = Mapping[str, Ed25519PublicKey]

log = logging.getLogger("edge.watchlist_push")


class PushKeyError(ConfigError):
    """A key file or a configured public key is unusable; one problem per line."""


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A new HQ signing key and its public half."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_base64(public_key: Ed25519PublicKey) -> str:
    """The form a vehicle's ``[watchlist] public_keys`` takes, and a ``.pub`` file holds."""
    return base64.b64encode(raw_public_key(public_key)).decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex (16 characters)."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:KEY_ID_BYTES].hex()


def write_private_key(path: Path | str, private_key: Ed25519PrivateKey) -> None:
    """Write PKCS8 PEM, mode 0600; an existing file is never replaced (FileExistsError)."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created with 0600 in the same call (O_EXCL: never through someone else's file or
    # link), so there is no moment at which the key is readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask took away
        fh.write(pem)
        fh.flush()
        os.fsync(fd)


def write_public_key(path: Path | str, public_key: Ed25519PublicKey) -> None:
    """Write a ``.pub`` file: the base64 of the raw key on one line (FileExistsError if
    the file exists)."""
    with open(path, "x", encoding="ascii") as fh:
        fh.write(public_key_base64(public_key) + "\n")


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """A PKCS8 PEM Ed25519 private key (unencrypted); :class:`PushKeyError` if unusable."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise PushKeyError([f"{path}: cannot read the private key ({exc.strerror})"]) from None
    if mode & 0o077:
        log.warning("private key %s can be read by other users; chmod 600 it", path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PushKeyError([f"{path}: not an unencrypted PEM private key ({exc})"]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PushKeyError([f"{path}: not an Ed25519 key ({type(key).__name__})"])
    return key


def load_public_keys(
    values: Iterable[str], base_dir: Path | str, *, label: str = "[watchlist] public_keys"
) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id. Each value is the base64 of a raw 32-byte public key, or
    a path (relative to ``base_dir``) to a PEM public key or a ``.pub`` file. Every bad
    value is named in one :class:`PushKeyError`."""
    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for value in values:
        try:
            key = _public_key(value.strip(), Path(base_dir))
        except ValueError as exc:
            problems.append(f"{label}: {value!r}: {exc}")
            continue
        keys[key_id(key)] = key
    if problems:
        raise PushKeyError(problems)
    return keys


def _public_key(value: str, base_dir: Path) -> Ed25519PublicKey:
    raw = _b64_raw_key(value)
    if raw is not None:
        return Ed25519PublicKey.from_public_bytes(raw)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"neither the base64 of a 32-byte Ed25519 public key nor a readable key file "
            f"({path}: {exc.strerror})"
        ) from None
    if b"PRIVATE KEY" in data:
        # Vehicles must only ever hold public keys: say so rather than use it.
        raise ValueError(f"{path} holds a private key; give the public key (.pub) instead")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 key ({type(key).__name__})")
        return key
    raw = _b64_raw_key(data.decode("ascii", errors="replace").strip())
    if raw is None:
        raise ValueError(f"{path}: expected a PEM public key or one line of base64 (32 bytes)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _b64_raw_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None
