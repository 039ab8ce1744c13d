"""Logging: human-readable lines by default, one JSON object per line as an option.

The node's key events are plain log records with fixed messages that
operators grep for ("Consensus activated", "Block produced", ...); their
structured fields travel in ``extra={"fields": {...}}`` and are appended as
``key=value`` in text form or as JSON members.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__)


class TextFormatter(logging.Formatter):
    """Format as ``2026-11-25 19:35:14.123 INFO  node: Block produced height=5 txs=3``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None) or {}
        kv = "".join(f" {k}={v}" for k, v in fields.items())
        head = f"{ts}.{int(record.msecs):03d} {record.levelname:<5} {record.name}"
        line = f"{head}: {record.getMessage()}{kv}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        trace_id = _trace_id()
        if trace_id is not None:
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _trace_id() -> str | None:
    try:
        from timecoin.telemetry.tracing import current_trace_id
    except ImportError:  # tracing is optional at import time
        return None
    return current_trace_id()


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Configure the root logger for the node process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a key event with structured *fields*."""
    logger.log(level, message, extra={"fields": fields})
