"""Kiwoom REST on 127.0.0.1 (providers.md §2.1, §2.2, §2.5): every call a POST with a JSON body and an
`api-id` header; replies repeat `api-id` and carry `cont-yn`/`next-key` for paging.

Order of checks on a quotation call: fault (slow, 5xx) → rate-limit storm → rate limit (per the token's app
key: Kiwoom calls carry no app key) → token → api-id → body. The rate limit answers HTTP 429 with
return code 1700; every other error is HTTP 200 with a non-zero `return_code` (a client must read it).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from observer.sim.kiwoom_quotes import KiwoomError, bad_input
from observer.sim.rest import SimHandler

E_RATE = {"return_code": 1700, "return_msg": "허용된 요청 개수를 초과하였습니다"}
# path → {api-id: the KiwoomQuotes method that answers it}
TRS = {
    "/api/dostk/chart": {"ka10079": "tick_chart", "ka10080": "minute_chart"},
    "/api/dostk/stkinfo": {"ka10001": "stock_info"},
}
OAUTH = {"/oauth2/token": "issue", "/oauth2/revoke": "revoke"}


class KiwoomHandler(SimHandler):
    """`self.server` (rest.RestServer) carries market, faults, auth (KiwoomAuth), limiter, quotes
    (KiwoomQuotes), counters and latency."""

    server_version = "SimKiwoom/1.0"

    def _reply(self, status: int, body: dict, api_id: str | None, next_key: str | None = None) -> None:
        headers = {"cont-yn": "Y" if next_key else "N", "next-key": next_key or ""}
        if api_id:
            headers["api-id"] = api_id
        self._send(status, json.dumps(body, ensure_ascii=False).encode(), "application/json;charset=UTF-8", headers)

    def do_POST(self):  # noqa: N802 - stdlib name
        srv = self.server
        path = urlsplit(self.path).path
        api_id = self.headers.get("api-id")
        body = self._body()
        if path in OAUTH:
            if self._faults(oauth=True):
                return
            if body is None:
                self._reply(200, bad_input("a JSON object body").body, api_id)
                return
            status, out = getattr(srv.auth, OAUTH[path])(body)
            srv.counters.count(f"post {path} {out.get('return_code')}")
            self._reply(status, out, api_id)
            return
        trs = TRS.get(path)
        if trs is None:
            self._send(404, b'{"return_code":404,"return_msg":"not found"}', "application/json;charset=UTF-8")
            return
        self._quotation(trs, api_id, body)

    def _quotation(self, trs: dict, api_id: str | None, body: dict | None) -> None:
        srv = self.server
        app_key, err = srv.auth.bearer_app_key(self.headers.get("authorization"))
        kid = srv.auth.key_id(app_key) if app_key else "-"
        count_key = srv.counters.count_key
        count_key(kid, "requests")
        if self._faults(oauth=False):
            return
        if self._limited(kid, app_key):  # a bad token has no app key: it is not counted against one
            self._reply(429, E_RATE, api_id)
            return
        if err is not None:
            count_key(kid, str(err["return_code"]))
            self._reply(200, err, api_id)
            return
        method = trs.get(api_id or "")
        cont = self.headers.get("cont-yn", "N") == "Y"
        try:
            if method is None:
                raise bad_input(f"api-id {str(api_id)[:20]!r} is not one of {sorted(trs)} on this path")
            if body is None:
                raise bad_input("a JSON object body")
            out, nxt = getattr(srv.quotes, method)(body, self.headers.get("next-key") if cont else None)
        except KiwoomError as e:
            out, nxt = e.body, None
        count_key(kid, "ok" if out["return_code"] == 0 else str(out["return_code"]))
        srv.counters.count(f"tr {api_id}")
        self._reply(200, out, api_id, nxt)

