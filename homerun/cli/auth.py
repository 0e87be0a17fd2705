"""`homerun auth print-identity-token`: ID tokens for calling private services."""

from __future__ import annotations

import argparse
import getpass

from homerun.access.iam import SERVICE_ACCOUNT_PREFIX, parse_member, user_member
from homerun.cli._commands import Group, command, flag, one_of
from homerun.cli._context import Context


@command(
    "print-identity-token",
    "an ID token (valid 1 h), alone on the last line",
    flag(
        "--audiences",
        metavar="URL",
        help="the service URL it is for (default: every service of this homerun)",
    ),
    one_of(
        flag("--account", help="the user (default: your OS user name)"),
        flag(
            "--impersonate-service-account",
            metavar="SERVICE",
            help="a token of the identity SERVICE's instances call with",
        ),
    ),
    examples=[
        (
            "Call the private service hello",
            'curl -H "Authorization: Bearer $(homerun auth print-identity-token)" '
            "http://hello.localhost:8080",
        )
    ],
)
def print_identity_token(arguments: argparse.Namespace, context: Context) -> int:
    """The token alone on the last line, as gcloud prints it: `$(homerun auth ...)` works."""
    if arguments.impersonate_service_account:
        member = parse_member(
            SERVICE_ACCOUNT_PREFIX + arguments.impersonate_service_account,
            "--impersonate-service-account",
        )
    else:
        member = user_member(arguments.account or getpass.getuser())
    minted = context.client().identity_token(member, arguments.audiences)
    print(minted.token)
    return 0


GROUP = Group("auth", "ID tokens for calling private services", (print_identity_token,))
