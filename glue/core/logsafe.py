"""Every log line of the process as it was written: user input cannot forge or hide one.

Request paths, user names, image names and hub messages reach log lines. A
newline in them would start a forged line; a bidi control (U+202E and friends)
or a zero-width character would make a line read differently from what it
holds. `install()` escapes all of them in every record of the process, once,
where a record is made (so every logger and handler, the hub's too): the glue
calls it where it sets up logging, the hub where it loads its config
(`glue.hub.setup.configure`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from typing import Any

# Unicode's control (Cc), format (Cf: bidi controls, zero-width characters, tags, the BOM)
# and line/paragraph separator (Zl, Zp) characters; tests check it against unicodedata
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every unsafe character escaped (`\\x0a`, `\\u202e`): one line, as it reads."""
    return UNSAFE.sub(_escape, text)


def _lines(text: str) -> str:
    """Text whose lines are its own (a stack): each line escaped, the lines kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


# the lines Python writes between chained exceptions
CHAINED = (
    "\nThe above exception was the direct cause of the following exception:\n\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
)


def _traceback(exc_info: Any) -> str:
    """A traceback with its frames' lines kept; an exception's message, which may be user
    input, escaped into its one line (a newline in it would start a forged record)."""
    chunks = []
    for chunk in traceback.TracebackException(*exc_info).format():
        if chunk in CHAINED:
            chunks.append(chunk)
        elif chunk.startswith(("Traceback (most recent call last):", "  File ", "  [Previous")):
            chunks.append(_lines(chunk))
        else:
            body = chunk.removesuffix("\n")
            chunks.append(printable(body) + chunk[len(body) :])
    return "".join(chunks).rstrip("\n")


_installed = False


def install() -> None:
    """Make every log record of this process safe as it is made (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def safe_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            record.msg, record.args = printable(record.getMessage()), None
        except Exception:  # a message its arguments do not fit: leave it as written
            record.msg = printable(str(record.msg))
        # a record is made inside the code that logs: escaping never fails the caller (an
        # exception Python cannot format is left to the formatter, as written)
        with contextlib.suppress(Exception):
            if record.exc_info and record.exc_info[0] is not None:
                record.exc_text = _traceback(record.exc_info)
            if record.stack_info:
                record.stack_info = _lines(record.stack_info)
        return record

    logging.setLogRecordFactory(safe_record)
