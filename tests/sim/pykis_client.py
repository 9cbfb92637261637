"""Run inside a throwaway venv holding python-kis (never the project's): drives python-kis against
observer-sim and prints one JSON object of what it got. Imports nothing from the project.

usage: python pykis_client.py REST_URL WS_URL SYMBOL CHART_FROM(YYYYMMDD) MIN_TRADES TIMEOUT_S OUT_JSON
(python-kis logs to stdout, so the result goes to OUT_JSON)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime


def main() -> dict:
    rest, ws, symbol = sys.argv[1], sys.argv[2], sys.argv[3]
    chart_from = datetime.strptime(sys.argv[4], "%Y%m%d").date()
    min_trades, timeout = int(sys.argv[5]), float(sys.argv[6])

    # python-kis has its hosts as module constants: point them at the simulator before it uses them
    import pykis.client.websocket
    import pykis.kis

    pykis.kis.REAL_DOMAIN = pykis.kis.VIRTUAL_DOMAIN = rest
    pykis.client.websocket.WEBSOCKET_REAL_DOMAIN = pykis.client.websocket.WEBSOCKET_VIRTUAL_DOMAIN = ws

    from pykis import PyKis
    from pykis.api.auth.token import token_issue
    from pykis.client.exceptions import KisHTTPError

    # python-kis checks the lengths of the key (36) and secret (180); the simulator accepts any
    kis = PyKis(id="simuser", account="00000000-01", appkey="P" + "a" * 35, secretkey="s" * 180, keep_token=False)
    out: dict = {"token": {"type": kis.token.type, "expired": kis.token.expired}}
    try:
        token_issue(kis, "real")
        out["second_issue"] = {"status": 200}
    except KisHTTPError as e:
        out["second_issue"] = {"status": e.status_code, "body": e.response.json()}

    stock = kis.stock(symbol)  # search-info (CTPF1604R) behind it, after inquire-price to find the market
    info = kis.stock(symbol).info
    out["info"] = {"symbol": info.symbol, "std_code": info.std_code, "name": info.name, "market": info.market,
                   "domestic": info.domestic, "name_eng": info.name_eng}

    q = stock.quote()
    out["quote"] = {"symbol": q.symbol, "name": q.name, "market": q.market, "price": int(q.price),
                    "volume": int(q.volume), "prev_price": int(q.prev_price), "high_limit": int(q.high_limit),
                    "low_limit": int(q.low_limit)}

    ob = stock.orderbook()
    out["orderbook"] = {"asks": [[int(a.price), int(a.volume)] for a in ob.asks],
                        "bids": [[int(b.price), int(b.volume)] for b in ob.bids]}

    chart = stock.daily_chart(start=chart_from)
    out["daily"] = [[b.time.strftime("%Y%m%d"), int(b.open), int(b.high), int(b.low), int(b.close), int(b.volume)]
                    for b in chart.bars]

    trades: list = []
    enough = threading.Event()

    def on_price(_sender, e) -> None:
        r = e.response
        trades.append([r.time_kst.strftime("%H%M%S"), int(r.price), int(r.volume)])
        if len(trades) >= min_trades:
            enough.set()

    ticket = stock.on("price", on_price)
    enough.wait(timeout)
    ticket.unsubscribe()
    out["trades"] = list(trades)
    return out


if __name__ == "__main__":
    result = main()
    with open(sys.argv[7], "w", encoding="utf-8") as f:
        json.dump(result, f)
    os._exit(0)  # python-kis's WebSocket threads are not ours to join
