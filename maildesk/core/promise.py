"""The promised answer time as a customer reads it, in their language (pure).

"Monday 7 December, 14:30 (Moscow time)" / "понедельника, 7 декабря, 14:30 (по
московскому времени)": the weekday and date in the calendar's time zone, the year only
when it is not this year's, and the zone as the calendar's `title` names it (else its
UTC offset). The templates put "by" / "до" before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")
# After "до": the genitive case.
_RU_DAYS = ("понедельника", "вторника", "среды", "четверга", "пятницы", "субботы",
            "воскресенья")
_RU_MONTHS = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
              "сентября", "октября", "ноября", "декабря")


def promise_text(
    due: datetime, zone: ZoneInfo, zone_title: Mapping[str, str], language: str,
    now: datetime,
) -> str:
    local = due.astimezone(zone)
    year = f" {local.year}" if local.year != now.astimezone(zone).year else ""
    clock = f"{local.hour:02d}:{local.minute:02d}"
    where = zone_title.get(language) or _offset(local.utcoffset())
    if language == "ru":
        day, month = _RU_DAYS[local.weekday()], _RU_MONTHS[local.month - 1]
    else:
        day, month = _EN_DAYS[local.weekday()], _EN_MONTHS[local.month - 1]
    return f"{day}, {local.day} {month}{year}, {clock} ({where})"


def _offset(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds()) // 60
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
