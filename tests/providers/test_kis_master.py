"""The stock master parser and zip reader: real-format records (cp949 names, fixed-width tails), the
type flags, and hostile zips. Records here are written by hand from the published layout (field
offsets in docs/providers/kis.md), not by the parser's constants or the simulator's encoder."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from observer.providers.kis import master
from observer.providers.kis.master import (
    KOSDAQ,
    KOSPI,
    MasterError,
    load_zip,
    parse_line,
    parse_master,
    read_zip,
)


def tail(width: int, **at: str) -> str:
    """A fixed-width tail: 'N' flags and blanks, with the given fields at their documented offsets."""
    t = list(" " * width)
    for k, v in at.items():
        off = int(k[1:])
        t[off:off + len(v)] = v
    return "".join(t)


def kospi(code: str, std: str, name: str, **fields: str) -> bytes:
    base = {"o0": "ST", "o2": "1", "o22": "0", "o29": "N", "o41": "000072000", "o60": "N", "o158": "0"}
    base.update(fields)
    t = tail(227, **base)
    assert len(t) == 227
    return code.ljust(9).encode() + std.encode() + name.encode("cp949") + t.encode()


def kosdaq(code: str, std: str, name: str, **fields: str) -> bytes:
    base = {"o0": "ST", "o18": "0", "o24": "N", "o36": "000051300", "o55": "N", "o153": "0"}
    base.update(fields)
    return code.ljust(9).encode() + std.encode() + name.encode("cp949") + tail(221, **base).encode()


SAMSUNG = kospi("005930", "KR7005930003", "삼성전자")
SAMSUNG_PREF = kospi("005935", "KR7005931001", "삼성전자우", o158="1")
KODEX = kospi("069500", "KR7069500007", "KODEX 200", o0="EF", o22="2")
ETN = kospi("500001", "KRG500001234", "신한 레버리지 WTI원유 선물 ETN", o0="EN", o22="3")
REIT = kospi("330590", "KR7330590001", "롯데리츠", o0="RT")
ECOPRO = kosdaq("247540", "KR7247540008", "에코프로비엠", o36="000215000", o55="Y")
SPAC = kosdaq("442310", "KR7442310000", "하나30호스팩", o24="Y")


def test_common_stock_with_a_cp949_name():
    r = parse_line(SAMSUNG, KOSPI)
    assert r == {"symbol": "005930", "std_code": "KR7005930003", "name": "삼성전자", "market": "KOSPI",
                 "type": "stock", "group": "ST", "halted": False, "base_price": 72000}


@pytest.mark.parametrize("line,spec,kind", [
    (SAMSUNG_PREF, KOSPI, "preferred"), (KODEX, KOSPI, "etf"), (ETN, KOSPI, "etn"), (REIT, KOSPI, "reit"),
    (SPAC, KOSDAQ, "spac"), (ECOPRO, KOSDAQ, "stock"),
])
def test_types_from_the_flags(line, spec, kind):
    assert parse_line(line, spec)["type"] == kind


def test_kosdaq_offsets_differ_from_kospi():
    r = parse_line(ECOPRO, KOSDAQ)
    assert (r["market"], r["name"], r["halted"], r["base_price"]) == ("KOSDAQ", "에코프로비엠", True, 215000)
    # read with the other market's layout the tail is misaligned (6 bytes of the name fall into it):
    # refused, never read as other fields - the market decides the layout
    with pytest.raises(ValueError, match="misaligned"):
        parse_line(ECOPRO, KOSPI)
    with pytest.raises(ValueError, match="misaligned"):
        parse_line(SAMSUNG, KOSDAQ)


def test_whole_file_with_crlf_and_blank_lines():
    data = b"\r\n".join([SAMSUNG, SAMSUNG_PREF, KODEX, b"", REIT]) + b"\r\n"
    recs = parse_master(data, KOSPI)
    assert [r["symbol"] for r in recs] == ["005930", "005935", "069500", "330590"]


def test_bad_lines_are_named_and_bounded():
    with pytest.raises(MasterError, match="no valid record"):
        parse_master(b"garbage\n" * 3, KOSPI)
    good = [SAMSUNG] * 99
    assert len(parse_master(b"\n".join(good + [b"short"]), KOSPI)) == 99  # 1 % may be bad
    with pytest.raises(MasterError, match="2 of 100 lines malformed; first: line 99"):
        parse_master(b"\n".join(good[:98] + [b"short", b"x" * 300]), KOSPI)
    with pytest.raises(ValueError, match="not cp949"):
        parse_line(b"005930   KR7005930003" + b"\xff\xff" + tail(227, o0="ST").encode(), KOSPI)
    with pytest.raises(ValueError, match="not ASCII"):
        parse_line(b"005930   KR7005930003abc" + "가".encode("cp949") * 120, KOSPI)


def _zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return buf.getvalue()


def test_zip_reading_accepts_only_the_expected_member():
    data = b"\n".join([SAMSUNG, KODEX]) + b"\n"
    assert [r["symbol"] for r in load_zip(_zip({"kospi_code.mst": data}), KOSPI)] == ["005930", "069500"]
    with pytest.raises(MasterError, match="no member named 'kospi_code.mst'"):
        read_zip(_zip({"../kospi_code.mst": data}), KOSPI)
    with pytest.raises(MasterError, match="no member named 'kospi_code.mst'"):
        read_zip(_zip({"/etc/kospi_code.mst": data}), KOSPI)
    with pytest.raises(MasterError, match="members"):
        read_zip(_zip({f"m{i}": b"" for i in range(9)} | {"kospi_code.mst": data}), KOSPI)
    with pytest.raises(MasterError, match="not a readable zip"):
        read_zip(_zip({"kospi_code.mst": data})[:40], KOSPI)
    with pytest.raises(MasterError, match="not a readable zip"):
        read_zip(b"<html>maintenance</html>", KOSPI)
    with pytest.raises(MasterError, match="bytes \\(limit"):
        read_zip(b"PK" + bytes(master.MAX_ZIP_BYTES), KOSPI)


def test_zip_bomb_refused_even_when_its_header_lies():
    bomb = _zip({"kospi_code.mst": b" " * (master.MAX_MEMBER_BYTES + 1)})
    assert len(bomb) < 100_000
    with pytest.raises(MasterError, match="unpacks to"):
        read_zip(bomb, KOSPI)
    # the same bomb with its declared size patched down to 1 KB (local header and central directory)
    b = bytearray(bomb)
    lh = b.find(b"PK\x03\x04")
    struct.pack_into("<I", b, lh + 22, 1024)
    cd = b.find(b"PK\x01\x02")
    struct.pack_into("<I", b, cd + 24, 1024)
    with pytest.raises(MasterError):
        read_zip(bytes(b), KOSPI)


def test_simulator_encoding_parses_to_the_simulated_market():
    """The simulator's encoder (written independently from the layout) and our parser agree."""
    from observer.sim.market import Universe
    from observer.sim.master import Masters

    uni = Universe(3, 80, 5)
    m = Masters(uni, 3)
    recs = {r["symbol"]: r for spec in master.SPECS for r in load_zip(m.files[spec.zip_name], spec)}
    for i in uni.symbols:
        r = recs.pop(i.code)
        assert (r["name"], r["market"], r["type"], r["base_price"]) == (i.name, i.market, "stock", i.prev_close)
    assert sorted((r["symbol"], r["type"]) for r in recs.values()) == sorted(
        (e["symbol"], e["type"]) for e in m.extras)
