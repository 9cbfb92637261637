"""The Kiwoom WebSocket protocol on the shared session (observer.providers.wssession).

What Kiwoom adds to the shared machinery (docs/providers/kiwoom.md, WebSocket):
- credential: the REST access token (KiwoomRest.token(); a token the server refused is replaced);
- login: `{"trnm":"LOGIN","token":…}` first on every connection; registrations go out only after its
  answer with return_code 0. A refused token (the token codes, 8031, 8103: the ones the official client
  refreshes on) gets one new token and a reconnect (cause `token_refused`); refused again with the new
  token, or refused credentials, real/paper mismatch or an unregistered device/IP: fatal. Another
  refusal is reported and retried with backoff (cause `login_refused`);
- registration: one `REG` (or `REMOVE`) per (item, type) in group `grp_no`, `refresh` "1" so nothing
  else in the group is dropped. The answers name no item: they are matched to the messages in the order
  sent (one queue per trnm, emptied on a new connection);
- heartbeat: `PING`, sent back exactly as received;
- `SYSTEM`: a server notice; reported (`subscription_error`, WARNING, code `SYSTEM…`) and, as the
  official example does, the session is ended and reconnected (cause `system_notice`).

Items are registered as given: a plain code is the KRX feed (records on market krx).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from observer.markets import krx
from observer.providers.base import AuthError, Decoded, ProviderError, Subscription
from observer.providers.kiwoom.parse import (
    MARKET,
    PROVIDER,
    TYPE_BY_CHANNEL,
    KiwoomFrameDecoder,
    login_message,
    register_message,
    remove_message,
)
from observer.providers.kiwoom.protocol import (
    CREDENTIAL_CODES,
    DEVICE_CODES,
    ENV_MISMATCH_CODES,
    REFRESH_ONCE_CODES,
    auth_reason,
)
from observer.providers.kiwoom.rest import KiwoomRest
from observer.providers.wssession import NOTHING, Control, MultiSession, WireProtocol, WsSession

# registrations per connection: the broker publishes none (UNCONFIRMED); the config may lower it
MAX_REGISTRATIONS = 100
# Kiwoom has no config table yet: the session's defaults are those of the KIS table (config/schema
# provider_kis.json, ws), the same market's phases and the same reasoning; they move into the schema
# with the provider's table
WS_DEFAULTS = {
    "max_registrations": MAX_REGISTRATIONS, "connect_timeout_s": 10, "backoff_s": [1, 2, 5, 10, 20, 30, 60],
    "backoff_reset_s": 30, "silence_s": 150,
    "stall_s": {"preopen": 600, "continuous": 60, "auction": 120, "after": 1800},
    "stale_s": {"trades": {"preopen": 1800, "continuous": 300, "auction": 600, "after": 3600},
                "book": {"preopen": 600, "continuous": 120, "auction": 300, "after": 3600}},
    "stale_resubscribe": True, "gap_markers": True, "poll_s": 0.25, "tcp_user_timeout_ms": 30000,
    "error_events_per_min": 30,
}
_ACCOUNT_REFUSED = CREDENTIAL_CODES | ENV_MISMATCH_CODES | (DEVICE_CODES - REFRESH_ONCE_CODES)


class KiwoomProtocol(WireProtocol):
    name = PROVIDER
    label = "Kiwoom"
    market = MARKET
    max_registrations = MAX_REGISTRATIONS
    defaults = WS_DEFAULTS

    def __init__(self, rest: KiwoomRest, *, grp_no: str = "1", max_registrations: int = MAX_REGISTRATIONS):
        self.rest = rest
        self.grp_no = grp_no
        self.max_registrations = max_registrations
        self._sent: dict[str, deque[Subscription]] = {"REG": deque(), "REMOVE": deque()}
        self._renewed = False  # the token in use replaces one the server refused

    def credential(self, refused: str | None) -> str:
        return self.rest.token(refused=refused)

    def fatal(self, error: Exception) -> bool:
        return isinstance(error, AuthError)  # the token endpoint refused the app key/secret

    def login(self, credential: str) -> str:
        return login_message(credential)

    def registration(self, credential: str, symbol: str, channel: str, register: bool) -> str:
        types = [TYPE_BY_CHANNEL[channel]]
        if register:
            msg = register_message([symbol], types, grp_no=self.grp_no)
        else:
            msg = remove_message([symbol], types, grp_no=self.grp_no)
        self._sent["REG" if register else "REMOVE"].append(Subscription(symbol, channel))
        return msg

    def connected(self) -> None:
        for q in self._sent.values():
            q.clear()

    def decoder(self, subscribed: dict[str, set[str]], trading_date) -> KiwoomFrameDecoder:
        return KiwoomFrameDecoder(subscribed=subscribed, trading_date=trading_date)

    def reply(self, d: Decoded, text: str) -> str | None:
        return (d.control or {}).get("reply", text)

    def phase(self, now_kst: datetime) -> str:
        return krx.session_phase(now_kst.hour, now_kst.minute)

    def control(self, d: Decoded) -> Control:
        c = d.control or {}
        trnm = c.get("trnm")
        if trnm == "LOGIN":
            return self._login(c)
        if trnm in self._sent:
            q = self._sent[trnm]
            sub = q.popleft() if q else None
            if c.get("ok"):
                return Control(acked=sub) if trnm == "REG" and sub is not None else NOTHING
            code = str(c.get("return_code"))
            fields = {"code": code, "message": f"{trnm} refused: {c.get('return_msg', '')}"[:200]}
            if sub is not None:
                fields.update(symbol=sub.symbol, tr_id=TYPE_BY_CHANNEL[sub.channel])
            return Control(refused=sub if trnm == "REG" else None, code=code,
                           event=("subscription_error", "ERROR", fields))
        if trnm == "SYSTEM":
            code = c.get("code") or ""
            event = ("subscription_error", "WARNING",
                     {"code": f"SYSTEM {code}".strip(), "message": f"server notice: {c.get('message', '')}"[:200]})
            return Control(end="system_notice" if c.get("disconnect") else "", event=event)
        return NOTHING

    def _login(self, c: dict) -> Control:
        if c.get("ok"):
            self._renewed = False
            return Control(logged_in=True)
        code = c.get("return_code")
        said = f"LOGIN refused: return_code {code if code is not None else '-'} {c.get('return_msg', '')}".strip()
        event = ("subscription_error", "ERROR", {"code": str(code), "message": said[:200]})
        if code in REFRESH_ONCE_CODES and not self._renewed:
            self._renewed = True
            return Control(end="token_refused", renew=True, event=event)
        if code in REFRESH_ONCE_CODES or code in _ACCOUNT_REFUSED:
            again = ", again after a new token" if code in REFRESH_ONCE_CODES else ""
            err = AuthError(f"Kiwoom WebSocket {said}{again} ({auth_reason(code)})")
            err.code = code
            return Control(end="login_refused", fatal=err, event=event)
        return Control(end="login_refused", event=event)


class KiwoomConnection(WsSession):
    """One WebSocket session for one app key (its REST client supplies the token)."""

    def __init__(self, *, ws_url: str, rest: KiwoomRest, account: str, wcfg: dict, clock, sink, events=None,
                 trading_date=None, grp_no: str = "1"):
        proto = KiwoomProtocol(rest, grp_no=grp_no,
                               max_registrations=int({**WS_DEFAULTS, **wcfg}["max_registrations"]))
        super().__init__(proto, url=ws_url, account=account, wcfg=wcfg, clock=clock, sink=sink, events=events,
                         trading_date=trading_date)


class KiwoomStream(MultiSession):
    """Every configured Kiwoom account's connection behind one StreamClient."""

    def __init__(self, connections: list[KiwoomConnection]):
        if not connections:
            raise ProviderError("no Kiwoom accounts configured")
        super().__init__(connections)
