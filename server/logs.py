"""The access log without query strings.

The API refuses a token sent in a query string (only the Authorization header counts), but the
request line was still logged as it came, token and all. uvicorn logs each request to the
`uvicorn.access` logger as (client, method, path with query, HTTP version, status); this filter
replaces the query string with `?[redacted]` on every path before the record is written. The
board page's own query values (sorting) are no secret, but telling them apart from a pasted
token is guesswork: nothing after `?` is logged.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"


def redact_query(path: str) -> str:
    head, sep, _ = path.partition("?")
    return f"{head}?{REDACTED}" if sep else head


class RedactQueryStrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
        logger.addFilter(RedactQueryStrings())
