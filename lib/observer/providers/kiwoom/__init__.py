"""Kiwoom Securities REST API (2025): the wire-level adapter.

parse.py decodes WebSocket messages into trade/book records and builds the client's LOGIN/REG/REMOVE
messages; protocol.py builds REST requests and reads their replies (tokens, quotes, tick and minute
charts, return codes -> provider errors); rest.py is a small REST client over both. Not yet a
registered provider: docs/providers/kiwoom.md.
"""
