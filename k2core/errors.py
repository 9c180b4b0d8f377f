"""Errors the user can fix, which the `k2` command prints as one line, without a traceback.

Raise `UserError` (or a subclass) for bad input or setup: a corrupted file, a wrong params.yaml key, an unreachable
endpoint, a missing bucket. Its message names the file, key or setting and says what to do; `k2` prints
`k2: <message>` as its last stderr line and exits 2. Raise it `from` the low-level error so logs keep the cause.
"""

from __future__ import annotations

import logging


class UserError(Exception):
    """Bad input or setup the user can fix; the message names it and says what to do."""


class CorruptFileError(UserError):
    """A file exists but cannot be read as what it should be (junk, truncated, wrong format)."""


def one_line(exc: BaseException) -> str:
    """The error's message on one line: the lines of a multi-line message joined with '; ' (with a space after a
    line that ends in ':', which introduces the next)."""
    text = ""
    for line in (line.strip() for line in str(exc).splitlines()):
        if line:
            text += (" " if text.endswith(":") else "; ") + line if text else line
    return text or type(exc).__name__


def hide_user_error_tracebacks() -> None:
    """Log records about a UserError keep their message but drop the traceback (Prefect's engine logs every flow and
    task exception with one), so bad input shows as a few lines, not a wall of frames."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "hides_user_errors", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
        return record

    factory.hides_user_errors = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
