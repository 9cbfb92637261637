"""FrameReader on a real socket pair: frames built by websocket-client's own encoder, delivered whole,
byte by byte and across reads; fragmentation, control frames in between, and every protocol error."""

import random
import socket
import threading

import pytest
import websocket
from websocket import ABNF

from observer.providers.wsframes import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, FrameReader


def frame(op: int, data: bytes, fin: bool = True, mask: bool = False, rsv1: int = 0) -> bytes:
    f = ABNF(fin=int(fin), rsv1=rsv1, rsv2=0, rsv3=0, opcode=op, mask_value=int(mask), data=data)
    return f.format()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(2.0)
    yield a, b
    a.close()
    b.close()


def send_in_pieces(sock: socket.socket, blob: bytes, sizes) -> threading.Thread:
    """Write `blob` in pieces of the given sizes from another thread (the reader sees partial frames)."""
    def run():
        i = 0
        for n in sizes:
            if i >= len(blob):
                break
            sock.sendall(blob[i:i + n])
            i += n
        if i < len(blob):
            sock.sendall(blob[i:])
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


MESSAGES = [b"0|H0STCNT0|001|005930^093001^70000", b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536,
            b"v" * 300_000, b""]


@pytest.mark.parametrize("piece", [1, 7, 4096, 10**7], ids=["bytewise", "7", "4k", "whole"])
def test_messages_of_every_length_class_arrive_intact(pair, piece):
    a, b = pair
    blob = b"".join(frame(OP_TEXT, m) for m in MESSAGES)
    if piece == 1:  # byte by byte would take long for 300 kB: only the small messages
        blob = b"".join(frame(OP_TEXT, m) for m in MESSAGES[:3])
    t = send_in_pieces(b, blob, [piece] * (len(blob) // piece + 1))
    r = FrameReader(a)
    want = MESSAGES[:3] if piece == 1 else MESSAGES
    got = [r.recv() for _ in want]
    t.join(5)
    assert got == [(OP_TEXT, m) for m in want]


def test_random_splits_of_a_long_stream(pair):
    a, b = pair
    rnd = random.Random(7)
    msgs = [bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 5, 125, 126, 400, 70000]))) for _ in range(60)]
    blob = b"".join(frame(OP_BINARY, m) for m in msgs)
    sizes = [rnd.randint(1, 3000) for _ in range(len(blob) // 1500 + 1)]
    t = send_in_pieces(b, blob, sizes)
    r = FrameReader(a)
    assert [r.recv() for _ in msgs] == [(OP_BINARY, m) for m in msgs]
    t.join(5)


def test_fragmented_message_with_a_ping_between_fragments(pair):
    a, b = pair
    b.sendall(frame(OP_TEXT, b"0|H0ST", fin=False) + frame(OP_PING, b"hi") + frame(OP_CONT, b"CNT0|", fin=False)
              + frame(OP_CONT, b"001|x") + frame(OP_PONG, b"") + frame(OP_CLOSE, b"\x03\xe8"))
    r = FrameReader(a)
    assert r.recv() == (OP_PING, b"hi")  # control frames may come between fragments (RFC 6455 §5.4)
    assert r.recv() == (OP_TEXT, b"0|H0STCNT0|001|x")
    assert r.recv() == (OP_PONG, b"")
    assert r.recv() == (OP_CLOSE, b"\x03\xe8")


@pytest.mark.parametrize("blob, match", [
    (frame(OP_TEXT, b"hello", mask=True), "masked"),
    (frame(OP_TEXT, b"hello", rsv1=1), "reserved bits"),
    (frame(OP_CONT, b"orphan"), "continuation frame without"),
    (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), "new message began"),
    (frame(OP_PING, b"p" * 126), "control frame"),
    (frame(OP_PING, b"p", fin=False), "control frame"),
    (bytes([0x83, 0x01, 0x41]), "unknown opcode 3"),
])
def test_protocol_errors_are_named(pair, blob, match):
    a, b = pair
    b.sendall(blob)
    with pytest.raises(websocket.WebSocketProtocolException, match=match):
        FrameReader(a).recv()


def test_size_bound_applies_to_frames_and_fragmented_messages(pair):
    a, b = pair
    b.sendall(bytes([0x81, 127]) + (2**40).to_bytes(8, "big"))
    with pytest.raises(websocket.WebSocketProtocolException, match="exceeds"):
        FrameReader(a).recv()
    c, d = socket.socketpair()
    try:
        d.sendall(frame(OP_TEXT, b"a" * 600, fin=False) + frame(OP_CONT, b"b" * 600))
        with pytest.raises(websocket.WebSocketProtocolException, match="fragmented message exceeds"):
            FrameReader(c, max_message=1000).recv()
    finally:
        c.close()
        d.close()


def test_timeout_keeps_a_partial_frame_and_eof_is_reported(pair):
    a, b = pair
    a.settimeout(0.05)
    whole = frame(OP_TEXT, b"0|H0STCNT0|001|abc")
    b.sendall(whole[:5])
    r = FrameReader(a)
    with pytest.raises(websocket.WebSocketTimeoutException):
        r.recv()
    b.sendall(whole[5:])
    assert r.recv() == (OP_TEXT, b"0|H0STCNT0|001|abc")
    b.close()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        r.recv()
