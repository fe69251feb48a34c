"""Log records as lines, scrubbed of secrets: text for people, one-line JSON for collectors.

Whatever a line carries (a path with its query string, a header echoed in an error, a
traceback), API keys, tokens and passwords are replaced by `[redacted]` before it is written:
the formatters scrub the finished line, so no logger, ours or a library's, can leak one.
"""

import json
import logging
import re
from datetime import UTC, datetime

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
REDACTED = "[redacted]"

_SECRET_PARAMETERS = (
    r"api[_-]?key|key|access[_-]?token|refresh[_-]?token|token|refresh|access|password|"
    r"passwd|secret|signature|auth|authorization|jwt|sessionid|csrftoken|csrfmiddlewaretoken"
)
_PATTERNS = [
    # name=value in query strings and form bodies, "name": "value" in JSON.
    re.compile(rf"(?i)(\b(?:{_SECRET_PARAMETERS})=)[^&\s\"']+"),
    re.compile(rf"(?i)(\"(?:{_SECRET_PARAMETERS})\"\s*:\s*\")[^\"]*"),
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"),
    # The service's own API keys, secure mode secrets and JWTs, wherever they appear.
    re.compile(r"()\b(?:ff[sc]|fsm)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"()\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
]


def scrub(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str))
