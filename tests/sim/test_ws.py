"""KIS WebSocket of the simulator with websocket-client: subscribe protocol, limits, PINGPONG, frames vs ground truth."""

import json
import socket
import time

import pytest

from observer.core.clock import ManualClock, kst_ns, parse_yyyymmdd
from observer.sim.market import BookEv, SymbolSim, Universe, hhmmss
from tests.support import wait_for

from .conformance import check_asp_record, check_cnt_frame
from .conftest import DATE
from .kis import Rest, Ws, read_jsonl, records, sub_msg

CNT, ASP = "H0STCNT0", "H0STASP0"
SIDE = {"1": "buy", "5": "sell", "3": "auction"}


def _busy(sim, n=1):
    return [s.code for s in sorted(sim.universe.symbols, key=lambda s: s.rank) if s.active][:n]


def trade_of_record(r: list[str]) -> tuple:
    return r[1], int(r[2]), int(r[12]), int(r[13]), SIDE[r[21]]


def trade_of_truth(t: dict) -> tuple:
    return t["time"], t["price"], t["qty"], t["acml_vol"], t["side"]


def book_of_record(r: list[str]) -> tuple:
    """Every state field of an H0STASP0 record: a book is identified by all of it, not by a few fields."""
    n = [int(x) for x in r[3:45]]
    return r[1], r[2], n[0:10], n[10:20], n[20:30], n[30:40], n[40], n[41], int(r[47]), int(r[48]), int(r[53])


def book_of_truth(b: dict) -> tuple:
    return (b["time"], b["hour_cls"], b["askp"], b["bidp"], b["askq"], b["bidq"], b["total_ask"], b["total_bid"],
            b["antc_price"], b["antc_qty"], b["acml_vol"])


class Truth:
    """A ground-truth directory read back: what each subscription window contains."""

    def __init__(self, gt: str):
        self.trades = read_jsonl(f"{gt}/trades.jsonl")
        self.books = read_jsonl(f"{gt}/books.jsonl")
        self.subs = read_jsonl(f"{gt}/subscriptions.jsonl")
        self.closes = {c["conn"]: c for c in read_jsonl(f"{gt}/connections.jsonl") if c["event"] == "close"}
        self.sent = {s["conn"]: s for s in read_jsonl(f"{gt}/sent.jsonl") if s["final"]}

    def window(self, conn: int, tr_id: str, sym: str, until: int | None = None) -> list[dict]:
        """The events the docs say were sent on `conn`: from_t_ms < t_ms <= until_t_ms (of the close by default)."""
        (sub,) = [x for x in self.subs if x["event"] == "subscribe" and x["conn"] == conn and x["tr_id"] == tr_id
                  and x["symbol"] == sym]
        hi = self.closes[conn]["until_t_ms"] if until is None else until
        evs = self.trades if tr_id == CNT else self.books
        return [e for e in evs if e["symbol"] == sym and sub["from_t_ms"] < e["t_ms"] <= hi]

    def check_sent_counts(self, conn: int, sym: str, trs: tuple = (CNT, ASP)) -> None:
        """sent.jsonl agrees with the windows: every generated trade and book state was sent, none twice."""
        sent = self.sent[conn]["sent"]
        if CNT in trs:
            trades = self.window(conn, CNT, sym)
            assert sent[CNT][sym] == {"frames": len({t["group"] for t in trades}), "records": len(trades)}
        if ASP in trs:
            books = self.window(conn, ASP, sym)
            assert sent[ASP][sym] == {"frames": len(books), "records": len(books)}


def read_books(client, n: int, what: str) -> list:
    """The next n book records a client receives (data frames of one record each)."""
    got = []
    client.until(lambda m: m.startswith("0|") and got.append(book_of_record(records(m)[1][0])) is None
                 and len(got) >= n, what=what)
    return got

