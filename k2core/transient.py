"""Which failures are worth retrying: the one place that splits transient faults from deterministic ones.

Transient: the network or a remote service hiccuped (connection refused/reset, timeouts, HTTP 429/5xx, S3
`SlowDown`/`InternalError` as botocore or s3fs report them, a server still starting). Deterministic: everything
else (bad params, `ConfigError`, validation errors, a reject threshold exceeded, a missing file or bucket, access
denied), which a retry would only repeat. Unknown exceptions count as deterministic, so nothing is retried by
accident. Optional libraries (botocore, httpx, aiohttp, requests) are looked up in `sys.modules` only: an exception
of a library nobody imported cannot occur, and the check imports nothing.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from k2core.errors import UserError

TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EIO", "EREMOTEIO", "EBUSY", "EAGAIN", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED",
                 "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH", "EPIPE")
    if hasattr(errno, name)
)
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException", "InternalError",
     "ServiceUnavailable", "RequestLimitExceeded"}
)
# Library exception classes that mean "the connection or the remote side failed", by module.
TRANSIENT_CLASSES = {
    "botocore.exceptions": ("ConnectionError", "HTTPClientError"),  # EndpointConnection, Connect/ReadTimeout, ...
    "httpx": ("TransportError",),
    "aiohttp": ("ClientConnectionError", "ServerTimeoutError", "ClientPayloadError"),
    "requests.exceptions": ("ConnectionError", "Timeout", "ChunkedEncodingError"),
    "urllib3.exceptions": ("ProtocolError", "TimeoutError", "NewConnectionError"),
}
# Ours and Python's deterministic errors: never transient, whatever they wrap. A UserError (an unreachable S3
# endpoint once the client's own retries are spent, a corrupted file) asks the user to fix something.
DETERMINISTIC = (UserError, ValueError, TypeError, LookupError, AssertionError, NotImplementedError, FileNotFoundError,
                 FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (httpx/requests `response.status_code`, aiohttp `status`, urllib
    `code`, botocore `response['ResponseMetadata']`), if any."""
    response: Any = getattr(exc, "response", None)
    for value in (getattr(response, "status_code", None), getattr(exc, "status", None), getattr(exc, "code", None)):
        if isinstance(value, int) and 100 <= value < 600:
            return value
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    return None


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DETERMINISTIC):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    status = http_status(exc)
    if status is not None and (status == 429 or status >= 500):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in TRANSIENT_S3_CODES:
        return True
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error it met
    if isinstance(reason, BaseException) and _one_is_transient(reason):
        return True
    for module_name, names in TRANSIENT_CLASSES.items():
        module = sys.modules.get(module_name)
        classes = tuple(getattr(module, name) for name in names if hasattr(module, name)) if module else ()
        if classes and isinstance(exc, classes):
            return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an error it was explicitly raised from (`raise ... from cause`), is a transient fault.

    A deterministic exception (e.g. `ConfigError`, a `ValueError`) is never transient, even when it wraps one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DETERMINISTIC):
            return False
        if _one_is_transient(current):
            return True
        current = current.__cause__
    return False
