"""`homerun secrets ...`: secrets that --set-secrets passes to instances as env vars."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.errors import HomerunError
from homerun.spec import validate_secret_name

NAME = positional("secret", "NAME", "the secret's name: letters, digits, - and _")
DATA_FILE = flag("--data-file", required=True, metavar="FILE", help="the value's file; - is stdin")


@command(
    "create",
    "a new secret, version 1",
    NAME,
    DATA_FILE,
    examples=[
        (
            "Keep a database URL as the secret db-url",
            "printf %s 'postgres://...' | homerun secrets create db-url --data-file -",
        )
    ],
)
def create(arguments: argparse.Namespace, context: Context) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    data = _data_file(arguments.data_file)
    created = context.client_starting_daemon().create_secret(name, data)
    print(f"Created secret [{name}] version [{created.version}].")
    return 0


@command(
    "list",
    "list secrets with their versions and the revisions that use them",
    flag("--format", choices=["text", "json"], default="text", help="json: for scripts"),
    examples=[("List the secrets", "homerun secrets list")],
)
def list_secrets(arguments: argparse.Namespace, context: Context) -> int:
    secrets = context.client().secrets()
    if arguments.format == "json":
        print_json(secrets)
        return 0
    if not secrets:
        print("No secrets. Create one with `homerun secrets create NAME --data-file FILE`.")
        return 0
    print(f"{'NAME':<32} {'VERSIONS':<9} {'CREATED':<21} USED BY")
    for secret in secrets:
        created = when(secret.created_at) if secret.created_at else "-"
        print(
            f"{secret.name:<32} {secret.versions:<9} {created:<21} "
            f"{', '.join(secret.used_by) or '-'}"
        )
    return 0


@command(
    "delete",
    "delete a secret and all its versions",
    NAME,
    examples=[("Delete the secret db-url without being asked", "homerun secrets delete db-url -q")],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    context.confirm(f"Secret [{name}] and all its versions will be deleted.", quiet=arguments.quiet)
    context.client().delete_secret(name)
    print(f"Deleted secret [{name}].")
    return 0


@command(
    "list",
    "list a secret's versions, newest first",
    NAME,
    flag("--format", choices=["text", "json"], default="text", help="json: for scripts"),
    examples=[("List the versions of db-url", "homerun secrets versions list db-url")],
)
def list_versions(arguments: argparse.Namespace, context: Context) -> int:
    versions = context.client().secret_versions(validate_secret_name(arguments.secret, "NAME"))
    if arguments.format == "json":
        print_json(versions)
        return 0
    print(f"{'VERSION':<8} {'CREATED':<21} SIZE")
    for version in reversed(versions):
        print(f"{version.version:<8} {when(version.created_at):<21} {version.size} B")
    return 0


@command(
    "add",
    "a new version of a secret; `latest` becomes it",
    NAME,
    DATA_FILE,
    examples=[
        ("Rotate db-url from a file", "homerun secrets versions add db-url --data-file new.txt")
    ],
)
def add_version(arguments: argparse.Namespace, context: Context) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    added = context.client().add_secret_version(name, _data_file(arguments.data_file))
    print(f"Created version [{added.version}] of the secret [{name}].")
    return 0


def _data_file(path: str) -> str:
    """A secret's value from a file (`-`: stdin), exactly as it is (a final newline included,
    as in Secret Manager). Errors never quote the content."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as error:
        raise HomerunError(f"--data-file: cannot read {path}: {error.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HomerunError(
            f"--data-file: {path} is not UTF-8 text; homerun passes secrets to instances as "
            "env vars, which hold text"
        ) from None


GROUP = Group(
    "secrets",
    "secrets for --set-secrets: create, list, delete, and their versions",
    (
        create,
        list_secrets,
        delete,
        Group("versions", "list or add versions of a secret", (list_versions, add_version)),
    ),
)
