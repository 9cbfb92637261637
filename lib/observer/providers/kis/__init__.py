"""KIS (Korea Investment & Securities) provider: rest.py, ws.py, parse.py behind observer.providers.base."""

from observer.providers.kis.provider import KisProvider

__all__ = ["KisProvider"]
