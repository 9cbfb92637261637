"""KIS stock master files: every listed KOSPI / KOSDAQ instrument, downloaded without an account.

KIS publishes `kospi_code.mst.zip` and `kosdaq_code.mst.zip` (one fixed-width cp949 text file each,
refreshed daily). The record layout (docs/providers/kis.md §master files):

    short code (9, space padded) | standard code (12) | Korean name (variable, cp949) | tail (fixed width)

The tail is 227 bytes (KOSPI) / 221 bytes (KOSDAQ) of ASCII fields before the line end; only the fields
listed in TAIL_FIELDS are read. The zip comes from the network: its size, member count and
uncompressed size are bounded, only the expected member name is read, and nothing is ever extracted
to a path: the member is read into memory and the zip itself is what the caller keeps.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import requests

from observer.core.clock import Clock
from observer.providers.base import ProviderError

BASE_URL = "https://new.real.download.dws.co.kr/common/master"


@dataclass(frozen=True)
class MasterSpec:
    market: str  # KOSPI | KOSDAQ
    zip_name: str
    member: str
    tail: int
    # offsets inside the tail (0-based) of the fields we rely on
    group: int          # security group code, 2 chars (ST stock, EF ETF, EN ETN, RT REIT, ...)
    etp: int            # ETP product class, 1 char (0 none, 1/2 ETF, 3/4 ETN, 5 listed beneficiary cert.)
    spac: int           # SPAC flag, Y/N
    base_price: int     # reference price, 9 digits
    halted: int         # trading halted, Y/N
    preferred: int      # preferred-stock class, 1 char (0 common, 1 old-style, 2 new-style preferred)


KOSPI = MasterSpec("KOSPI", "kospi_code.mst.zip", "kospi_code.mst", 227, group=0, etp=22, spac=29, base_price=41,
                   halted=60, preferred=158)
KOSDAQ = MasterSpec("KOSDAQ", "kosdaq_code.mst.zip", "kosdaq_code.mst", 221, group=0, etp=18, spac=24,
                    base_price=36, halted=55, preferred=153)
SPECS = (KOSPI, KOSDAQ)
HEAD = 21  # short code (9) + standard code (12); the name follows

# bounds on untrusted input (the real files: ~300 KB zipped, < 1 MB unzipped, < 5,000 lines each)
MAX_ZIP_BYTES = 8 << 20
MAX_MEMBER_BYTES = 32 << 20
MAX_MEMBERS = 4
MAX_LINES = 50_000
MAX_LINE_BYTES = 2_000
MAX_BAD_RATIO = 0.01

GROUP_TYPES = {"ST": "stock", "EF": "etf", "FE": "etf", "EN": "etn", "RT": "reit", "MF": "fund", "BC": "fund",
               "IF": "fund", "SC": "fund", "DR": "depositary", "FS": "foreign", "EW": "other", "SW": "other",
               "SR": "other"}


class MasterError(ProviderError):
    """A master file could not be had or is not what it should be (the message says which and why)."""


def classify(group: str, etp: str, spac: str, preferred: str) -> str:
    kind = GROUP_TYPES.get(group, "other")
    if etp in ("3", "4"):
        return "etn"
    if etp in ("1", "2") and kind in ("stock", "other"):
        return "etf"
    if kind == "stock":
        if spac == "Y":
            return "spac"
        if preferred in ("1", "2"):
            return "preferred"
    return kind


def parse_line(line: bytes, spec: MasterSpec) -> dict:
    """One record (without its line end) -> {symbol, std_code, name, market, type, group, halted, base_price}.
    Raises ValueError naming what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"line of {len(line)} bytes (limit {MAX_LINE_BYTES})")
    if len(line) < HEAD + spec.tail + 1:
        raise ValueError(f"line of {len(line)} bytes is shorter than code + name + the {spec.tail}-byte tail")
    head, tail_b = line[:-spec.tail], line[-spec.tail:]
    try:
        tail = tail_b.decode("ascii")
        symbol = head[:9].decode("ascii").strip()
        std_code = head[9:HEAD].decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("code or fixed-width tail is not ASCII (misaligned record)") from None
    try:
        name = head[HEAD:].decode("cp949").strip()
    except UnicodeDecodeError:
        raise ValueError("name is not cp949 text") from None
    if not symbol or not symbol.isascii() or not symbol.isalnum():
        raise ValueError(f"short code {symbol!r} is not alphanumeric")
    if not name:
        raise ValueError(f"{symbol}: empty name")
    group = tail[spec.group:spec.group + 2]
    price = tail[spec.base_price:spec.base_price + 9].strip()
    # a shifted record shows in the fields whose form is fixed
    if not (group.isascii() and group.isalpha() and group.isupper()):
        raise ValueError(f"{symbol}: security group code {group!r} is not two capital letters (misaligned record)")
    if price and not price.isdigit():
        raise ValueError(f"{symbol}: reference price {price!r} is not a number (misaligned record)")
    if tail[spec.halted] not in "YN ":
        raise ValueError(f"{symbol}: halted flag {tail[spec.halted]!r} is not Y/N (misaligned record)")
    return {
        "symbol": symbol, "std_code": std_code, "name": name, "market": spec.market,
        "type": classify(group, tail[spec.etp], tail[spec.spac], tail[spec.preferred]),
        "group": group.strip(), "halted": tail[spec.halted] == "Y",
        "base_price": int(price) if price else None,
    }


