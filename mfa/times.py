"""Points in time as people and scripts write them: Unix seconds or RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime

# Far enough for any audit query, small enough for a BIGINT and for datetime.
_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z


def parse_time(value: str) -> int:
    """Unix seconds from ``"1718000000"`` or an RFC 3339 date-time (``"2024-06-10T06:13:20Z"``;
    a bare date means its midnight UTC). Raise ``ValueError`` for anything else."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not Unix seconds or an RFC 3339 date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
    if not 0 <= seconds <= _MAX:
        raise ValueError("out of range")
    return seconds
