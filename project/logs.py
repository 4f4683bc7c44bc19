"""Log lines as JSON objects (`LOG_FORMAT=json`), one a line, for a log pipeline to read.

Each object has `time` (ISO 8601 UTC, milliseconds), `level`, `logger` and `message`, and every
field the record was given with `extra=` (the product's own: `event`, `room`, `user`, `conn`,
`code`). A traceback is the `exception` field of the same object, never lines of its own.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# What every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn's copy of the message with terminal colours: the plain message is already there.
_DROPPED = frozenset({"color_message"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a lone surrogate in a message is escaped instead of failing the write.
        return json.dumps(line, default=_plain)


def _plain(value: object) -> object:
    """Anything json cannot write (a request, a UUID, a set) as its text."""
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