def parse_master(data: bytes, spec: MasterSpec) -> list[dict]:
    """The member's text -> records. Raises MasterError when the file is not a master file of this
    layout (no records, too many bad lines, too many lines)."""
    lines = [x for x in data.split(b"\n") if x.strip(b"\r ")]
    if len(lines) > MAX_LINES:
        raise MasterError(f"{spec.member}: {len(lines)} lines (limit {MAX_LINES})")
    out, bad = [], []
    for n, raw in enumerate(lines, 1):
        try:
            out.append(parse_line(raw.rstrip(b"\r"), spec))
        except ValueError as e:
            bad.append(f"line {n}: {e}")
    if not out:
        raise MasterError(f"{spec.member}: no valid record ({bad[0] if bad else 'empty file'})")
    if len(bad) > MAX_BAD_RATIO * len(lines):
        raise MasterError(f"{spec.member}: {len(bad)} of {len(lines)} lines malformed; first: {bad[0]}")
    return out


def read_zip(blob: bytes, spec: MasterSpec) -> bytes:
    """The expected member of a master zip, read into memory within the bounds. Raises MasterError."""
    if len(blob) > MAX_ZIP_BYTES:
        raise MasterError(f"{spec.zip_name}: {len(blob)} bytes (limit {MAX_ZIP_BYTES})")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise MasterError(f"{spec.zip_name}: {len(infos)} members (limit {MAX_MEMBERS})")
            names = [i.filename for i in infos]
            info = next((i for i in infos if i.filename == spec.member), None)
            if info is None:
                raise MasterError(f"{spec.zip_name}: no member named {spec.member!r} (has {names[:MAX_MEMBERS]!r})")
            if info.file_size > MAX_MEMBER_BYTES:
                raise MasterError(f"{spec.zip_name}: {spec.member} unpacks to {info.file_size} bytes "
                                  f"(limit {MAX_MEMBER_BYTES})")
            with zf.open(info) as f:  # the header's size may lie: read at most one byte past the limit
                data = f.read(MAX_MEMBER_BYTES + 1)
            if len(data) > MAX_MEMBER_BYTES:
                raise MasterError(f"{spec.zip_name}: {spec.member} unpacks past {MAX_MEMBER_BYTES} bytes")
            return data
    except MasterError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as e:
        raise MasterError(f"{spec.zip_name}: not a readable zip ({type(e).__name__}: {str(e)[:200]})") from None


def load_zip(blob: bytes, spec: MasterSpec) -> list[dict]:
    return parse_master(read_zip(blob, spec), spec)


def download(url: str, session: requests.Session, timeouts: tuple[float, float], limit: int = MAX_ZIP_BYTES) -> bytes:
    """GET url into memory, refusing more than `limit` bytes. Raises MasterError."""
    try:
        with session.get(url, timeout=timeouts, stream=True) as r:
            if r.status_code != 200:
                raise MasterError(f"{url}: HTTP {r.status_code}")
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise MasterError(f"{url}: {declared} bytes announced (limit {limit})")
            buf = bytearray()
            for chunk in r.iter_content(65536):
                buf += chunk
                if len(buf) > limit:
                    raise MasterError(f"{url}: more than {limit} bytes")
            return bytes(buf)
    except requests.RequestException as e:
        raise MasterError(f"{url}: {type(e).__name__}") from None


def fetch_masters(base_url: str, *, session: requests.Session | None = None, timeouts=(3.05, 30.0),
                  clock: Clock | None = None, attempts: int = 3) -> dict[str, bytes]:
    """Download and validate both zips: {zip_name: bytes}. Each is parsed before it is accepted, so
    what is returned (and kept by the caller) is a good copy. Raises MasterError."""
    clock = clock or Clock()
    session = session or requests.Session()
    out = {}
    for spec in SPECS:
        url = f"{base_url.rstrip('/')}/{spec.zip_name}"
        for attempt in range(1, attempts + 1):
            try:
                blob = download(url, session, timeouts)
                load_zip(blob, spec)
                out[spec.zip_name] = blob
                break
            except MasterError:
                if attempt == attempts:
                    raise
                clock.sleep(2.0 * attempt)  # interruptible: the clock raises Stopped on SIGTERM
    return out


def load_dir(d: Path) -> list[dict]:
    """Records of the zips kept in `d` (a day's universe source dir). Raises MasterError."""
    out = []
    for spec in SPECS:
        p = Path(d, spec.zip_name)
        try:
            if p.is_symlink() or not p.is_file():
                raise MasterError(f"{p}: missing or not a regular file")
            if p.stat().st_size > MAX_ZIP_BYTES:
                raise MasterError(f"{p}: {p.stat().st_size} bytes (limit {MAX_ZIP_BYTES})")
            blob = p.read_bytes()
        except OSError as e:
            raise MasterError(f"{p}: {type(e).__name__}") from None
        out += load_zip(blob, spec)
    return out
