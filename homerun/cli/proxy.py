"""`homerun services proxy SERVICE`: a local port that reaches a private service as you, as
`gcloud run services proxy` does (cli/_proxy.py forwards the requests)."""

from __future__ import annotations

import argparse
import errno
import getpass
import socket
import urllib.parse

import uvicorn

from homerun.access.iam import user_member
from homerun.cli._commands import command, flag, positional
from homerun.cli._context import Context
from homerun.cli._proxy import ServiceProxy, TokenSource
from homerun.errors import HomerunError
from homerun.runtime.nat import read_nat_rules, redirected_ports, unredirected_server
from homerun.spec import validate_service_name

DEFAULT_PORT = 8080  # gcloud's


@command(
    "proxy",
    "a local port forwarding to a service with your identity (for private services)",
    positional("service", "SERVICE", "the service's name"),
    flag(
        "--port",
        type=int,
        metavar="PORT",
        help=f"the local port (default: {DEFAULT_PORT}, as gcloud; a free one when homerun's "
        "router or anything else holds it)",
    ),
    flag("--tag", help="reach the revision of this tag, at its own URL"),
    examples=[
        (
            "Open the private service hello in a browser at http://127.0.0.1:9000",
            "homerun services proxy hello --port 9000",
        )
    ],
    description="Listens on 127.0.0.1:PORT until Ctrl-C. Every request goes to the service "
    "through homerun's router with an ID token of yours for the service's URL (minted again "
    "before it expires) in X-Serverless-Authorization, so an app's own Authorization header "
    "passes unchanged. WebSocket upgrades are not proxied.",
)
def proxy(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    client = context.client()
    described = client.describe(service)
    url = described.url
    if arguments.tag:
        tagged = {route.tag: route.url for route in described.traffic if route.tag and route.url}
        if arguments.tag not in tagged:
            known = ", ".join(sorted(tagged)) or "none"
            raise HomerunError(
                f"--tag: service {service} has no tag {arguments.tag!r} (its tags: {known})"
            )
        url = tagged[arguments.tag]
    router = client.status().router
    member = user_member(getpass.getuser())
    tokens = TokenSource(lambda: client.identity_token(member, url).token)
    tokens()  # a refusal (an unknown user, a daemon gone) shows now, not at the first request
    listener = _listen(arguments.port)
    port = listener.getsockname()[1]
    host = urllib.parse.urlsplit(url).netloc
    print(f"Proxying to homerun service [{service}] at {url} as {member}", flush=True)
    if arguments.port is None and port != DEFAULT_PORT:
        print(f"Port {DEFAULT_PORT} is taken; listening on {port} instead (--port chooses).")
    print(f"http://127.0.0.1:{port} proxies to {url}; Ctrl-C stops it", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            ServiceProxy(router, host, tokens),
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
    )
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0


def _listen(port: int | None) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", DEFAULT_PORT if port is None else port))
    except OSError as error:
        if port is not None or error.errno != errno.EADDRINUSE:
            listener.close()
            raise HomerunError(
                f"cannot listen on 127.0.0.1:{port}: {error.strerror}; choose another --port"
            ) from None
        listener.close()
        return unredirected_server("127.0.0.1", redirected_ports(read_nat_rules()))
    listener.listen(128)
    return listener
