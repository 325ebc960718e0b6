"""HQ console users: a TOML file of ``name = "scrypt$..."`` lines (``--web-users``),
made with ``lpr-edge hq web-user add NAME``.

A hash is ``scrypt$N$r$p$SALT$KEY`` (salt and key in base64): :func:`hashlib.scrypt`
from the standard library, a random 16-byte salt per user, so two users with one
password have different lines and a stolen file must be attacked one user at a time.
Checking is in constant time, and a user not in the file costs the same scrypt as
one who is (a wrong name and a wrong password cannot be told apart by timing).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys
import tomllib
from pathlib import Path

from edge.errors import UsageError
from edge.hq.console import escape_control
from edge.textrules import IDENTIFIER, IDENTIFIER_RULE

#: scrypt's cost: 2**14 blocks of 8 (16 MiB, about 50 ms a check): slow to guess
#: offline, quick enough for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KEY_BYTES = 32
SALT_BYTES = 16
#: Beyond this, parameters in a file are refused (a hand-edited line must not make
#: every login take minutes or all memory).
MAX_N = 2**20
#: Passwords shorter than this are refused by ``web-user add``.
MIN_PASSWORD = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=2**28
    )


def hash_password(password: str) -> str:
    """The line's value for ``password``: ``scrypt$N$r$p$SALT$KEY``."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse(hashed: str) -> tuple[int, int, int, bytes, bytes]:
    name, n, r, p, salt, key = hashed.split("$")
    if name != "scrypt":
        raise ValueError("not a scrypt hash")
    n_, r_, p_ = int(n), int(r), int(p)
    if not (2 <= n_ <= MAX_N and n_ & (n_ - 1) == 0 and 1 <= r_ <= 32 and 1 <= p_ <= 16):
        raise ValueError("scrypt parameters out of range")
    return n_, r_, p_, base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)


#: Checked against when the user is unknown, so that it costs what a known one does.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def check_password(password: str, hashed: str) -> bool:
    n, r, p, salt, key = _parse(hashed)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


class Users:
    """The users and hashes of a ``--web-users`` file, read once at start."""

    def __init__(self, hashes: dict[str, str]):
        self._hashes = dict(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def check(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s; slow on purpose (scrypt), run it off the
        event loop."""
        hashed = self._hashes.get(user)
        ok = check_password(password, hashed or _DUMMY)
        return ok and hashed is not None

    @classmethod
    def load(cls, path: Path | str) -> Users:
        """UsageError naming ``--web-users`` for a file that cannot be used."""
        shown = escape_control(str(path))
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise UsageError(f"--web-users {shown}: cannot read: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--web-users {shown}: not TOML: {exc}") from None
        if isinstance(data.get("users"), dict):
            data = data["users"]
        hashes = {}
        for user, hashed in data.items():
            if not IDENTIFIER.fullmatch(user):
                bad = escape_control(user)
                raise UsageError(f"--web-users {shown}: user {bad!r}: expected {IDENTIFIER_RULE}")
            try:
                if not isinstance(hashed, str):
                    raise ValueError("expected a string")
                _parse(hashed)
            except ValueError as exc:
                raise UsageError(
                    f"--web-users {shown}: user {user}: not a hash made by "
                    f"`lpr-edge hq web-user add` ({exc})"
                ) from None
            hashes[user] = hashed
        if not hashes:
            raise UsageError(f"--web-users {shown}: no users")
        return cls(hashes)


def cmd_hq_web_user(args: argparse.Namespace) -> int:
    """Ask for a password twice (not echoed) and print the users-file line."""
    name = args.name or ""
    if not IDENTIFIER.fullmatch(name):
        raise UsageError(f"NAME {escape_control(name)!r}: expected {IDENTIFIER_RULE}")
    password = getpass.getpass(f"Password for {name}: ")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password of at least {MIN_PASSWORD} characters, please")
    if getpass.getpass("Again: ") != password:
        raise UsageError("the two passwords differ")
    print(f'{name} = "{hash_password(password)}"')
    sys.stdout.flush()
    return 0
