"""A minimal KIS client for testing the simulator (independent of lib/observer/providers on purpose)."""

from __future__ import annotations

import json
import time

import orjson
import requests
import websocket

Q = "/uapi/domestic-stock/v1/quotations/"
TR = {
    "inquire-price": "FHKST01010100",
    "inquire-time-itemconclusion": "FHPST01060000",
    "inquire-time-itemchartprice": "FHKST03010200",
    "inquire-daily-price": "FHKST01010400",
    "inquire-daily-itemchartprice": "FHKST03010100",
    "search-info": "CTPF1604R",
    "volume-rank": "FHPST01710000",
}


class Rest:
    def __init__(self, base: str, app_key: str = "APPKEY-1", app_secret: str = "SECRET-1"):
        self.base = base
        self.app_key = app_key
        self.app_secret = app_secret
        self.s = requests.Session()
        self.token: str | None = None

    def post(self, path: str, body: dict) -> requests.Response:
        return self.s.post(self.base + path, json=body, timeout=10,
                           headers={"content-type": "application/json; charset=utf-8"})

    def issue(self) -> requests.Response:
        r = self.post("/oauth2/tokenP", {"grant_type": "client_credentials", "appkey": self.app_key,
                                         "appsecret": self.app_secret})
        if r.status_code == 200:
            self.token = r.json()["access_token"]
        return r

    def approval(self) -> str:
        r = self.post("/oauth2/Approval", {"grant_type": "client_credentials", "appkey": self.app_key,
                                           "secretkey": self.app_secret})
        r.raise_for_status()
        return r.json()["approval_key"]

    def headers(self, tr_id: str) -> dict:
        return {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {self.token}",
                "appkey": self.app_key, "appsecret": self.app_secret, "tr_id": tr_id, "custtype": "P"}

    def get(self, name: str, tr_id: str | None = None, headers: dict | None = None, **params) -> requests.Response:
        h = self.headers(tr_id or TR[name])
        if headers:
            h.update(headers)
        return self.s.get(self.base + Q + name, headers=h, params=params, timeout=10)

    def price(self, code: str) -> dict:
        r = self.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)
        assert r.status_code == 200, r.text
        return r.json()

    def conclusions(self, code: str, hour: str) -> dict:
        r = self.get("inquire-time-itemconclusion", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code,
                     FID_INPUT_HOUR_1=hour)
        assert r.status_code == 200, r.text
        return r.json()


def sub_msg(approval: str, tr_id: str, key: str, tr_type: str = "1") -> str:
    return json.dumps({"header": {"approval_key": approval, "custtype": "P", "tr_type": tr_type,
                                  "content-type": "utf-8"}, "body": {"input": {"tr_id": tr_id, "tr_key": key}}})


class Ws:
    def __init__(self, url: str, timeout: float = 10, **kw):
        self.ws = websocket.create_connection(url + "/tryitout", timeout=timeout, skip_utf8_validation=True, **kw)
        self.controls: list[dict] = []
        self.frames: list[str] = []

    def send(self, text: str) -> None:
        self.ws.send(text)

    def recv(self) -> str:
        m = self.ws.recv()
        if isinstance(m, bytes):
            m = m.decode()
        if m.startswith("{"):
            self.controls.append(json.loads(m))
        else:
            self.frames.append(m)
        return m

    def until(self, pred, timeout: float = 10.0, what: str = "condition"):
        """Read messages until pred(message) is truthy; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                m = self.recv()
            except websocket.WebSocketTimeoutException:
                break
            got = pred(m)
            if got:
                return got
        raise AssertionError(f"timed out waiting for {what}")

    def control(self, msg_cd: str | None = None, tr_id: str | None = None, timeout: float = 10.0) -> dict:
        def pred(m):
            if m.startswith("{"):
                c = json.loads(m)
                body = c.get("body") or {}
                if (msg_cd is None or body.get("msg_cd") == msg_cd) and \
                        (tr_id is None or c["header"].get("tr_id") == tr_id):
                    return c
            return None

        return self.until(pred, timeout, f"control {msg_cd or tr_id}")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def records(frame: str) -> tuple[str, list[list[str]]]:
    """(tr_id, records) of a data frame; the width is fields ÷ count, as the reference says."""
    enc, tr, cnt, data = frame.split("|", 3)
    assert enc == "0"
    f = data.split("^")
    n = int(cnt)
    assert n >= 1 and len(f) % n == 0, f"{len(f)} fields is not a multiple of {n}"
    w = len(f) // n
    return tr, [f[i * w:(i + 1) * w] for i in range(n)]


def read_jsonl(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(x) for x in f if x.strip()]
