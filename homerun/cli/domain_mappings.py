"""`homerun domain-mappings ...`: gcloud's `run domain-mappings`, a domain of yours routed to a
service (create, describe, list, delete)."""

from __future__ import annotations

import argparse

import yaml

from homerun.cli._commands import Group, command, flag
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.model.views import DomainMappingView

DOMAIN = flag("--domain", required=True, metavar="DOMAIN", help="the domain, e.g. app.example.com")
FORMAT = flag(
    "--format",
    choices=["text", "json", "yaml"],
    default="text",
    help="json: homerun's summary; yaml: a Knative DomainMapping",
)


@command(
    "create",
    "map a domain of yours to a service",
    flag("--service", required=True, metavar="SERVICE", help="the service the domain routes to"),
    DOMAIN,
    flag(
        "--force-override",
        action="store_true",
        help="map the domain even if it is mapped to another service now (that mapping ends)",
    ),
    examples=[
        (
            "Route app.example.com to the service helloworld",
            "homerun domain-mappings create --service helloworld --domain app.example.com",
        )
    ],
    description="Route requests whose Host is DOMAIN to SERVICE, as its own URL is routed (its "
    "traffic split, its access check; tag URLs stay on the service's own host). Point the "
    "domain at this machine (a DNS record, or a line in /etc/hosts). On the HTTPS port "
    "(config.yaml's https-port) a handshake naming the domain gets a certificate for it from "
    "tls-certificates-dir, else the default certificate, else one of homerun's local "
    "authority; `describe` says which.",
)
def create(arguments: argparse.Namespace, context: Context) -> int:
    mapping = context.client().create_domain_mapping(
        arguments.domain, arguments.service, force_override=arguments.force_override
    )
    print(f"Mapped domain [{mapping.domain}] to service [{mapping.service}].")
    _print_access(mapping)
    return 0


@command(
    "describe",
    "a domain mapping: its service, URLs, certificate and readiness",
    DOMAIN,
    FORMAT,
    examples=[
        ("See a domain mapping", "homerun domain-mappings describe --domain app.example.com")
    ],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    mapping = context.client().domain_mapping(arguments.domain)
    if arguments.format == "json":
        print_json(mapping)
        return 0
    if arguments.format == "yaml":
        print(yaml.safe_dump(knative_domain_mapping(mapping), sort_keys=False), end="")
        return 0
    state = "ready" if mapping.ready else f"not ready: {mapping.reason}"
    print(f"Domain mapping {mapping.domain}")
    print(f"  Service:      {mapping.service}")
    print(f"  Status:       {state}")
    print(f"  Created:      {when(mapping.created_at)}")
    _print_access(mapping)
    return 0


@command(
    "list",
    "list domain mappings",
    flag("--service", metavar="SERVICE", help="only the mappings to this service"),
    flag("--format", choices=["text", "json"], default="text", help="json: homerun's summaries"),
    examples=[("List domain mappings", "homerun domain-mappings list")],
)
def list_mappings(arguments: argparse.Namespace, context: Context) -> int:
    mappings = context.client().domain_mappings(arguments.service)
    if arguments.format == "json":
        print_json(mappings)
        return 0
    print(f"{'DOMAIN':<40} {'SERVICE':<32} {'READY':<6} URL")
    for mapping in mappings:
        ready = "True" if mapping.ready else "False"
        print(f"{mapping.domain:<40} {mapping.service:<32} {ready:<6} {mapping.url}")
    return 0


@command(
    "delete",
    "delete a domain mapping: the domain is no longer routed",
    DOMAIN,
    examples=[
        (
            "Delete a domain mapping without being asked",
            "homerun domain-mappings delete --domain app.example.com -q",
        )
    ],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    context.confirm(f"Mapping [{arguments.domain}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_domain_mapping(arguments.domain)
    print(f"Deleted domain mapping [{arguments.domain}].")
    return 0


def _print_access(mapping: DomainMappingView) -> None:
    print(f"  URL:          {mapping.url}")
    if mapping.https_url:
        print(f"  HTTPS URL:    {mapping.https_url}")
    print(f"  Certificate:  {mapping.certificate}")
    print(f"  Reach it:     {mapping.reach}")


def knative_domain_mapping(mapping: DomainMappingView) -> dict[str, object]:
    """The mapping as Knative's DomainMapping (serving.knative.dev/v1beta1), to apply on a
    cluster beside the exported service."""
    return {
        "apiVersion": "serving.knative.dev/v1beta1",
        "kind": "DomainMapping",
        "metadata": {"name": mapping.domain},
        "spec": {
            "ref": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": mapping.service,
            }
        },
    }


GROUP = Group(
    "domain-mappings",
    "domain mappings: a domain of yours routed to a service",
    (create, describe, list_mappings, delete),
)
