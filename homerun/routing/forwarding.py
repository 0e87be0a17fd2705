"""What an instance is told of a client's request: the head it gets, with the client's headers
less hop-by-hop ones, X-Forwarded-For and Forwarded naming the client, the platform's ID tokens
without their signature, and both trace headers (routing/trace.py).

Called once per request by the client connection (client.py), which parsed the head."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from homerun.routing._hosts import quoted
from homerun.routing._http import without_named
from homerun.routing.trace import trace_context

if TYPE_CHECKING:
    from homerun.routing.client import ClientConnection

_random_bits = random.getrandbits
# The request head an instance gets, by the scheme the client used: method, target, headers,
# X-Forwarded-For, Forwarded, the rest.
HEAD_FORMATS = {
    scheme: b"%%s %%s HTTP/1.1\r\n%%sx-forwarded-for: %%s\r\nx-forwarded-proto: %s\r\n"
    b"forwarded: %%s\r\n%%s\r\n" % scheme
    for scheme in (b"http", b"https")
}


def upstream_head(client: ClientConnection, method: bytes, host: bytes, is_upgrade: bool) -> bytes:
    """The request head as the instance gets it: HTTP/1.1, keep-alive, forwarding added."""
    header_pieces = client.header_pieces
    if client.connection_options is not None:
        header_pieces = without_named(header_pieces, client.connection_options)
    address = client.client_address
    hops = client.forwarded_for
    forwarded_for = address if hops is None else hops + b", " + address
    if host != client.node_host:  # a client names the same host request after request
        client.node_host = host
        client.node = b"%s;proto=%s;host=%s" % (client.forwarded_node, client.scheme, quoted(host))
    node = client.node
    forwarded = node if client.forwarded is None else client.forwarded + b", " + node
    extra = b""
    # An ID token of this platform reaches the app without its signature (see Router).
    if client.authorization is not None:
        extra += b"authorization: %s\r\n" % client.router.forwarded_authorization(
            client.authorization
        )
    if client.serverless_authorization is not None:
        extra += b"x-serverless-authorization: %s\r\n" % client.router.forwarded_authorization(
            client.serverless_authorization
        )
    if client.chunked:
        extra += b"transfer-encoding: chunked\r\n"
    if is_upgrade:
        extra += b"connection: upgrade\r\nupgrade: %s\r\n" % client.upgrade_protocol
    # Both trace headers, as Cloud Run sends them (routing/trace.py).
    trace = trace_context(client.traceparent, client.cloud_trace, _random_bits)
    client.trace = trace.traceparent
    extra += b"traceparent: %s\r\nx-cloud-trace-context: %s\r\n" % (
        trace.traceparent,
        trace.cloud,
    )
    return client.head_format % (
        method, client.url, b"".join(header_pieces), forwarded_for, forwarded, extra,
    )  # fmt: skip


def replace_host(header_pieces: list[bytes], authority: bytes) -> None:
    """The Host header the instance gets is `authority` (the absolute form's, which wins over
    the client's Host): `header_pieces` as the client connection keeps them (name, ": ",
    value, CRLF)."""
    for start in range(0, len(header_pieces), 4):
        if header_pieces[start].lower() == b"host":
            header_pieces[start + 2] = authority
            return
    header_pieces += (b"host", b": ", authority, b"\r\n")
