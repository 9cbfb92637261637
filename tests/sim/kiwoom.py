"""Raw Kiwoom clients for the simulator's tests (requests, websocket-client): no decoder of the project."""

from __future__ import annotations

import json
from pathlib import Path

import requests
import websocket

from .kis import Ws

SAMPLES = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "samples" / "kiwoom_examples.json")
                     .read_text())  # the reference's Kiwoom samples


class KRest:
    def __init__(self, base: str, app_key: str = "KW-APPKEY-1", secret: str = "KW-SECRET-1"):
        self.base = base
        self.app_key = app_key
        self.secret = secret
        self.s = requests.Session()
        self.token: str | None = None

    def issue(self, secret: str | None = None) -> requests.Response:
        r = self.s.post(self.base + "/oauth2/token", headers={"api-id": "au10001"}, timeout=10,
                        json={"grant_type": "client_credentials", "appkey": self.app_key,
                              "secretkey": self.secret if secret is None else secret})
        if r.status_code == 200 and r.json().get("return_code") == 0:
            self.token = r.json()["token"]
        return r

    def login(self) -> str:
        r = self.issue()
        assert r.status_code == 200 and r.json()["return_code"] == 0, r.text
        return self.token

    def call(self, path: str, api_id: str, body: dict, next_key: str | None = None,
             token: str | None = None) -> requests.Response:
        h = {"api-id": api_id, "authorization": f"Bearer {token or self.token}",
             "Content-Type": "application/json;charset=UTF-8"}
        if next_key is not None:
            h.update({"cont-yn": "Y", "next-key": next_key})
        return self.s.post(self.base + path, headers=h, json=body, timeout=10)

    def chart(self, api_id: str, body: dict, max_pages: int = 1000) -> tuple[list[dict], int]:
        """Every row of a chart TR, paging while cont-yn is Y (the list key is the one list in the body);
        returns (rows newest first, pages)."""
        rows: list[dict] = []
        key = None
        for page in range(1, max_pages + 1):
            r = self.call("/api/dostk/chart", api_id, body, key)
            assert r.status_code == 200, r.text
            d = r.json()
            assert d["return_code"] == 0, d
            assert r.headers["api-id"] == api_id
            (lst,) = [v for v in d.values() if isinstance(v, list)]
            rows += lst
            if r.headers.get("cont-yn") != "Y":
                return rows, page
            key = r.headers["next-key"]
            assert key
        raise AssertionError(f"{api_id}: still cont-yn Y after {max_pages} pages")


class KWs(Ws):
    """A Kiwoom WebSocket client: Ws's reading loop (until, close) with JSON messages."""

    def __init__(self, url: str, timeout: float = 10):
        self.ws = websocket.create_connection(url + "/api/dostk/websocket", timeout=timeout, skip_utf8_validation=True)
        self.got: list[dict] = []

    def send(self, obj: dict) -> None:
        self.ws.send(json.dumps(obj))

    def recv(self) -> dict:
        m = self.ws.recv()
        if not m:  # websocket-client answers a close frame with an empty message
            raise ConnectionError("the server closed the connection")
        d = json.loads(m)
        self.got.append(d)
        return d

    def reply(self, trnm: str, timeout: float = 10.0) -> dict:
        return self.until(lambda m: m if m.get("trnm") == trnm else None, timeout, f"a {trnm} reply")

    def login(self, token: str) -> dict:
        self.send({"trnm": "LOGIN", "token": token})
        return self.reply("LOGIN")

    def reg(self, items: list[str], types: list[str], grp: str = "1", refresh: str = "1") -> dict:
        self.send({"trnm": "REG", "grp_no": grp, "refresh": refresh, "data": [{"item": items, "type": types}]})
        return self.reply("REG")


def elements(msgs: list[dict], type_: str, item: str | None = None) -> list[dict]:
    """The REAL elements of one type (and item) among messages, in order."""
    return [e for m in msgs if m.get("trnm") == "REAL" for e in m["data"]
            if e["type"] == type_ and (item is None or e["item"] == item)]


def num(v: str) -> int:
    """A Kiwoom number: the +/- prefix is a direction, not a sign."""
    return abs(int(v))
