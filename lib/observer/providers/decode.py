"""Raw provider frames (or raw/ JSONL records) -> normalised JSONL records, each checked against its
contract as the streamer checks it (observer-decode; the fuzz benchmark)."""

from __future__ import annotations

from datetime import date

import orjson

from observer.providers.base import get_provider


def decode_stream(provider: str, lines, out, err, *, trading_date: date | None = None, now_ns: int | None = None,
                  include_rejected: bool = False) -> dict:
    """Decode `lines` (bytes or str) to `out` (binary), reporting to `err` (text). Returns counts."""
    import time

    from observer.core.contracts import ContractError, check

    prov = get_provider(provider, {"providers": {}}, None, None, None)
    dec = prov.decoder(trading_date=trading_date)
    now = now_ns or time.time_ns()
    counts = {"lines": 0, "frames": 0, "records": 0, "invalid": 0, "rejected": 0, "skipped": 0}
    buf: list[bytes] = []
    dumps = orjson.dumps
    nl = orjson.OPT_APPEND_NEWLINE
    for n, line in enumerate(lines, 1):
        counts["lines"] += 1
        try:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes | bytearray) else str(line)
            text = text.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                counts["skipped"] += 1
                continue
            recv_ns = now
            if text.startswith("{"):
                try:
                    obj = orjson.loads(text)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and obj.get("kind") == "raw":
                    frame = obj.get("frame")
                    if not isinstance(frame, str) or obj.get("encoding") == "base64":
                        err.write(f"line {n}: raw record without a text frame\n")
                        counts["invalid"] += 1
                        continue
                    rn = obj.get("recv_ns")
                    recv_ns = rn if isinstance(rn, int) and rn > 0 else now
                    text = frame
            counts["frames"] += 1
            d = dec.decode(text, recv_ns)
            if d.kind in ("control", "pingpong"):
                counts["skipped"] += 1
                continue
            if d.kind in ("encrypted", "unsupported"):
                counts["skipped"] += 1
                err.write(f"line {n}: skipped: {d.errors[0] if d.errors else d.kind}\n")
                continue
            for rec in d.records:
                try:  # the streamer's check: what fails its contract never reaches the output
                    check(rec)
                    line_out = dumps(rec, option=nl)
                except (ContractError, orjson.JSONEncodeError) as e:
                    counts["rejected"] += 1
                    err.write(f"line {n}: rejected: contract: {str(e)[:300]}\n")
                    continue
                buf.append(line_out)
                counts["records"] += 1
            if d.errors:
                counts["invalid"] += 1
                for e in d.errors:
                    err.write(f"line {n}: invalid: {e}\n")
            for rec, reason, _sym in d.rejects:
                counts["rejected"] += 1
                shown = ""
                if include_rejected:  # on stderr: a rejected record is outside its contract, never output
                    try:
                        shown = ": " + dumps(rec).decode()
                    except orjson.JSONEncodeError:
                        shown = ": (not representable as JSON)"
                err.write(f"line {n}: rejected: {reason}{shown}\n")
            if len(buf) >= 2048:
                out.write(b"".join(buf))
                buf.clear()
        except Exception as e:  # never crash on input
            counts["invalid"] += 1
            err.write(f"line {n}: invalid: {type(e).__name__}: {e}\n")
    if buf:
        out.write(b"".join(buf))
    out.flush()
    return counts