def test_frames_match_ground_truth_exactly(make_sim):
    sim = make_sim(start="09:05", speed=40, cnt_fields=47, asp_fields=63)
    rest = Rest(sim.rest_url)
    key = rest.approval()
    codes = _busy(sim, 3)
    ws = Ws(sim.ws_url)
    for code in codes:
        for tr in (CNT, ASP):
            ws.send(sub_msg(key, tr, code))
            ack = ws.control("OPSP0000")
            assert ack["header"]["tr_id"] == tr and ack["header"]["tr_key"] == code
    cnt = {c: [] for c in codes}
    books = {c: [] for c in codes}

    def collect(m):
        if not m.startswith("{"):
            tr, recs = records(m)
            if tr == CNT:
                check_cnt_frame(recs)
                assert all(len(r) == 47 for r in recs)
                cnt[recs[0][0]].extend(recs)
            else:
                assert len(recs) == 1 and len(recs[0]) == 63
                check_asp_record(recs[0])
                books[recs[0][0]].append(recs[0])
        return all(len(v) >= 100 for v in cnt.values())

    for m in ws.frames:  # data that came in while the later subscriptions were being acknowledged
        collect(m)
    ws.until(collect, timeout=20, what="100 trades per symbol")
    ws.close()
    gt = sim.cfg.ground_truth
    sim.stop()
    truth = Truth(gt)
    (conn,) = truth.closes
    for code in codes:
        # exactly the events after the subscription, in order, nothing skipped, nothing extra. (Aligning on the
        # first received book by a few fields, as this test once did, is ambiguous: consecutive book states often
        # share time, ask prices, bid sizes and volume — see test_book_feed_starts_exactly_after_the_subscription.)
        trades = truth.window(conn, CNT, code)
        assert [trade_of_record(r) for r in cnt[code]] == [trade_of_truth(t) for t in trades[:len(cnt[code])]]
        gb = truth.window(conn, ASP, code)
        assert [book_of_record(r) for r in books[code]] == [book_of_truth(b) for b in gb[:len(books[code])]]
        truth.check_sent_counts(conn, code)
    assert truth.sent[conn]["sent"][CNT][codes[0]]["records"] >= 100


def _old_key(b: dict) -> tuple:
    # the fields the old version of the test above matched books on
    return b["time"], list(b["askp"]), list(b["bidq"]), b["acml_vol"]


def test_book_feed_starts_exactly_after_the_subscription(make_sim, tmp_path):
    """The flake of test_frames_match_ground_truth_exactly, made deterministic with a manual clock.

    Its book check found the first received book in books.jsonl by (time, ask prices, bid sizes, volume) and
    then required the next states to follow one by one. About one book state in ten differs from the one
    before it only in an ask size (a quote that resizes a level), so when the subscription happened to start
    right after such a twin — which depends on how long the subscribe took, i.e. on machine load — the lookup
    landed one state early and reported a state "skipped" between two sent ones. Nothing was skipped.
    """
    code = "005930"
    sym = SymbolSim(Universe(7, 120, 12).by_code[code], 7, DATE)  # make_sim's market (seed 7, 120/12 symbols)
    sym.advance(9 * 3_600_000 + 6 * 60_000)
    states = [e for e in sym.take() if type(e) is BookEv and e.t >= 9 * 3_600_000 + 5 * 60_000]
    prev, first = next((a, b) for a, b in zip(states, states[1:], strict=False)
                       if a.t < b.t and hhmmss(a.t) == hhmmss(b.t) and a.askp == b.askp and a.bidq == b.bidq
                       and a.acml_vol == b.acml_vol)
    midnight = kst_ns(parse_yyyymmdd(DATE), "000000")
    clock = ManualClock(midnight + prev.t * 1_000_000)  # the market stands still right at the twin
    sim = make_sim(clock=clock, asp_fields=63)
    ws = Ws(sim.ws_url)
    ws.send(sub_msg(Rest(sim.rest_url).approval(), ASP, code))
    ws.control("OPSP0000")
    clock.advance(10)  # 10 market seconds: dozens of book states
    got = []
    ws.until(lambda m: m.startswith(f"0|{ASP}|") and got.append(records(m)[1][0]) is None and len(got) >= 20,
             what="20 book frames")
    ws.close()
    sim.stop()
    truth = Truth(sim.cfg.ground_truth)
    (conn,) = truth.closes
    window = truth.window(conn, ASP, code)
    assert window[0]["seq"] == first.seq and [b["seq"] for b in truth.books if b["symbol"] == code
                                              and b["t_ms"] <= prev.t][-1] == prev.seq
    assert [book_of_record(r) for r in got] == [book_of_truth(b) for b in window[:len(got)]]
    truth.check_sent_counts(conn, code, (ASP,))
    # the root cause of the flake: by the old key the first book sent is indistinguishable from the one before
    before = [b for b in truth.books if b["symbol"] == code and b["seq"] == prev.seq]
    assert _old_key(before[0]) == _old_key(window[0]) and before[0]["askq"] != window[0]["askq"]


