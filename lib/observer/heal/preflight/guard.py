"""The deploy guard (RFC-007 time lock): may running collectors be touched now?"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from observer.core.calendar import Calendar
from observer.core.clock import KST, Clock, kst_datetime
from observer.core.settings import DeployGuardConfig
from observer.markets import calendar_from_config

NY = ZoneInfo("America/New_York")


def hhmm(s: str) -> tuple[int, int]:
    h, m = s.split(":")
    return int(h), int(m)


def deploy_guard(cfg: dict, clock: Clock, calendar: Calendar | None = None) -> tuple[bool, str]:
    """(locked, message): locked during KR market hours on KRX trading days (the lock moves with a
    late open/close) and, when configured, during US hours on NYSE trading days."""
    g = DeployGuardConfig.from_config(cfg)
    cal = calendar or calendar_from_config(cfg)
    now = clock.now()
    kst = now.astimezone(KST)
    day = kst.date()
    kr = f"{g.kr_start}-{g.kr_end}"
    when = kst.strftime("%Y-%m-%d %H:%M KST (%a)")
    reason = cal.closed_reason(day)
    if reason is None:
        s = cal.session(day)
        # the start stays (preflight runs at 08:30 whatever the open); the end follows a late close
        start = kst_datetime(day, g.kr_start)
        end = kst_datetime(day, g.kr_end) + s.close_shift
        shifted = f", end shifted by the {s.late_open_reason}" if s.close_shift else ""
        if start <= kst < end:
            return True, (f"deploy guard: {when} is inside KR market hours ({start:%H:%M}-{end:%H:%M} KST on "
                          f"trading days{shifted}): refusing to touch running collectors; deploy after "
                          f"{end:%H:%M} KST or use --force")
        kr_note = f"outside KR market hours ({start:%H:%M}-{end:%H:%M} KST{shifted})"
    else:
        kr_note = f"not a {cal.market_name} trading day ({reason})"
    if g.us_market:
        import holidays

        ny = now.astimezone(NY)
        nyse = holidays.financial_holidays("NYSE", years=ny.year)
        if ny.weekday() < 5 and ny.date() not in nyse:
            sh, sm = hhmm(g.us_start)
            eh, em = hhmm(g.us_end)
            us_start = ny.replace(hour=sh, minute=sm, second=0, microsecond=0)
            us_end = ny.replace(hour=eh, minute=em, second=0, microsecond=0)
            if us_start <= ny < us_end:
                return True, (f"deploy guard: {when} = {ny:%H:%M} New York is inside US market hours "
                              f"({us_start:%H:%M}-{us_end:%H:%M} America/New_York on NYSE trading days): "
                              f"refusing; deploy after {us_end:%H:%M} New York or use --force")
        kr_note += ", and outside US market hours"
    return False, f"deploy guard: {when} is {kr_note} (lock {kr} KST): deploying is allowed"
