"""`homerun services add-iam-policy-binding`, `remove-iam-policy-binding`, `get-iam-policy`:
who may invoke a service."""

from __future__ import annotations

import argparse

from homerun.access.iam import INVOKER_ROLE, check_role, parse_member
from homerun.cli._commands import Flag, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_document
from homerun.spec import validate_service_name

SERVICE = positional("service", "SERVICE", "the service's name")
BINDING: tuple[Flag, ...] = (
    flag(
        "--member",
        required=True,
        help="user:NAME, serviceAccount:SERVICE (its instances), allUsers or allAuthenticatedUsers",
    ),
    flag("--role", required=True, help=f"the role; homerun has one: {INVOKER_ROLE}"),
)


@command(
    "add-iam-policy-binding",
    "let a member invoke a service",
    SERVICE,
    *BINDING,
    examples=[
        (
            "Let the instances of the service frontend call backend",
            "homerun services add-iam-policy-binding backend "
            f"--member serviceAccount:frontend --role {INVOKER_ROLE}",
        )
    ],
)
def add_binding(arguments: argparse.Namespace, context: Context) -> int:
    return _change_binding(arguments, context, add=True)


@command(
    "remove-iam-policy-binding",
    "stop a member from invoking a service",
    SERVICE,
    *BINDING,
    examples=[
        (
            "Make hello private again after --allow-unauthenticated",
            "homerun services remove-iam-policy-binding hello --member allUsers "
            f"--role {INVOKER_ROLE}",
        )
    ],
)
def remove_binding(arguments: argparse.Namespace, context: Context) -> int:
    return _change_binding(arguments, context, add=False)


def _change_binding(arguments: argparse.Namespace, context: Context, *, add: bool) -> int:
    service = validate_service_name(arguments.service)
    member, role = parse_member(arguments.member), check_role(arguments.role)
    client = context.client()
    change = client.add_iam_binding if add else client.remove_iam_binding
    policy = change(service, member, role)
    print(f"Updated IAM policy for service [{service}].")
    print_document(policy.model_dump(mode="json"), "yaml")
    return 0


@command(
    "get-iam-policy",
    "who may invoke a service",
    SERVICE,
    flag("--format", choices=["yaml", "json"], default="yaml", help="how to print the policy"),
    examples=[("See who may invoke hello", "homerun services get-iam-policy hello")],
)
def get_policy(arguments: argparse.Namespace, context: Context) -> int:
    policy = context.client().iam_policy(validate_service_name(arguments.service))
    print_document(policy.model_dump(mode="json"), arguments.format)
    return 0