def test_nothing_is_lost_when_the_pump_falls_behind_a_slow_reader(make_sim):
    """Load, deterministically: the market clock jumps a minute at a time (each jump is one pump catch-up of 12
    slices) while the reader does not read, until the server's writer is blocked on the full socket and frames
    pile up in the connection's queue; a second client subscribes while the pump works through a backlog.
    Then every trade and every book state of each subscription window must arrive, in order, exactly once."""
    midnight = kst_ns(parse_yyyymmdd(DATE), "000000")
    clock = ManualClock(midnight + (9 * 3600 + 60) * 1_000_000_000)
    sim = make_sim(clock=clock)
    codes = _busy(sim, 5)
    # a small receive buffer (no autotuning) so the socket fills after a few hundred kB
    slow = Ws(sim.ws_url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 8192),))
    key = Rest(sim.rest_url).approval()
    for code in codes:
        for tr in (CNT, ASP):
            slow.send(sub_msg(key, tr, code))
            slow.control("OPSP0000")

    def jump(seconds: int) -> None:
        target = sim.market_ms() + seconds * 1000
        clock.advance(seconds)
        wait_for(lambda: sim.dispatched_ms >= target, 10, what="the pump to catch up")

    def queued() -> int:
        return next(c["queued_bytes"] for c in sim.stats()["ws"]["connections"] if c["subscriptions"] == 10)

    # more than a couple of slices' worth queued: the writer has been stuck in sendall for several ticks
    for _ in range(60):
        jump(60)
        if queued() > 1 << 20:
            break
    assert queued() > 1 << 20, "the slow reader never fell behind"
    other = Ws(sim.ws_url)
    other_sub = sub_msg(Rest(sim.rest_url, "ANOTHER", "S").approval(), ASP, codes[0])
    target = sim.market_ms() + 300_000
    clock.advance(300)  # 60 slices of backlog for the pump; the subscription lands between two of them
    other.send(other_sub)
    other.control("OPSP0000")
    wait_for(lambda: sim.dispatched_ms >= target, 10, what="the pump to catch up")
    jump(10)  # so the second window is never empty, wherever the subscription landed
    sim.truth.flush()
    truth = Truth(sim.cfg.ground_truth)
    conns = sorted({s["conn"] for s in truth.subs})
    end = sim.dispatched_ms  # the clock stands still: nothing more is generated
    want = {(tr, c): [trade_of_truth(x) if tr == CNT else book_of_truth(x)
                      for x in truth.window(conns[0], tr, c, until=end)] for c in codes for tr in (CNT, ASP)}
    got: dict = {k: [] for k in want}

    def take(m: str) -> bool:
        if m.startswith("0|"):
            tr, recs = records(m)
            got[(tr, recs[0][0])].extend(trade_of_record(r) if tr == CNT else book_of_record(r) for r in recs)
        return all(len(got[k]) >= len(v) for k, v in want.items())

    slow.until(take, timeout=30, what="the backlog")
    assert got == want
    want2 = [book_of_truth(b) for b in truth.window(conns[1], ASP, codes[0], until=end)]
    assert read_books(other, len(want2), "the second feed") == want2
    slow.close()
    other.close()
    sim.stop()
    truth = Truth(sim.cfg.ground_truth)
    for code in codes:
        truth.check_sent_counts(conns[0], code)
    assert truth.closes[conns[0]]["until_t_ms"] == end and truth.closes[conns[0]]["cause"] == "client_close"


