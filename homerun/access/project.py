"""The Google Cloud project a homerun platform stands in for: its id (config.yaml's `project`),
a project number derived from it, its region, and the e-mail addresses of its service accounts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from homerun.errors import InvalidSpec

DEFAULT_PROJECT = "homerun-local"
# What `instance/region` names. Apps mostly print it or put it in log labels; a name that is
# no real region keeps anyone from mistaking a local instance for one in us-central1.
REGION = "local"
SERVICE_ACCOUNT_DOMAIN = "iam.gserviceaccount.com"

# Google's rule for project ids: 6-30 lowercase letters, digits and hyphens, starting with a
# letter and not ending with a hyphen.
_PROJECT_ID = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")


def check_project_id(text: str, where: str = "project") -> str:
    if not _PROJECT_ID.match(text):
        raise InvalidSpec(
            f"{where}: {text!r} is not a project id: use 6-30 lowercase letters, digits and "
            f"hyphens, starting with a letter and not ending with a hyphen (e.g. {DEFAULT_PROJECT})"
        )
    return text


@dataclass(frozen=True)
class Project:
    id: str = DEFAULT_PROJECT
    region: str = REGION

    @property
    def number(self) -> int:
        """A 12-digit number, as Google's project numbers are, the same for the same id on every
        machine: apps that log or compare `numeric-project-id` see a stable value."""
        digest = hashlib.sha256(self.id.encode()).digest()
        return 100_000_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000_000

    @property
    def region_path(self) -> str:
        """`instance/region` as Cloud Run answers it: projects/NUMBER/regions/REGION."""
        return f"projects/{self.number}/regions/{self.region}"

    @property
    def zone_path(self) -> str:
        """`instance/zone`: Cloud Run names a zone of the region the same way."""
        return f"projects/{self.number}/zones/{self.region}-1"

    def account_email(self, name: str) -> str:
        """A service account's address: an e-mail stays as it is; a bare name (a service's own
        account, `serviceAccount:SERVICE`) is NAME@PROJECT.iam.gserviceaccount.com."""
        return name if "@" in name else f"{name}@{self.id}.{SERVICE_ACCOUNT_DOMAIN}"
