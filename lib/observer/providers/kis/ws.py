"""The KIS WebSocket protocol on the shared session (observer.providers.wssession): one connection per
app key, up to 41 registrations each.

What KIS adds to the shared machinery:
- credential: the approval key (`/oauth2/Approval`, cached by KisAuth); it rides in every subscribe
  message, so there is no login: a connection is live at once;
- registration: one JSON message per (tr_id, tr_key), `tr_type` 1 registers, 2 releases;
- heartbeat: PINGPONG, echoed as the identical text;
- answers: OPSP0000/0002 registered; 0001/0003 nothing to do; OPSP0011 the approval key is invalid
  (a new one is fetched, cause `approval_invalid`); OPSP8996 the app key is in use by another session
  (cause `appkey_in_use`, retried with backoff); any other error refuses that registration
  (`subscription_error`);
- a refused app key/secret (KisAuth.refused) is fatal.
"""

from __future__ import annotations

import functools
from datetime import datetime

from observer.markets import krx
from observer.providers.base import AuthError, Decoded, ProviderError, Subscription
from observer.providers.kis.auth import KisAuth
from observer.providers.kis.parse import (
    CHANNEL_BY_TR,
    MARKET,
    TR_BY_CHANNEL,
    KisFrameDecoder,
    subscribe_message,
)
from observer.providers.wssession import NOTHING, Control, MultiSession, WireProtocol, WsSession
from observer.providers.wssession import open_socket as open_socket  # preflight's probe connects the same way

MAX_REGISTRATIONS = 41
_ACKED = ("OPSP0000", "OPSP0002")     # registered; already registered (treated as registered)
_NOTHING_TO_DO = ("OPSP0001", "OPSP0003")  # released; release of something not registered


@functools.cache
def ws_defaults() -> dict:
    """The config schema's [providers.kis.ws] table with nothing set: every default, in one place."""
    from observer.core.config import validate_config

    return validate_config({})["providers"]["kis"]["ws"]


class KisProtocol(WireProtocol):
    name = "kis"
    label = "KIS"
    market = MARKET
    max_registrations = MAX_REGISTRATIONS

    def __init__(self, auth: KisAuth, custtype: str = "P"):
        self.auth = auth
        self.custtype = custtype
        self.defaults = ws_defaults()

    def credential(self, refused: str | None) -> str:
        return self.auth.approval_key(invalid=refused)

    def fatal(self, error: Exception) -> bool:
        return isinstance(error, AuthError) and bool(self.auth.refused)

    def registration(self, credential: str, symbol: str, channel: str, register: bool) -> str:
        return subscribe_message(credential, TR_BY_CHANNEL[channel], symbol, register=register,
                                 custtype=self.custtype)

    def decoder(self, subscribed: dict[str, set[str]], trading_date) -> KisFrameDecoder:
        return KisFrameDecoder(subscribed=subscribed, trading_date=trading_date)

    def phase(self, now_kst: datetime) -> str:
        return krx.session_phase(now_kst.hour, now_kst.minute)

    def control(self, d: Decoded) -> Control:
        c = d.control or {}
        code = c.get("msg_cd", "")
        tr, key = c.get("tr_id", ""), c.get("tr_key", "")
        channel = CHANNEL_BY_TR.get(tr)
        sub = Subscription(key, channel) if channel is not None else None
        if code in _ACKED:
            return Control(acked=sub) if sub is not None else NOTHING
        if code in _NOTHING_TO_DO:
            return NOTHING
        message = c.get("msg1", "")[:200]
        if code == "OPSP0011":
            return Control(end="approval_invalid", renew=True,
                           event=_error(code=code, message=message, symbol=key))
        if code == "OPSP8996":
            return Control(end="appkey_in_use", event=_error(code=code, message=message))
        if c.get("rt_cd") not in ("0", ""):
            return Control(refused=sub, code=code, event=_error(code=code, message=message, symbol=key, tr_id=tr))
        return NOTHING


def _error(**fields) -> tuple[str, str, dict]:
    return "subscription_error", "ERROR", fields


class KisConnection(WsSession):
    """One WebSocket session for one app key."""

    def __init__(self, *, ws_url: str, auth: KisAuth, account: str, wcfg: dict, clock, sink, events=None,
                 custtype: str = "P", trading_date=None):
        super().__init__(KisProtocol(auth, custtype), url=ws_url + (wcfg.get("path") or ""), account=account,
                         wcfg=wcfg, clock=clock, sink=sink, events=events, trading_date=trading_date)


class KisStream(MultiSession):
    """Every configured KIS account's connection behind one StreamClient."""

    def __init__(self, connections: list[KisConnection]):
        if not connections:
            raise ProviderError("no KIS accounts configured (providers.kis.accounts)")
        super().__init__(connections)
