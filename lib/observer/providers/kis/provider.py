"""KisProvider: the KIS implementation of observer.providers.base.Provider."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from observer.core.checks import CheckContext, NamedCheck
from observer.core.config import data_dir
from observer.providers.base import (
    AuthError,
    FrameSink,
    Provider,
    RecoverySource,
    RegistrationLimits,
    RestPacing,
    register_provider,
)
from observer.providers.kis.auth import KisAuth, rest_timeouts
from observer.providers.kis.parse import KisFrameDecoder
from observer.providers.kis.rest import KisRest, rate_per_s, urls
from observer.providers.kis.ws import KisConnection, KisStream
from observer.store.paths import state_dir


@register_provider("kis")
class KisProvider(Provider):
    markets = ("krx",)
    venues = ("KOSPI", "KOSDAQ")  # the stock master files it lists (master.py)
    # one WebSocket connection per app key; the 42nd registration is refused (OPSP0008)
    registration_limits = RegistrationLimits(per_connection=41, per_key=41)
    # today's trades by time (FHPST01060000) and today's 1-minute bars (FHKST03010200), 30 rows a call
    recovery_sources = MappingProxyType({
        "trade": RecoverySource("FHPST01060000", rows_per_call=30, reach_days=0),
        "bar": RecoverySource("FHKST03010200", rows_per_call=30, reach_days=0),
    })

    def __init__(self, cfg, secrets, store, clock):
        super().__init__(cfg, secrets, store, clock)
        self._rest: dict[str, KisRest] = {}

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        root = self.store.root if self.store is not None else data_dir(self.cfg)
        return state_dir(Path(root))

    @property
    def events(self):
        return self.store.events("kis") if self.store is not None else None

    def accounts(self) -> list[dict]:
        return list(self.pcfg.get("accounts") or [])

    def credentials(self, account: dict) -> tuple[str, str]:
        s = self.secrets or {}
        key, secret = s.get(account["key_env"], ""), s.get(account["secret_env"], "")
        if not key or not secret:
            raise AuthError(f"KIS account {account['name']!r}: secrets {account['key_env']} / {account['secret_env']} "
                            "missing or empty (names only; values are never logged)")
        return key, secret

    # -- Provider interface ------------------------------------------------------------------------
    def rest(self, account: str | None = None) -> KisRest:
        accs = self.accounts()
        acc = next((a for a in accs if a["name"] == account), None) if account else accs[0]
        if acc is None:
            raise ValueError(f"no KIS account named {account!r}")
        r = self._rest.get(acc["name"])
        if r is None:
            r = self._rest[acc["name"]] = self.new_rest(acc)
        return r

    def new_rest(self, account: dict, **kw) -> KisRest:
        """A REST client of its own for `account` (kw: KisRest's, e.g. auth_attempts=1 for no blocking retries)."""
        key, secret = self.credentials(account)
        return KisRest(self.pcfg, app_key=key, app_secret=secret, state_dir=self.state_dir, clock=self.clock,
                       events=self.events, account=account["name"], **kw)

    def rest_pacing(self) -> RestPacing:
        return RestPacing(rate_per_s(self.pcfg), float(self.pcfg["rate_limit_burst"]))

    def preflight_checks(self, ctx: CheckContext) -> list[NamedCheck]:
        """token, rest, clock, websocket (providers/kis/checks.py); imported when preflight asks."""
        from observer.providers.kis.checks import KisChecks

        return KisChecks(self, ctx).named()

    def stream(self, sink: FrameSink, *, trading_date=None) -> KisStream:
        rest_url, ws_url = urls(self.pcfg)
        conns = []
        for acc in self.accounts():
            key, secret = self.credentials(acc)
            auth = KisAuth.from_config(self.pcfg, base_url=rest_url, app_key=key, app_secret=secret,
                                       state_dir=self.state_dir, clock=self.clock,
                                       on_issue=lambda what, reason, a=acc["name"]: self._credential_issued(what, reason, a))
            conns.append(KisConnection(ws_url=ws_url, auth=auth, account=acc["name"], wcfg=self.pcfg["ws"],
                                       clock=self.clock, sink=sink, events=self.events,
                                       custtype=self.pcfg["custtype"], trading_date=trading_date))
        return KisStream(conns)

    def fetch_listings(self, keep_dir: Path) -> list[dict]:
        from observer.providers.kis import master
        from observer.store.state import write_bytes_atomic

        blobs = master.fetch_masters(self.pcfg.get("master_url") or master.BASE_URL, clock=self.clock,
                                     timeouts=rest_timeouts(self.pcfg))
        for name, blob in blobs.items():  # only files that parsed are kept
            write_bytes_atomic(Path(keep_dir, name), blob)
        return self.kept_listings(keep_dir)

    def kept_listings(self, keep_dir: Path) -> list[dict]:
        from observer.providers.kis import master

        return master.load_dir(Path(keep_dir))

    def _credential_issued(self, what: str, reason: str, account: str) -> None:
        ev = self.events
        if ev is not None:
            ev.emit("credential_issued", "INFO", what=what, reason=reason, account=account)

    def decoder(self, *, trading_date=None) -> KisFrameDecoder:
        return KisFrameDecoder(trading_date=trading_date)
