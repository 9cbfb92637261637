"""Answers to the KIS quotation calls, computed from the one market (never ahead of the market clock)."""

from __future__ import annotations

import bisect
import math
import random
from datetime import date, timedelta
from typing import TYPE_CHECKING

from observer.sim.market import (
    MIN,
    T_CLOSE,
    T_CLOSE_AUCTION,
    T_OPEN,
    SymbolSim,
    ceil_tick,
    dec2,
    floor_tick,
    hhmmss,
    parse_hhmmss,
    sign_code,
    tick_size,
)
from observer.sim.master import standard_code

if TYPE_CHECKING:
    from observer.sim.interfaces import MarketView

OK = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다."}
ROWS = 30
DAILY_CHART_ROWS = 100  # FHKST03010100, providers.md §1.5


class DailyHistory:
    """Deterministic past sessions of one symbol (weekdays only, newest last), ending the day before."""

    def __init__(self, seed: int, sim_date: date, info, days: int = 300):
        rng = random.Random(f"{seed}|{info.code}|{sim_date:%Y%m%d}|daily")
        dates = []
        d = sim_date
        while len(dates) < days:
            d -= timedelta(days=1)
            if d.weekday() < 5:
                dates.append(d)
        rows = []
        close = info.prev_close
        vol = info.prdy_vol
        for d in dates:  # walking backwards in time
            ret = rng.gauss(0, info.vol_daily)
            o = ceil_tick(max(100, int(close / math.exp(ret * rng.uniform(0.2, 0.8)))))
            h = max(o, close)
            h = floor_tick(int(h * (1 + abs(rng.gauss(0, info.vol_daily * 0.5))))) or h
            h = max(h, o, close)
            lo = min(o, close)
            lo = ceil_tick(int(lo * (1 - abs(rng.gauss(0, info.vol_daily * 0.5)))))
            lo = min(lo, o, close)
            rows.append([d.strftime("%Y%m%d"), o, h, lo, close, vol])
            close = floor_tick(max(100, int(close / math.exp(ret))))
            vol = max(1, int(info.prdy_vol * math.exp(rng.gauss(0, 0.4)))) if info.active else \
                max(0, int(info.prdy_vol * math.exp(rng.gauss(0, 0.8))))
        rows.reverse()
        self.rows = rows  # [yyyymmdd, open, high, low, close, volume], oldest first
        self.prev_of = {}
        for i in range(1, len(rows)):
            self.prev_of[rows[i][0]] = rows[i - 1][4]
        self.first_prev = close


