"""How an HTTP/1.1 connection turns into an HTTP/2 one (h2c, RFC 9113 section 3): the
preface of a client with prior knowledge, and an `Upgrade: h2c` request as HTTP/2 headers.
Pure functions over what the client connection parsed; http2.py serves what they find."""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Headers = list[tuple[bytes, bytes]]


def after_preface(data: bytes, seen: int) -> bytes | None:
    """llhttp stops at the end of the preface (`PRI * HTTP/2.0`); with `seen` preface bytes in
    earlier reads and `data` the read it stopped in: what the HTTP/2 side is to read, preface
    and all, or None if this was no preface."""
    if seen >= len(PREFACE) or data[: len(PREFACE) - seen] != PREFACE[seen:]:
        return None
    return PREFACE + data[len(PREFACE) - seen :]


def upgrade_request(
    method: bytes,
    url: bytes,
    host: bytes,
    header_pieces: list[bytes],
    forwarded: Headers,
) -> tuple[bytes, Headers] | None:
    """An `Upgrade: h2c` request as (HTTP2-Settings, the request as HTTP/2 headers), or None
    when it does not carry exactly one HTTP2-Settings. `header_pieces` are the forwarded
    headers as the client connection keeps them (name, ": ", value, CRLF); `forwarded` the
    ones it took out (X-Forwarded-For, Forwarded, Authorization...)."""
    settings = [header_pieces[at + 2] for at in range(0, len(header_pieces), 4)
                if header_pieces[at].lower() == b"http2-settings"]  # fmt: skip
    if len(settings) != 1:
        return None
    request = [
        (b":method", method), (b":scheme", b"http"), (b":authority", host), (b":path", url),
    ]  # fmt: skip
    for at in range(0, len(header_pieces), 4):
        name = header_pieces[at].lower()
        if name not in (b"host", b"http2-settings"):
            request.append((name, header_pieces[at + 2]))
    return settings[0], request + forwarded
