"""What a request's target and Host say, for the client connection: the authority of an
absolute-form target, a Host naming a port that is not the router's, and a host quoted for
the Forwarded header."""

from __future__ import annotations

from homerun.routing.table import InvalidPort, split_port


def split_absolute(url: bytes) -> tuple[bytes | None, bytes]:
    """`http://host:port/path?q` -> (b"host:port", b"/path?q"); (None, url) if not an URL."""
    scheme, separator, rest = url.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return None, url
    cut = len(rest)
    for delimiter in (b"/", b"?"):
        position = rest.find(delimiter)
        if position != -1:
            cut = min(cut, position)
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        return None, url
    return authority, path if path.startswith(b"/") else b"/" + path


def port_refusal(host: bytes, ports: frozenset[int]) -> tuple[int, str] | None:
    """Why a Host (or an absolute target's authority) naming a port is not for this router, if
    it is not: 400 for a port that cannot be, 404 for another port, as for an unknown host."""
    text = host.decode("latin-1")
    try:
        _, port = split_port(text)
    except InvalidPort as invalid:
        return (400, f"the Host header's port is not valid: {invalid}")
    if port is None or port in ports:
        return None
    listening = ", ".join(str(each) for each in sorted(ports))
    return (404, f"no service answers at {text}: this router listens on port {listening}")


def quoted(value: bytes) -> bytes:
    """An RFC 7239 quoted-string: a host with a port is not a token."""
    return b'"%s"' % value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
