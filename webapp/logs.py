"""One JSON object per log line, for log collectors (``LOG_FORMAT=json``).

A log pipeline (Loki, Elasticsearch, CloudWatch) parses each line as JSON
instead of guessing at a text layout; tracebacks stay inside the one object
instead of spilling over lines. The standard library has everything needed,
so this is a formatter of a few lines rather than a dependency.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
