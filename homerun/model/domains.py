"""The nouns of domain mappings (`homerun domain-mappings`): a domain of the user's, routed to a
service as Cloud Run's and Knative's DomainMapping route it."""

from __future__ import annotations

import ipaddress
import re

from homerun.errors import InvalidSpec

# A DNS label: letters, digits and hyphens, 1-63 of them, not starting or ending with a hyphen.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_DOMAIN = 253


def validate_domain(domain: str, platform_domain: str) -> str:
    """The domain as routed (lowercase, no trailing dot), or InvalidSpec saying what is wrong
    with it. Service hosts (`NAME.localhost`) are the platform's: a mapping there would hide
    a service, so names under the platform's domain are refused."""
    name = domain.strip().rstrip(".").lower()
    shown = domain[:80]
    if not name:
        raise InvalidSpec("--domain: required, a domain name such as app.example.com")
    if name.startswith("*"):
        raise InvalidSpec(
            f"--domain {shown!r}: a domain mapping names one domain; wildcards are not mapped "
            "(map each name, e.g. www.example.com and example.com)"
        )
    if _is_address(name):
        raise InvalidSpec(
            f"--domain {shown!r}: an IP address is not a domain; map a name that resolves to "
            "this machine (e.g. app.example.com)"
        )
    platform = platform_domain.rstrip(".").lower()
    if name == platform or name.endswith("." + platform):
        raise InvalidSpec(
            f"--domain {shown!r}: names under {platform} are homerun's own service URLs "
            f"(SERVICE.{platform}); map a domain of yours instead"
        )
    labels = name.split(".")
    if len(name) > _MAX_DOMAIN or len(labels) < 2 or not all(map(_LABEL.match, labels)):
        raise InvalidSpec(
            f"--domain {shown!r}: not a domain name: use two or more labels of letters, digits "
            "and hyphens separated by dots (each 1-63 characters, not starting or ending with "
            f"a hyphen; at most {_MAX_DOMAIN} in all), e.g. app.example.com"
        )
    return name


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
