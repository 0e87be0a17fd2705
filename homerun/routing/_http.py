"""What the client connection, the exchange and the upstream connection share: the hop-by-hop
header rules, the router's own error responses and the reasons to stop reading a client."""

from __future__ import annotations

from http import HTTPStatus

# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, so they stop here; the
# router frames bodies itself and says itself whether a connection stays open.
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade")
)  # fmt: skip
# Connection options that name no header, and headers a Connection option may not remove
# (dropping Content-Length would leave the instance reading the body as the next request).
_CONNECTION_KEYWORDS = frozenset((b"close", b"keep-alive", b"upgrade"))
_NEVER_DROPPED = frozenset((b"host", b"content-length"))

# Reasons to stop reading from a client, as bits; reading resumes once none is left.
UPSTREAM_FULL = 1  # the instance is not taking the request body as fast as it arrives
BODY_BUFFER_FULL = 2  # body bytes arrived before the connection to an instance did
PIPELINED = 4  # a later request waits behind the one in flight
UNPARSABLE = 8  # a malformed request: nothing after it can be read as HTTP

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def error_response(status: int, message: str, *, close: bool, with_body: bool) -> bytes:
    """A short text/plain response that the router writes itself; a 200 is one of the
    platform's JSON documents (Router.platform_document)."""
    body = message.encode() + b"\n"
    content_type = b"application/json" if status == 200 else b"text/plain; charset=utf-8"
    return b"HTTP/1.1 %d %s\r\n%s%s%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Error"),
        b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body)),
        # The router's own 401s all ask for an ID token (RFC 6750).
        b"www-authenticate: Bearer\r\n" if status == 401 else b"",
        b"connection: close\r\n" if close else b"",
        body if with_body else b"",
    )


def without_named(header_pieces: list[bytes], options: bytes) -> list[bytes]:
    """Drop the headers that a Connection header names: they are hop-by-hop as well."""
    if options.lower() in _CONNECTION_KEYWORDS:
        return header_pieces  # what nearly every app sends: one keyword, no header named
    named = {option.strip().lower() for option in options.split(b",")}
    named -= _CONNECTION_KEYWORDS | _NEVER_DROPPED
    if not named:
        return header_pieces
    kept = []
    for start in range(0, len(header_pieces), 4):
        if header_pieces[start].lower() not in named:
            kept += header_pieces[start : start + 4]
    return kept