def test_a_subscription_never_lands_inside_a_tick(make_sim):
    """A registration made while the pump is halfway through handing out a tick's frames takes effect after that
    tick. Before, the subscriber was added mid-tick: it got only the tail of the tick's frames while
    subscriptions.jsonl (from_t_ms = the last finished tick) promised all of them — under CI load ticks are long
    and this window is wide. Made deterministic by holding another subscriber's queue lock, which parks the
    pump at that subscriber's first frame of the tick."""
    t0 = 9 * 3_600_000 + 60_000
    clock = ManualClock(kst_ns(parse_yyyymmdd(DATE), "000000") + t0 * 1_000_000)
    sim = make_sim(clock=clock)
    busy = _busy(sim, 12)
    x, y = busy[0], busy[-1]  # the busiest symbol, and a quiet one whose first book comes a second later
    model = SymbolSim(Universe(7, 120, 12).by_code[y], 7, DATE)
    model.advance(t0 + 60_000)
    t_y = next(e.t for e in model.take() if type(e) is BookEv and e.t > t0)
    b = Ws(sim.ws_url)
    b.send(sub_msg(Rest(sim.rest_url).approval(), ASP, y))
    b.control("OPSP0000")
    a = Ws(sim.ws_url)
    a_sub = sub_msg(Rest(sim.rest_url, "ANOTHER", "S").approval(), ASP, x)
    (conn_b,) = [c for c in sim.ws.conns.values() if c.subs == {(ASP, y)}]
    y_books = sim.sym_counts[y][1]  # books of y the pump has handed out so far
    with conn_b.cond:
        clock.advance(60)
        # the pump counts y's first book of the tick, then blocks handing it to b — after it handed x's earlier
        # books of that tick to nobody
        wait_for(lambda: sim.sym_counts[y][1] > y_books, 10, what="the pump to be inside the tick")
        assert sim.dispatched_ms == t0
        a.send(a_sub)
        # not acknowledged while the tick is half done: the registration waits for the tick to end (this
        # wait can only pass by timing out; it cannot flake)
        with pytest.raises(AssertionError, match="timed out"):
            a.control("OPSP0000", timeout=1.0)
    a.control("OPSP0000")
    wait_for(lambda: sim.dispatched_ms >= t0 + 60_000, 10, what="the pump to catch up")
    sim.truth.flush()
    truth = Truth(sim.cfg.ground_truth)
    (a_id,) = [s["conn"] for s in truth.subs if s["symbol"] == x]
    (from_t,) = [s["from_t_ms"] for s in truth.subs if s["symbol"] == x]
    assert from_t >= t_y  # after the tick that was in progress, never inside it
    end = sim.dispatched_ms
    want = [book_of_truth(bk) for bk in truth.window(a_id, ASP, x, until=end)]
    assert want, "the window after the subscription has books"
    assert read_books(a, len(want), "x's books") == want
    a.close()
    b.close()


def test_subscribe_protocol_replies(make_sim):
    sim = make_sim()
    rest = Rest(sim.rest_url)
    key = rest.approval()
    code = _busy(sim)[0]
    ws = Ws(sim.ws_url)
    ws.send(sub_msg("not-a-key", "H0STCNT0", code))
    bad = ws.control("OPSP0011")
    assert bad["body"] == {"rt_cd": "1", "msg_cd": "OPSP0011", "msg1": "invalid approval : NOT FOUND"}
    ws.send(sub_msg(key, "H0STCNT0", code))
    ws.control("OPSP0000")
    ws.send(sub_msg(key, "H0STCNT0", code))
    assert ws.control("OPSP0002")["body"]["rt_cd"] == "1"
    ws.send(sub_msg(key, "H0STASP0", code, "2"))
    assert ws.control("OPSP0003")["body"]["rt_cd"] == "1"
    ws.until(lambda m: m.startswith("0|H0STCNT0|"), what="a trade frame")
    ws.send(sub_msg(key, "H0STCNT0", code, "2"))
    ws.control("OPSP0001")
    # after the release ack no frame of that registration may follow; PINGPONGs and nothing else
    ws.frames.clear()
    ws.send(sub_msg(key, "H0STASP0", code))
    ws.control("OPSP0000")
    ws.until(lambda m: len([f for f in ws.frames if f.startswith("0|H0STASP0|")]) >= 20, what="20 book frames")
    assert not [f for f in ws.frames if f.startswith("0|H0STCNT0|")]
    ws.close()


