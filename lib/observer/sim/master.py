"""The simulator's stock master files (kospi_code.mst.zip / kosdaq_code.mst.zip), encoded from the
published record layout independently of the client's parser (providers/kis/master.py).

Every simulated symbol is listed as a common stock of its market, with its previous close as the
reference price; a few instruments that exist only in the master files (ETF, ETN, SPAC, preferred,
REIT) are added to each market, so a client that does not filter them asks for quotes the market
does not have. The `master_bad` fault serves broken variants (see docs/simulator.md).
"""

from __future__ import annotations

import io
import random
import zipfile

# (field, width) of the fixed-width tail after code(9) + standard code(12) + name, per market,
# transcribed from the layout (docs/providers/kis.md); the client reads only some of them
_COMMON_HEAD = [("grp", 2), ("cap_size", 1), ("sect_l", 4), ("sect_m", 4), ("sect_s", 4)]
_SECTOR_FLAGS_KOSPI = ["manufacturing", "low_liquidity", "governance", "k200_sector", "k100", "k50", "krx",
                       "etp", "elw", "krx100", "auto", "semi", "bio", "bank", "spac", "energy", "steel",
                       "short_hot", "media", "construction", "deleted", "securities", "ship", "insurance",
                       "transport", "sri"]
_SECTOR_FLAGS_KOSDAQ = ["venture", "low_liquidity", "krx", "etp", "krx100", "auto", "semi", "bio", "bank", "spac",
                        "energy", "steel", "short_hot", "media", "construction", "caution", "securities", "ship",
                        "insurance", "transport", "kq150"]
_TRADING = [("base_price", 9), ("lot", 5), ("lot_after", 5), ("halted", 1), ("liquidation", 1), ("admin", 1),
            ("warning", 2), ("warning_notice", 1), ("unfaithful", 1), ("backdoor", 1), ("lock", 2),
            ("par_change", 2), ("capital_change", 2), ("margin", 3), ("credit", 1), ("credit_days", 3),
            ("prev_vol", 12), ("par", 12), ("listed_date", 8), ("listed_k", 15), ("capital", 21),
            ("fiscal_month", 2), ("ipo_price", 7), ("pref", 1), ("short_hot2", 1), ("surge", 1), ("krx300", 1)]
_FIN = [("sales", 9), ("op_profit", 9), ("ord_profit", 9), ("net", 5), ("roe", 9), ("base_ym", 8),
        ("mcap", 9), ("group_co", 3), ("credit_over", 1), ("collateral", 1), ("lendable", 1)]

LAYOUT = {
    "KOSPI": _COMMON_HEAD + [(f, 1) for f in _SECTOR_FLAGS_KOSPI] + _TRADING + [("kospi", 1)] + _FIN,
    "KOSDAQ": _COMMON_HEAD + [(f, 1) for f in _SECTOR_FLAGS_KOSDAQ] + _TRADING + _FIN,
}
MEMBER = {"KOSPI": "kospi_code.mst", "KOSDAQ": "kosdaq_code.mst"}
ZIP_NAME = {m: f"{name}.zip" for m, name in MEMBER.items()}
BAD_MODES = ("missing", "error", "corrupt", "bomb", "wrong_member", "many_members")

# master-only instruments per market: (name, fields) — the client must drop every one by default
_EXTRAS = [("모의ETF{n}", {"grp": "EF", "etp": "2"}), ("모의ETN{n}", {"grp": "EN", "etp": "3"}),
           ("모의스팩{n}호", {"grp": "ST", "spac": "Y"}), ("모의종목{n}우", {"grp": "ST", "pref": "1"}),
           ("모의리츠{n}", {"grp": "RT"})]
EXTRA_TYPES = ("etf", "etn", "spac", "preferred", "reit")


def standard_code(code: str) -> str:
    """The simulator's 12-character standard code of a short code (KR7-shaped; its check digit is not ISIN's)."""
    return f"KR7{code}00{code[-1]}"[:12]


def encode_record(code: str, name: str, market: str, fields: dict) -> bytes:
    """One line (with its LF) of `market`'s master file."""
    defaults = {"grp": "ST", "cap_size": "0", "etp": "0", "pref": "0", "warning": "00", "lock": "00",
                "par_change": "00", "capital_change": "00"}
    tail = []
    for f, w in LAYOUT[market]:
        v = str(fields.get(f, defaults.get(f, "N" if w == 1 else "")))
        if len(v) > w:
            raise ValueError(f"{f}={v!r} is wider than {w}")
        tail.append(v.rjust(w, "0") if v.isdigit() and w > 1 else v.ljust(w))
    return code.ljust(9).encode() + standard_code(code).ljust(12).encode() + name.encode("cp949") + "".join(tail).encode() + b"\n"


class Masters:
    """The two master files of the simulator's market, built once."""

    def __init__(self, universe, seed: int):
        taken = {i.code for i in universe.symbols}
        rng = random.Random(f"{seed}|masters")
        lines: dict[str, list[bytes]] = {"KOSPI": [], "KOSDAQ": []}
        for i in universe.symbols:
            lines[i.market].append(encode_record(i.code, i.name, i.market, {
                "base_price": str(i.prev_close), "prev_vol": str(i.prdy_vol), "listed_k": str(i.listed // 1000),
                "krx": "Y", "kospi": "Y" if i.market == "KOSPI" else "N"}))
        self.extras: list[dict] = []
        for market in ("KOSPI", "KOSDAQ"):
            for n, (name, fields) in enumerate(_EXTRAS):
                while True:
                    code = f"{rng.randrange(1, 100_000):05d}{'5' if fields.get('pref') else '0'}"
                    if code not in taken:
                        taken.add(code)
                        break
                nm = name.format(n=n + 1)
                lines[market].append(encode_record(code, nm, market, {**fields, "base_price": "10000"}))
                self.extras.append({"symbol": code, "name": nm, "market": market, "type": EXTRA_TYPES[n]})
        self.files = {ZIP_NAME[m]: _zip({MEMBER[m]: b"".join(ls)}) for m, ls in lines.items()}
        self._bomb: bytes | None = None

    def serve(self, zip_name: str, mode: str | None) -> tuple[int, bytes]:
        """(HTTP status, body) for GET <master base>/<zip_name>, under fault `mode` (None: healthy)."""
        good = self.files.get(zip_name)
        if good is None or mode == "missing":
            return 404, b"not found"
        if mode == "error":
            return 503, b"Service Unavailable"
        member = zip_name[:-4]
        if mode == "corrupt":
            return 200, good[: len(good) // 2] + bytes(64)
        if mode == "wrong_member":
            return 200, _zip({f"../{member}": _unzip(good, member)})
        if mode == "many_members":
            return 200, _zip({f"part{n:02d}.mst": b"x" for n in range(20)} | {member: _unzip(good, member)})
        if mode == "bomb":
            if self._bomb is None:  # 64 MiB of spaces under the expected name: a few tens of KB zipped
                self._bomb = _zip({member: b" " * (64 << 20)})
            return 200, self._bomb
        return 200, good


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _unzip(blob: bytes, member: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return zf.read(member)
