"""Image names as Cloud Run takes them (`gcr.io/PROJECT/NAME:TAG`), and what the image store
and its builds report: pure values, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from homerun.errors import HomerunError
from homerun.model.events import BuildLine, Failed, Phase

DEFAULT_TAG = "latest"

# The grammar of distribution/reference (what docker, podman and Artifact Registry accept):
# path components of lowercase letters and digits joined by ".", "_", "__" or dashes; a first
# component with a "." or ":" in it, or "localhost", names the registry.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_NAME = 255  # distribution/reference's limit on the name (registry and path)
_EXAMPLES = "gcr.io/PROJECT/NAME, REGION-docker.pkg.dev/PROJECT/REPO/NAME or localhost/NAME[:TAG]"


class InvalidImageName(HomerunError):
    """An image name that does not parse."""


@dataclass(frozen=True)
class ImageName:
    """`registry/path[:tag][@sha256:digest]`; `registry` is "" for a name without one
    (`helloworld`, which docker would look for on Docker Hub)."""

    registry: str
    path: str
    tag: str | None = None
    digest: str | None = None  # "sha256:…"

    @property
    def repository(self) -> str:
        """The name without tag or digest: `gcr.io/my-project/helloworld`."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    @property
    def tagged(self) -> str:
        """The name the store keeps: with its tag, `latest` when none is written."""
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    def pinned(self, digest: str) -> str:
        """The name a revision records: the repository at one digest (Cloud Run pins it)."""
        return f"{self.repository}@{_sha256(digest)}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_name(text: str, where: str = "image") -> ImageName:
    """Read an image name; InvalidImageName says what is wrong with it and what to write."""
    original = text
    if not text or text != text.strip():
        raise _invalid(where, original, "it is empty or has spaces around it")
    if "://" in text:
        raise _invalid(where, original, "an image name has no scheme (drop the http://)")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise _invalid(where, original, "the part after @ is not sha256: and 64 hex digits")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG.match(tag):
            raise _invalid(
                where,
                original,
                f"the tag {tag!r} may hold letters, digits, '_', '.' and '-' (at most 128, "
                "not starting with '.' or '-')",
            )
    registry, _, path = text.partition("/")
    if not path or not ("." in registry or ":" in registry or registry == "localhost"):
        registry, path = "", text
    elif not _DOMAIN.match(registry):
        raise _invalid(where, original, f"{registry!r} is not a registry host[:port]")
    if not _PATH.match(path):
        hint = "use lowercase letters" if path.lower() != path else "check the characters"
        raise _invalid(
            where,
            original,
            f"{path!r} is not a repository path ({hint}: lowercase letters and digits, "
            "separated by '/', '.', '_' or '-')",
        )
    if len(f"{registry}/{path}") > _MAX_NAME:
        raise _invalid(where, original, f"the name is longer than {_MAX_NAME} characters")
    return ImageName(registry=registry, path=path, tag=tag, digest=digest)


def _invalid(where: str, text: str, reason: str) -> InvalidImageName:
    return InvalidImageName(f"{where}: {text!r} is not an image name: {reason}; write {_EXAMPLES}")


def _sha256(digest: str) -> str:
    return digest if digest.startswith("sha256:") else f"sha256:{digest}"


# What the image store reports -------------------------------------------------------------


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ImageSummary(_View):
    """One name in the local image store (`homerun images list`)."""

    name: str  # repository:tag
    digest: str  # sha256:…
    created_at: float
    build: str | None = None  # the build that made it
    source: str | None = None  # the folder it was built from
    runtime: str = "homerun"  # "homerun": an engine-less artifact; "podman": podman's image


class BuildSummary(_View):
    """One `builds submit` (`homerun builds list`), as Cloud Build lists builds."""

    id: str
    created_at: float
    duration_seconds: float | None = None
    source: str
    images: list[str]
    status: Literal["WORKING", "SUCCESS", "FAILURE"]
    digest: str | None = None
    detail: str | None = None  # why it failed


class PushedImage(_View):
    """`homerun images push`: where the image went, and the digest the registry knows."""

    name: str  # registry/path:tag
    digest: str  # sha256:… (the registry's: the manifest's digest)
    pinned: str  # registry/path@sha256:…, what a Knative Service or Cloud Run references


class BuildRequest(_View):
    """What `homerun builds submit` sends to the daemon."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str  # absolute path of the folder on the daemon's machine
    tag: str  # the image name, as given


class Built(BaseModel):
    """The build is over: the image is in the store under `image`, with `digest`."""

    model_config = ConfigDict(frozen=True)

    event: Literal["built"] = "built"
    build: str
    image: str
    digest: str
    duration_seconds: float


BuildEvent = Annotated[BuildLine | Phase | Built | Failed, Field(discriminator="event")]
BUILD_EVENT: TypeAdapter[BuildEvent] = TypeAdapter(BuildEvent)


def parse_build_event(line: bytes | str) -> BuildEvent:
    return BUILD_EVENT.validate_json(line)