def test_registration_limit_is_41(make_sim):
    sim = make_sim(symbols=60, active=30)
    key = Rest(sim.rest_url).approval()
    codes = [s.code for s in sim.universe.symbols][:21]
    ws = Ws(sim.ws_url)
    regs = [(tr, c) for c in codes for tr in ("H0STCNT0", "H0STASP0")]
    for tr, c in regs[:41]:
        ws.send(sub_msg(key, tr, c))
        ws.control("OPSP0000")
    ws.send(sub_msg(key, *regs[41]))
    over = ws.control("OPSP0008")
    assert over["header"] == {"tr_id": regs[41][0], "tr_key": regs[41][1]}
    assert over["body"] == {"rt_cd": "1", "msg_cd": "OPSP0008", "msg1": "MAX SUBSCRIBE OVER"}
    # releasing one frees a slot
    ws.send(sub_msg(key, *regs[0], "2"))
    ws.control("OPSP0001")
    ws.send(sub_msg(key, *regs[41]))
    ws.control("OPSP0000")
    ws.close()


def test_one_connection_per_app_key(make_sim):
    sim = make_sim()
    rest = Rest(sim.rest_url)
    k1, k2 = rest.approval(), rest.approval()  # two approval keys, same app key
    code = _busy(sim)[0]
    first = Ws(sim.ws_url)
    first.send(sub_msg(k1, "H0STCNT0", code))
    first.control("OPSP0000")
    second = Ws(sim.ws_url)
    second.send(sub_msg(k2, "H0STCNT0", code))
    msg = second.control("OPSP8996")
    assert msg["header"]["tr_id"] == "(null)" and msg["body"]["msg1"] == "ALREADY IN USE appkey"
    wait_for(lambda: sim.stats()["ws"]["closed"] >= 1, 10, what="the second connection to be closed")
    other = Ws(sim.ws_url)  # another app key is fine
    other.send(sub_msg(Rest(sim.rest_url, "ANOTHER", "S").approval(), "H0STCNT0", code))
    other.control("OPSP0000")
    first.close()
    wait_for(lambda: len(sim.stats()["ws"]["connections"]) == 1, 10, what="the first connection to go")
    third = Ws(sim.ws_url)
    third.send(sub_msg(k2, "H0STCNT0", code))
    third.control("OPSP0000")
    for w in (second, other, third):
        w.close()
    assert sim.stats()["ws"]["appkey_in_use"] == 1


def test_pingpong(make_sim):
    sim = make_sim(pingpong_interval=0.3)
    ws = Ws(sim.ws_url)
    t0 = time.monotonic()
    p1 = ws.control(tr_id="PINGPONG", timeout=3)
    p2 = ws.control(tr_id="PINGPONG", timeout=3)
    assert time.monotonic() - t0 >= 0.5
    assert p1 == {"header": {"tr_id": "PINGPONG", "datetime": p1["header"]["datetime"]}}
    dt = p2["header"]["datetime"]
    assert len(dt) == 14 and dt.startswith("20260316") and "090100" <= dt[8:] <= "095959"
    ws.send(json.dumps(p2))
    wait_for(lambda: sim.stats()["ws"]["connections"][0]["pongs_received"] >= 1, 10, what="the echo to be counted")
    ws.close()


def test_rest_never_lags_the_feed(make_sim):
    sim = make_sim(speed=30)
    rest = Rest(sim.rest_url)
    rest.issue()
    key = rest.approval()
    code = _busy(sim)[0]
    ws = Ws(sim.ws_url)
    ws.send(sub_msg(key, "H0STCNT0", code))
    ws.control("OPSP0000")
    for _ in range(5):
        frame = ws.until(lambda m: m if m.startswith("0|H0STCNT0|") else None, what="a trade")
        acml = int(records(frame)[1][-1][13])
        assert int(rest.price(code)["output"]["acml_vol"]) >= acml
    ws.close()