class Quotes:
    def __init__(self, market: MarketView):
        self.market = market
        self._hist: dict[str, DailyHistory] = {}

    def history(self, code: str) -> DailyHistory:
        h = self._hist.get(code)
        if h is None:
            h = self._hist[code] = DailyHistory(self.market.seed, self.market.date, self.market.universe.by_code[code])
        return h

    def _sym(self, q: dict) -> SymbolSim:
        code = q.get("FID_INPUT_ISCD", "")
        s = self.market.symbol(code)
        if s is None:
            raise KeyError(code)
        mrkt = q.get("FID_COND_MRKT_DIV_CODE", "J")
        if mrkt not in ("J", "UN", "NX"):
            raise ValueError(mrkt)
        return s

    def answer(self, name: str, q: dict) -> dict:
        return getattr(self, name.replace("-", "_"))(q)

    # ---- FHKST01010100 ------------------------------------------------------------------------------
    def inquire_price(self, q: dict) -> dict:
        s = self._sym(q)
        info = s.info
        with s.lock:
            s.advance(self.market.market_ms())
            px, acml, pbmn = s.last, s.acml_vol, s.acml_pbmn
            o, h, lo = s.open, s.high, s.low
        prev = info.prev_close
        hist = self.history(info.code)
        y = hist.rows[-1]
        piv = (y[2] + y[3] + y[4]) // 3
        yr = [r for r in hist.rows if r[0][:4] == f"{self.market.date.year}"] or hist.rows[-1:]
        w52 = hist.rows[-250:]
        hi52 = max(w52, key=lambda r: r[2])
        lo52 = min(w52, key=lambda r: r[3])
        hiyr = max(yr, key=lambda r: r[2])
        loyr = min(yr, key=lambda r: r[3])
        eps = max(1, prev // 15)
        bps = max(1, prev * 2 // 3)
        out = {
            "iscd_stat_cls_code": "55",
            "marg_rate": "20.00",
            "rprs_mrkt_kor_name": info.market,
            "bstp_kor_isnm": "모의업종",
            "temp_stop_yn": "N",
            "oprc_rang_cont_yn": "N",
            "clpr_rang_cont_yn": "N",
            "crdt_able_yn": "Y",
            "grmn_rate_cls_code": "40",
            "elw_pblc_yn": "N",
            "stck_prpr": str(px),
            "prdy_vrss": str(px - prev),
            "prdy_vrss_sign": sign_code(px, prev, info.lower, info.upper),
            "prdy_ctrt": dec2((px - prev) * 100, prev),
            "acml_tr_pbmn": str(pbmn),
            "acml_vol": str(acml),
            "prdy_vrss_vol_rate": dec2(acml * 100, info.prdy_vol),
            "stck_oprc": str(o),
            "stck_hgpr": str(h),
            "stck_lwpr": str(lo),
            "stck_mxpr": str(info.upper),
            "stck_llam": str(info.lower),
            "stck_sdpr": str(prev),
            "wghn_avrg_stck_prc": dec2(pbmn, acml) if acml else "0.00",
            "hts_frgn_ehrt": "0.00",
            "frgn_ntby_qty": "0",
            "pgtr_ntby_qty": "0",
            "pvt_scnd_dmrs_prc": str(piv + (y[2] - y[3])),
            "pvt_frst_dmrs_prc": str(2 * piv - y[3]),
            "pvt_pont_val": str(piv),
            "pvt_frst_dmsp_prc": str(2 * piv - y[2]),
            "pvt_scnd_dmsp_prc": str(piv - (y[2] - y[3])),
            "dmrs_val": str((y[2] + piv) // 2),
            "dmsp_val": str((y[3] + piv) // 2),
            "cpfn": str(info.listed * info.face // 100_000_000),
            "rstc_wdth_prc": str(info.upper - prev),
            "stck_fcam": str(info.face),
            "stck_sspr": str(floor_tick(prev * 3 // 4)),
            "aspr_unit": str(tick_size(px)),
            "hts_deal_qty_unit_val": "1",
            "lstn_stcn": str(info.listed),
            "hts_avls": str(px * info.listed // 100_000_000),
            "per": dec2(px, eps),
            "pbr": dec2(px, bps),
            "stac_month": "12",
            "vol_tnrt": dec2(acml * 100, info.listed),
            "eps": f"{eps}.00",
            "bps": f"{bps}.00",
            "d250_hgpr": str(hi52[2]),
            "d250_hgpr_date": hi52[0],
            "d250_hgpr_vrss_prpr_rate": dec2((px - hi52[2]) * 100, hi52[2]),
            "d250_lwpr": str(lo52[3]),
            "d250_lwpr_date": lo52[0],
            "d250_lwpr_vrss_prpr_rate": dec2((px - lo52[3]) * 100, lo52[3]),
            "stck_dryy_hgpr": str(hiyr[2]),
            "dryy_hgpr_vrss_prpr_rate": dec2((px - hiyr[2]) * 100, hiyr[2]),
            "dryy_hgpr_date": hiyr[0],
            "stck_dryy_lwpr": str(loyr[3]),
            "dryy_lwpr_vrss_prpr_rate": dec2((px - loyr[3]) * 100, loyr[3]),
            "dryy_lwpr_date": loyr[0],
            "w52_hgpr": str(hi52[2]),
            "w52_hgpr_vrss_prpr_ctrt": dec2((px - hi52[2]) * 100, hi52[2]),
            "w52_hgpr_date": hi52[0],
            "w52_lwpr": str(lo52[3]),
            "w52_lwpr_vrss_prpr_ctrt": dec2((px - lo52[3]) * 100, lo52[3]),
            "w52_lwpr_date": lo52[0],
            "whol_loan_rmnd_rate": "0.00",
            "ssts_yn": "Y",
            "stck_shrn_iscd": info.code,
            "fcam_cnnm": f"{info.face:,}",
            "cpfn_cnnm": f"{info.listed * info.face // 100_000_000:,} 억",
            "frgn_hldn_qty": "0",
            "vi_cls_code": "N",
            "ovtm_vi_cls_code": "N",
            "last_ssts_cntg_qty": "0",
            "invt_caful_yn": "N",
            "mrkt_warn_cls_code": "00",
            "short_over_yn": "N",
            "sltr_yn": "N",
        }
        return {"output": out, **OK}

    # ---- FHKST01010200 (asking price / expected conclusion) -------------------------------------------
    def inquire_asking_price_exp_ccn(self, q: dict) -> dict:
        """output1: the 10-level book last published (what the WebSocket book shows); output2: the
        current price block. Field names from the official sample's column list."""
        s = self._sym(q)
        info = s.info
        now = self.market.market_ms()
        with s.lock:
            s.advance(now)
            # the last published book (what the WebSocket book shows; the auction books before the open and
            # in the closing call included), empty before the first one
            askp, bidp = s.askp, s.bidp
            aq, bq = s.book_sizes
            px, o, h, lo, acml = s.last, s.open, s.high, s.low, s.acml_vol
        out1 = {"aspr_acpt_hour": hhmmss(now)}
        for side, prices, sizes in (("askp", askp, aq), ("bidp", bidp, bq)):
            for i in range(10):
                out1[f"{side}{i + 1}"] = str(prices[i])
            for i in range(10):
                out1[f"{side}_rsqn{i + 1}"] = str(sizes[i] if prices[i] else 0)
            for i in range(10):
                out1[f"{side}_rsqn_icdc{i + 1}"] = "0"
        out1.update({
            "total_askp_rsqn": str(sum(aq)), "total_bidp_rsqn": str(sum(bq)), "total_askp_rsqn_icdc": "0",
            "total_bidp_rsqn_icdc": "0", "ovtm_total_askp_icdc": "0", "ovtm_total_bidp_icdc": "0",
            "ovtm_total_askp_rsqn": "0", "ovtm_total_bidp_rsqn": "0", "ntby_aspr_rsqn": str(sum(bq) - sum(aq)),
            "new_mkop_cls_code": "20", "antc_mkop_cls_code": "", "stck_prpr": str(px), "stck_oprc": str(o),
            "stck_hgpr": str(h), "stck_lwpr": str(lo), "stck_sdpr": str(info.prev_close), "antc_cnpr": "0",
            "antc_cntg_vrss_sign": "3", "antc_cntg_vrss": "0", "antc_cntg_prdy_ctrt": "0.00", "antc_vol": "0",
            "stck_shrn_iscd": info.code, "vi_cls_code": "N",
        })
        out2 = {"antc_mkop_cls_code": "311", "stck_prpr": str(px), "stck_oprc": str(o), "stck_hgpr": str(h),
                "stck_lwpr": str(lo), "stck_sdpr": str(info.prev_close), "antc_cnpr": "0", "antc_cntg_vrss_sign": "3",
                "antc_cntg_vrss": "0", "antc_cntg_prdy_ctrt": "0.00", "antc_vol": "0", "antc_tr_pbmn": "0",
                "acml_vol": str(acml), "stck_shrn_iscd": info.code, "vi_cls_code": "N"}
        return {"output1": out1, "output2": out2, **OK}

    # ---- FHPST01060000 ------------------------------------------------------------------------------
    def inquire_time_itemconclusion(self, q: dict) -> dict:
        s = self._sym(q)
        info = s.info
        prev = info.prev_close
        hour = q.get("FID_INPUT_HOUR_1", "")
        now = self.market.market_ms()
        # at-or-before the given second (inclusive; the reference leaves this UNCONFIRMED), never after now
        upto = now if not hour else min(parse_hhmmss(hour) + 999, now)
        with s.lock:
            s.advance(now)
            px, acml = s.last, s.acml_vol
            end = bisect.bisect_right(s.h_t, upto)
            lo = max(0, end - ROWS)
            rows = []
            for i in range(end - 1, lo - 1, -1):
                p = s.h_px[i]
                rows.append({
                    "stck_cntg_hour": hhmmss(s.h_t[i]),
                    "stck_prpr": str(p),
                    "prdy_vrss": str(p - prev),
                    "prdy_vrss_sign": sign_code(p, prev, info.lower, info.upper),
                    "prdy_ctrt": dec2((p - prev) * 100, prev),
                    "askp": str(s.h_ask[i]),
                    "bidp": str(s.h_bid[i]),
                    "tday_rltv": dec2(s.h_cttr[i], 100),
                    "acml_vol": str(s.h_acml[i]),
                    "cnqn": str(s.h_qty[i]),
                })
        out1 = {
            "stck_prpr": str(px),
            "prdy_vrss": str(px - prev),
            "prdy_vrss_sign": sign_code(px, prev, info.lower, info.upper),
            "prdy_ctrt": dec2((px - prev) * 100, prev),
            "acml_vol": str(acml),
            "prdy_vol": str(info.prdy_vol),
            "rprs_mrkt_kor_name": info.market,
        }
        return {"output1": out1, "output2": rows, **OK}

    # ---- FHKST03010200 ------------------------------------------------------------------------------
    def inquire_time_itemchartprice(self, q: dict) -> dict:
        s = self._sym(q)
        info = s.info
        prev = info.prev_close
        hour = q.get("FID_INPUT_HOUR_1", "")
        now = self.market.market_ms()
        # a future time is "now" (document example); bar HHMM00 covers HH:MM:00-59, the newest may be forming
        want = now if not hour else min(parse_hhmmss(hour), now)
        date = self.market.date_str
        rows = []
        with s.lock:
            s.advance(now)
            px, acml, pbmn = s.last, s.acml_vol, s.acml_pbmn
            minute = want - want % MIN
            if minute >= T_CLOSE_AUCTION and minute < T_CLOSE:
                minute = T_CLOSE_AUCTION - MIN  # no trading minutes in the closing call
            if minute > T_CLOSE:
                minute = T_CLOSE
            while minute >= T_OPEN and len(rows) < ROWS:
                i0 = bisect.bisect_left(s.h_t, minute)
                i1 = bisect.bisect_left(s.h_t, min(minute + MIN, now + 1))
                if i1 > i0:
                    seg = s.h_px[i0:i1]
                    bar = (seg[0], max(seg), min(seg), seg[-1], sum(s.h_qty[i0:i1]), s.h_pbmn[i1 - 1])
                else:
                    # a minute with no trade: flat at the last price before it, volume 0
                    c = s.h_px[i0 - 1] if i0 > 0 else prev
                    bar = (c, c, c, c, 0, s.h_pbmn[i0 - 1] if i0 > 0 else 0)
                if i0 > 0 or i1 > i0:
                    rows.append({
                        "stck_bsop_date": date,
                        "stck_cntg_hour": hhmmss(minute),
                        "stck_prpr": str(bar[3]),
                        "stck_oprc": str(bar[0]),
                        "stck_hgpr": str(bar[1]),
                        "stck_lwpr": str(bar[2]),
                        "cntg_vol": str(bar[4]),
                        "acml_tr_pbmn": str(bar[5]),
                    })
                minute -= MIN
                if T_CLOSE_AUCTION <= minute < T_CLOSE:
                    minute = T_CLOSE_AUCTION - MIN
        out1 = _chart_head(info, px, prev, acml, pbmn)
        return {"output1": out1, "output2": rows, **OK}

    def _period_bars(self, s: SymbolSim, period: str) -> tuple[list[list], int]:
        """The daily history plus today's bar so far (once it traded), grouped into D/W/M/Y periods:
        [[yyyymmdd of the period's last day, open, high, low, close, volume], ...] oldest first, with the
        close before the first bar."""
        if period not in ("D", "W", "M", "Y"):
            raise ValueError(period)
        hist = self.history(s.info.code)
        days = [list(r) for r in hist.rows]
        with s.lock:
            s.advance(self.market.market_ms())
            if s.acml_vol:
                days.append([self.market.date_str, s.open, s.high, s.low, s.last, s.acml_vol])
        if period == "D":
            groups = [[d] for d in days]
        else:
            keyf = {"W": lambda d: date(int(d[0][:4]), int(d[0][4:6]), int(d[0][6:])).isocalendar()[:2],
                    "M": lambda d: d[0][:6], "Y": lambda d: d[0][:4]}[period]
            groups = []
            cur = None
            for d in days:
                k = keyf(d)
                if k != cur:
                    groups.append([])
                    cur = k
                groups[-1].append(d)
        bars = [[g[-1][0], g[0][1], max(x[2] for x in g), min(x[3] for x in g), g[-1][4], sum(x[5] for x in g)]
                for g in groups]
        return bars, hist.first_prev

    # ---- FHKST01010400 ------------------------------------------------------------------------------
    def inquire_daily_price(self, q: dict) -> dict:
        s = self._sym(q)
        period = q.get("FID_PERIOD_DIV_CODE", "D") or "D"
        if period == "Y":  # D/W/M only (providers.md §1.5)
            raise ValueError(period)
        bars, first_prev = self._period_bars(s, period)
        rows = []
        for i in range(len(bars) - 1, max(-1, len(bars) - 1 - ROWS), -1):
            d, o, h, lo, c, v = bars[i]
            pc = bars[i - 1][4] if i > 0 else first_prev
            pv = bars[i - 1][5] if i > 0 else v
            rows.append({
                "stck_bsop_date": d,
                "stck_oprc": str(o),
                "stck_hgpr": str(h),
                "stck_lwpr": str(lo),
                "stck_clpr": str(c),
                "acml_vol": str(v),
                "prdy_vrss_vol_rate": dec2((v - pv) * 100, pv) if pv else "0.00",
                "prdy_vrss": str(c - pc),
                "prdy_vrss_sign": sign_code(c, pc),
                "prdy_ctrt": dec2((c - pc) * 100, pc),
                "hts_frgn_ehrt": "0.00",
                "frgn_ntby_qty": "0",
                "flng_cls_code": "00",
                "acml_prtt_rate": "0.00",
            })
        return {"output": rows, **OK}

    # ---- FHKST03010100 (period chart) -------------------------------------------------------------------
    def inquire_daily_itemchartprice(self, q: dict) -> dict:
        """Bars of the periods ending within [FID_INPUT_DATE_1, FID_INPUT_DATE_2], newest first, at most
        DAILY_CHART_ROWS (providers.md §1.5). The reference names the parameters only: output1 and the row
        fields are the ones python-kis reads (docs/simulator.md)."""
        s = self._sym(q)
        info = s.info
        lo_d, hi_d = q.get("FID_INPUT_DATE_1", ""), q.get("FID_INPUT_DATE_2", "")
        for d in (lo_d, hi_d):
            if len(d) != 8 or not d.isdigit():  # "00000101" (no lower bound) is what clients send
                raise ValueError(d)
        if q.get("FID_ORG_ADJ_PRC", "0") not in ("0", "1"):  # no splits here: adjusted == original
            raise ValueError("FID_ORG_ADJ_PRC")
        bars, first_prev = self._period_bars(s, q.get("FID_PERIOD_DIV_CODE", "D") or "D")
        rows = []
        for i in range(len(bars) - 1, -1, -1):
            d, o, h, lo, c, v = bars[i]
            if d > hi_d:
                continue
            if d < lo_d or len(rows) == DAILY_CHART_ROWS:
                break
            pc = bars[i - 1][4] if i > 0 else first_prev
            rows.append({
                "stck_bsop_date": d,
                "stck_clpr": str(c),
                "stck_oprc": str(o),
                "stck_hgpr": str(h),
                "stck_lwpr": str(lo),
                "acml_vol": str(v),
                # the history keeps no turnover: volume at the bar's mean price
                "acml_tr_pbmn": str(v * (o + h + lo + c) // 4),
                "flng_cls_code": "00",
                "prtt_rate": "0.00",
                "mod_yn": "N",
                "prdy_vrss_sign": sign_code(c, pc),
                "prdy_vrss": str(c - pc),
                "revl_issu_reas": "",
            })
        with s.lock:
            s.advance(self.market.market_ms())
            px, acml, pbmn = s.last, s.acml_vol, s.acml_pbmn
            o, h, lo = s.open, s.high, s.low
        prev = info.prev_close
        out1 = {
            **_chart_head(info, px, prev, acml, pbmn),
            "stck_shrn_iscd": info.code,
            "prdy_vol": str(info.prdy_vol),
            "stck_mxpr": str(info.upper),
            "stck_llam": str(info.lower),
            "stck_oprc": str(o),
            "stck_hgpr": str(h),
            "stck_lwpr": str(lo),
            "stck_fcam": str(info.face),
            "lstn_stcn": str(info.listed),
        }
        return {"output1": out1, "output2": rows, **OK}

    # ---- CTPF1604R (product basic info) -------------------------------------------------------------
    def search_info(self, q: dict) -> dict:
        """Fields the reference does not give: the ones python-kis reads, named as it names them
        (docs/simulator.md). Only PRDT_TYPE_CD 300 (stocks) is listed here."""
        if q.get("PRDT_TYPE_CD") != "300":
            raise ValueError(q.get("PRDT_TYPE_CD"))
        code = q.get("PDNO", "")
        s = self.market.symbol(code)
        if s is None:
            raise KeyError(code)
        info = s.info
        eng = f"SIM STOCK {code}"
        return {"output": {
            "pdno": code,
            "prdt_type_cd": "300",
            "shtn_pdno": code,
            "std_pdno": standard_code(code),
            "prdt_name": info.name,
            "prdt_name120": info.name,
            "prdt_abrv_name": info.name,
            "prdt_eng_name": eng,
            "prdt_eng_name120": eng,
            "prdt_eng_abrv_name": eng,
        }, **OK}

    # ---- FHPST01710000 ------------------------------------------------------------------------------
    def volume_rank(self, q: dict) -> dict:
        market = self.market
        if q.get("FID_COND_MRKT_DIV_CODE", "J") not in ("J", "UN", "NX"):
            raise ValueError("market")
        blng = q.get("FID_BLNG_CLS_CODE", "0") or "0"
        p1 = int(q.get("FID_INPUT_PRICE_1") or 0)
        p2 = int(q.get("FID_INPUT_PRICE_2") or 0)
        vmin = int(q.get("FID_VOL_CNT") or 0)
        now = market.market_ms()
        cands = []
        for s in market.symbols():
            info = s.info
            if info.active:
                with s.lock:
                    s.advance(now)
                    px, acml, pbmn = s.last, s.acml_vol, s.acml_pbmn
            else:
                px, acml, pbmn = info.prev_close, 0, 0
            if (p1 and px < p1) or (p2 and px > p2) or acml < vmin:
                continue
            cands.append((info, px, acml, pbmn))
        hist_avg = {}

        def avg_vol(info):
            v = hist_avg.get(info.code)
            if v is None:
                rows = self.history(info.code).rows[-5:] if info.active else []
                v = hist_avg[info.code] = (sum(r[5] for r in rows) // len(rows)) if rows else info.prdy_vol
            return v

        if blng == "1":
            key = lambda c: (-(c[2] * 10000 // max(avg_vol(c[0]), 1)), c[0].code)  # noqa: E731
        elif blng in ("2", "3", "4"):
            key = lambda c: (-c[3], c[0].code)  # noqa: E731
        else:
            key = lambda c: (-c[2], c[0].code)  # noqa: E731
        cands.sort(key=key)
        rows = []
        for rank, (info, px, acml, pbmn) in enumerate(cands[:ROWS], 1):
            prev = info.prev_close
            av = avg_vol(info)
            rows.append({
                "hts_kor_isnm": info.name,
                "mksc_shrn_iscd": info.code,
                "data_rank": str(rank),
                "stck_prpr": str(px),
                "prdy_vrss_sign": sign_code(px, prev, info.lower, info.upper),
                "prdy_vrss": str(px - prev),
                "prdy_ctrt": dec2((px - prev) * 100, prev),
                "acml_vol": str(acml),
                "prdy_vol": str(info.prdy_vol),
                "lstn_stcn": str(info.listed),
                "avrg_vol": str(av),
                "n_befr_clpr_vrss_prpr_rate": dec2((px - prev) * 100, prev),
                "vol_inrt": dec2(acml * 100, av) if av else "0.00",
                "vol_tnrt": dec2(acml * 100, info.listed),
                "nday_vol_tnrt": dec2(av * 100, info.listed),
                "avrg_tr_pbmn": str(av * prev),
                "tr_pbmn_tnrt": dec2(pbmn * 100, info.listed * max(px, 1)),
                "nday_tr_pbmn_tnrt": dec2(av * 100, info.listed),
                "acml_tr_pbmn": str(pbmn),
            })
        return {"output": rows, **OK}


def _chart_head(info, px: int, prev: int, acml: int, pbmn: int) -> dict:
    """output1 of the chart calls (minute and period): the price block both answer with."""
    return {
            "prdy_vrss": str(px - prev),
            "prdy_vrss_sign": sign_code(px, prev, info.lower, info.upper),
            "prdy_ctrt": dec2((px - prev) * 100, prev),
            "stck_prdy_clpr": str(prev),
            "acml_vol": str(acml),
            "acml_tr_pbmn": str(pbmn),
            "hts_kor_isnm": info.name,
            "stck_prpr": str(px),
    }
