"""Structural checks that hold for every real KIS sample frame; the simulator's frames must pass them too."""

from __future__ import annotations


def _i(x: str) -> int:
    return int(x)


def check_cnt_record(r: list[str]) -> None:
    assert len(r) in (46, 47), len(r)
    assert len(r[0]) == 6 and r[0].isdigit()
    assert len(r[1]) == 6 and r[1].isdigit()
    price, sign, vrss = _i(r[2]), r[3], _i(r[4])
    assert price > 0
    assert sign in "12345"
    assert (vrss > 0) == (sign in "12") and (vrss < 0) == (sign in "45") and (vrss == 0) == (sign == "3")
    prev = price - vrss
    assert abs(float(r[5]) - vrss / prev * 100) <= 0.0051
    acml, pbmn = _i(r[13]), _i(r[14])
    # real frames' VWAP differs from ACML_TR_PBMN/ACML_VOL by up to ~2e-6 relative (rounding upstream)
    assert abs(float(r[6]) - pbmn / acml) <= max(0.0051, pbmn / acml * 5e-6)
    o, h, lo = _i(r[7]), _i(r[8]), _i(r[9])
    assert lo <= price <= h and lo <= o <= h
    assert _i(r[10]) > 0 and _i(r[11]) > 0  # best ask, best bid
    assert _i(r[12]) > 0  # CNTG_VOL
    seln_n, shnu_n, ntby = _i(r[15]), _i(r[16]), _i(r[17])
    assert ntby == shnu_n - seln_n
    seln_q, shnu_q = _i(r[19]), _i(r[20])
    if seln_q:
        assert abs(float(r[18]) - shnu_q / seln_q * 100) <= 0.0051
    assert seln_q + shnu_q <= acml
    assert r[21] in ("1", "3", "5")
    for t, s, d, ref in ((r[24], r[25], r[26], o), (r[27], r[28], r[29], h), (r[30], r[31], r[32], lo)):
        assert len(t) == 6 and t.isdigit() and t <= r[1]
        assert _i(d) == price - ref
        assert s == ("2" if price > ref else "5" if price < ref else "3")
    assert len(r[33]) == 8 and r[33].isdigit()  # BSOP_DATE
    assert len(r[34]) == 2
    assert r[35] in ("Y", "N")
    for x in r[36:40]:
        assert _i(x) >= 0
    float(r[40])
    smns = _i(r[41])
    if smns:
        assert abs(float(r[42]) - acml / smns * 100) <= 0.0051
    assert r[43] in ("0", "A", "B", "C", "D")
    assert _i(r[45]) > 0  # VI_STND_PRC


def check_cnt_frame(frame_records: list[list[str]]) -> None:
    prev = None
    for r in frame_records:
        check_cnt_record(r)
        if prev is not None:
            assert r[0] == prev[0]
            assert _i(r[13]) == _i(prev[13]) + _i(r[12]), "ACML_VOL chain broken inside a frame"
        prev = r


def check_asp_record(r: list[str]) -> None:
    assert len(r) in (59, 62, 63), len(r)
    assert len(r[0]) == 6 and len(r[1]) == 6
    nums = [_i(x) for x in r[3:52]]
    assert all(x >= 0 for x in nums[:42])
    askp, bidp = [_i(x) for x in r[3:13]], [_i(x) for x in r[13:23]]
    askq, bidq = [_i(x) for x in r[23:33]], [_i(x) for x in r[33:43]]
    assert sum(askq) == _i(r[43]) and sum(bidq) == _i(r[44])
    for p, q in zip(askp + bidp, askq + bidq, strict=True):
        assert (p == 0) <= (q == 0), "an empty level must have no quantity"
    filled_a = [p for p in askp if p]
    filled_b = [p for p in bidp if p]
    assert filled_a == sorted(filled_a) and filled_b == sorted(filled_b, reverse=True)
    assert askp[: len(filled_a)] == filled_a and bidp[: len(filled_b)] == filled_b, "levels fill best-first"
    hour = r[2]
    antc_p = _i(r[47])
    if hour == "0":
        assert antc_p == 0 and _i(r[48]) == 0
        assert _i(r[50]) < 0 and r[51] == "5" and r[52] == "-100.00"
        if filled_a and filled_b:
            assert bidp[0] < askp[0]
        if len(r) >= 62 and filled_a and filled_b:
            assert float(r[59]) == (askp[0] + bidp[0]) / 2
    else:
        assert antc_p > 0
        ref = antc_p - _i(r[50])
        assert abs(float(r[52]) - _i(r[50]) / ref * 100) <= 0.0051
    assert _i(r[53]) >= 0  # ACML_VOL
