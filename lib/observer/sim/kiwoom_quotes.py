"""Answers to the Kiwoom quotation TRs (providers.md §2.3), computed from the one market's per-trade history
(the same trades KIS's time-sliced conclusions serve), never ahead of the market clock.

- `ka10079` tick chart: rows newest first, `tic_scope` N trades per row (bars counted from the day's first
  trade, so the newest may be partial), `page_rows` rows per page; `next-key` is the row index the next
  page starts below, so paging is stable while the day goes on (history only grows at its end).
- `ka10080` minute chart: N-minute bars from 09:00 that hold at least one trade, newest first, paged the same.
- `ka10001` current price (basic stock information): the reference names no quote TR; this is the one the
  Kiwoom API lists for it, with the fields a client needs (UNCONFIRMED beyond them).

Each answer is (body, next_key or None); errors raise `KiwoomError` with the reference's return code.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from observer.sim.market import MIN, T_OPEN, SymbolSim, dec2, hhmmss, sign_code

if TYPE_CHECKING:
    from observer.sim.interfaces import MarketView

OK_MSG = "정상적으로 처리되었습니다"
TICK_SCOPES = {"1", "3", "5", "10", "30"}
MINUTE_SCOPES = {"1", "3", "5", "10", "15", "30", "45", "60"}


class KiwoomError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.body = {"return_code": code, "return_msg": msg}


def unknown_symbol(code) -> KiwoomError:
    return KiwoomError(1901, f"종목코드를 찾을 수 없습니다: {str(code)[:20]!r} (simulator)")


def bad_input(what: str) -> KiwoomError:
    return KiwoomError(1501, f"입력값 오류: {what} (simulator)")


def signed(price: int, ref: int) -> str:
    """A price with Kiwoom's direction prefix: + above, - below the reference (previous close), none at it."""
    return f"+{price}" if price > ref else f"-{price}" if price < ref else str(price)


def diff(d: int) -> str:
    return f"+{d}" if d > 0 else str(d)


class KiwoomQuotes:
    def __init__(self, market: MarketView, page_rows: int):
        self.market = market
        self.page_rows = page_rows

    def _sym(self, body: dict) -> SymbolSim:
        code = body.get("stk_cd")
        # only KRX is simulated: the _NX / _AL forms name venues the market does not have
        s = self.market.symbol(code) if isinstance(code, str) else None
        if s is None:
            raise unknown_symbol(code)
        tp = body.get("upd_stkpc_tp", "0")
        if tp not in ("0", "1"):
            raise bad_input("upd_stkpc_tp")
        return s

    def _scope(self, body: dict, allowed: set[str]) -> int:
        scope = body.get("tic_scope")
        if scope not in allowed:
            raise bad_input(f"tic_scope must be one of {sorted(allowed, key=int)}")
        return int(scope)

    @staticmethod
    def _start(next_key: str | None, count: int) -> int:
        """The row index (from the oldest) the page starts below: `count` for a first page."""
        if next_key is None:
            return count
        if not next_key.isdigit() or len(next_key) > 9 or int(next_key) > count:
            raise bad_input("next-key")
        return int(next_key)

    def _page(self, rows_from_oldest, start: int) -> tuple[list, str | None]:
        lo = max(0, start - self.page_rows)
        return [rows_from_oldest(i) for i in range(start - 1, lo - 1, -1)], (str(lo) if lo > 0 else None)

    # ---- ka10079 --------------------------------------------------------------------------------------
    def tick_chart(self, body: dict, next_key: str | None) -> tuple[dict, str | None]:
        s = self._sym(body)
        n = self._scope(body, TICK_SCOPES)
        info = s.info
        prev = info.prev_close
        date = self.market.date_str
        with s.lock:
            s.advance(self.market.market_ms())
            count = len(s.h_t)
            bars = (count + n - 1) // n
            start = self._start(next_key, bars)
            t, px, qty = s.h_t, s.h_px, s.h_qty

            def row(b: int) -> dict:
                i0, i1 = b * n, min((b + 1) * n, count)
                seg = px[i0:i1]
                last = seg[-1]
                return {"cur_prc": str(last), "trde_qty": str(sum(qty[i0:i1])), "cntr_tm": date + hhmmss(t[i1 - 1]),
                        "open_pric": str(seg[0]), "high_pric": str(max(seg)), "low_pric": str(min(seg)),
                        # as in the sample: the difference unsigned, its direction in pred_pre_sig
                        "pred_pre": str(abs(last - prev)),
                        "pred_pre_sig": sign_code(last, prev, info.lower, info.upper)}

            rows, nxt = self._page(row, start)
        return {"stk_cd": info.code, "last_tic_cnt": "", "stk_tic_chart_qry": rows, "return_code": 0,
                "return_msg": OK_MSG}, nxt

    # ---- ka10080 --------------------------------------------------------------------------------------
    def minute_chart(self, body: dict, next_key: str | None) -> tuple[dict, str | None]:
        s = self._sym(body)
        n = self._scope(body, MINUTE_SCOPES)
        info = s.info
        prev = info.prev_close
        date = self.market.date_str
        base = body.get("base_dt")
        if base not in (None, "") and (not isinstance(base, str) or len(base) != 8 or not base.isdigit()):
            raise bad_input("base_dt YYYYMMDD")
        span = n * MIN
        with s.lock:
            s.advance(self.market.market_ms())
            t = s.h_t
            # the bars that hold a trade (only today is simulated: an earlier base_dt has none)
            edges = [] if base and base != date else sorted({T_OPEN + (x - T_OPEN) // span * span for x in t})
            start = self._start(next_key, len(edges))

            def row(b: int) -> dict:
                i0 = bisect.bisect_left(t, edges[b])
                i1 = bisect.bisect_left(t, edges[b] + span)
                seg = s.h_px[i0:i1]
                last = seg[-1]
                return {"cntr_tm": date + hhmmss(edges[b]), "cur_prc": signed(last, prev),
                        "trde_qty": str(sum(s.h_qty[i0:i1])), "acc_trde_qty": str(s.h_acml[i1 - 1]),
                        "open_pric": signed(seg[0], prev), "high_pric": signed(max(seg), prev),
                        "low_pric": signed(min(seg), prev), "pred_pre": diff(last - prev),
                        "pred_pre_sig": sign_code(last, prev, info.lower, info.upper)}

            rows, nxt = self._page(row, start)
        return {"stk_cd": info.code, "stk_min_pole_chart_qry": rows, "return_code": 0, "return_msg": OK_MSG}, nxt

    # ---- ka10001 --------------------------------------------------------------------------------------
    def stock_info(self, body: dict, next_key: str | None) -> tuple[dict, str | None]:
        s = self._sym(body)
        info = s.info
        prev = info.prev_close
        with s.lock:
            s.advance(self.market.market_ms())
            px, acml, o, h, lo = s.last, s.acml_vol, s.open, s.high, s.low
        return {"stk_cd": info.code, "stk_nm": info.name, "cur_prc": signed(px, prev),
                "pre_sig": sign_code(px, prev, info.lower, info.upper), "pred_pre": diff(px - prev),
                "flu_rt": ("+" if px > prev else "") + dec2((px - prev) * 100, prev), "trde_qty": str(acml),
                "open_pric": signed(o, prev), "high_pric": signed(h, prev), "low_pric": signed(lo, prev),
                "upl_pric": signed(info.upper, prev), "lwl_pric": signed(info.lower, prev), "base_pric": str(prev),
                "return_code": 0, "return_msg": OK_MSG}, None
