"""What a name or a free-text field in a hit may hold: the rules the car applies when
it loads its configuration and lists, and HQ applies to what it receives (the hit and
status schemas in ``edge/data/`` say the same), so that nothing the car accepts is
refused at HQ, and nothing a sender writes can break a console or a log line; and
:func:`redact`, which masks a password in a source URL before it is shown.
Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: Camera and watchlist names: they appear in topics-like places, file names and
#: one-line logs, so ASCII letters, digits, '.', '_' and '-', at most 64.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IDENTIFIER_RULE = "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"

#: Characters never shown as they are: C0 and C1 controls and DEL (terminal escape
#: sequences, line breaks), Unicode's line and paragraph separators, invisible format
#: characters and bidirectional overrides (which reorder what is shown), and lone
#: surrogates (which JSON's \\u escapes can make and no terminal can show). Free text
#: (a watchlist reason, an entry id) may hold any script but none of these.
UNSHOWABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)

#: The longest free-text field (a reason, an entry id) in characters.
MAX_TEXT_LENGTH = 1000


def escape_char(char: str) -> str:
    """One character as a Python escape: ``\\x1b``, ``\\u202e``."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def unshowable_in(text: str) -> str | None:
    """The first character of ``text`` that free text may not hold, as an escape
    (:func:`escape_char`), or None."""
    found = UNSHOWABLE.search(text)
    return None if found is None else escape_char(found.group())


def redact(source: str) -> str:
    """The source with any password in a URL masked, for logs and messages."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return source
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
