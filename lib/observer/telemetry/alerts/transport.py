"""The Telegram sender: one message at a time through python-telegram-bot's `Bot`, on an asyncio loop
owned by the outbox's sender thread, bounded by timeouts.

python-telegram-bot (~40 MiB, needs httpx) is imported on the first send only, never by importing
this module or the `observer.telemetry.alerts` package (core/selftest.py lists it in LAZY_IMPORTS).
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING

from observer.core.redact import redact

if TYPE_CHECKING:
    import asyncio


class TelegramTransport:
    """send(text) -> (ok, error, retry_after_s); never raises. Used by one thread only (the sender):
    open() in that thread before the first send, close() when it ends."""

    def __init__(self, token: str, chat_id: str, api_base: str, send_timeout_s: float):
        self._token = token
        self._chat_id = chat_id
        self.api_base = api_base
        self.send_timeout_s = float(send_timeout_s)
        self.max_send_s = 2 * self.send_timeout_s + 1   # the longest one send() takes
        self._bot = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        import asyncio  # with ssl, ~7 MiB: only in the thread that sends, never in a collector that stays quiet

        self._loop = asyncio.new_event_loop()

    def send(self, text: str) -> tuple[bool, str, float]:
        """(ok, error, retry_after_s). Bounded by max_send_s; never raises."""
        assert self._loop is not None
        import asyncio

        try:
            coro = asyncio.wait_for(self._send_async(text), self.max_send_s)
            self._loop.run_until_complete(coro)
            return True, "", 0.0
        except Exception as e:  # noqa: BLE001 - every failure is a failed attempt, recorded
            retry_after = 0.0
            with warnings.catch_warnings():  # PTB 22 deprecates the int form of retry_after
                warnings.simplefilter("ignore")
                ra = getattr(e, "retry_after", None)
            if ra is not None:
                retry_after = ra.total_seconds() if isinstance(ra, timedelta) else float(ra)
            name = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
            msg = redact(f"{name}: {e}" if str(e) else name)
            self._shutdown_bot(keep_loop=True)  # a hung or broken connection is not reused
            return False, msg, retry_after

    def close(self) -> None:
        self._shutdown_bot()

    async def _send_async(self, text: str) -> None:
        bot = self._get_bot()
        await bot.initialize()
        await bot.send_message(chat_id=self._chat_id, text=text)

    def _get_bot(self):
        if self._bot is None:
            for name in ("httpx", "httpcore", "telegram"):  # their INFO/DEBUG lines carry URLs with the token
                logging.getLogger(name).setLevel(logging.WARNING)
            from telegram import Bot
            from telegram.request import HTTPXRequest

            # PTB 22 warns from inside RetryAfter.__init__ about a future type change we already handle
            warnings.filterwarnings("ignore", message=r".*retry_after.*", module=r"telegram\..*")

            t = self.send_timeout_s
            req = HTTPXRequest(connection_pool_size=2, connect_timeout=t, read_timeout=t, write_timeout=t,
                               pool_timeout=t)
            base = self.api_base.rstrip("/") + "/bot"
            self._bot = Bot(self._token, base_url=base, request=req)
        return self._bot

    def _shutdown_bot(self, keep_loop: bool = False) -> None:
        bot, self._bot = self._bot, None
        loop = self._loop
        if loop is None:
            return
        if bot is not None:
            import asyncio

            try:
                loop.run_until_complete(asyncio.wait_for(bot.shutdown(), 2))
            except Exception:
                pass
        if not keep_loop:
            self._loop = None
            try:
                loop.close()
            except Exception:
                pass
