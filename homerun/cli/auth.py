"""`homerun auth print-identity-token`: ID tokens for calling private services."""

from __future__ import annotations

import argparse
import getpass

from homerun.access.iam import SERVICE_ACCOUNT_PREFIX, parse_member, user_member
from homerun.cli._commands import Group, command, flag, one_of
from homerun.cli._context import Context
from homerun.spec import check_service_account


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
            metavar="EMAIL",
            help="a token of a service account: NAME@PROJECT.iam.gserviceaccount.com, or SERVICE "
            "for the account a service's instances call with by default",
        ),
    ),
    flag(
        "--include-email",
        action="store_true",
        help="accepted as gcloud takes it; homerun's tokens always carry email",
    ),
    examples=[
        (
            "Call the private service hello",
            'curl -H "Authorization: Bearer $(homerun auth print-identity-token)" '
            "http://hello.localhost:8080",
        ),
        (
            "A token of the service account the service web calls with, for hello only",
            "homerun auth print-identity-token --impersonate-service-account "
            "web@homerun-local.iam.gserviceaccount.com --audiences http://hello.localhost:8080",
        ),
    ],
)
def print_identity_token(arguments: argparse.Namespace, context: Context) -> int:
    """The token alone on the last line, as gcloud prints it: `$(homerun auth ...)` works."""
    if arguments.impersonate_service_account:
        flag_name = "--impersonate-service-account"
        account = check_service_account(arguments.impersonate_service_account, flag_name)
        member = parse_member(SERVICE_ACCOUNT_PREFIX + account, flag_name)
    else:
        member = user_member(arguments.account or getpass.getuser())
    minted = context.client().identity_token(member, arguments.audiences)
    print(minted.token)
    return 0


GROUP = Group("auth", "ID tokens for calling private services", (print_identity_token,))
