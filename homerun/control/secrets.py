"""Secrets: the values a revision reads, masking them in errors, and `homerun secrets`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homerun.errors import InvalidSpec, NotFound
from homerun.model.limits import DEFAULT_MEMORY, memory_bytes
from homerun.model.views import SecretSummary, SecretVersionCreated, SecretVersionView
from homerun.model.volumes import MemoryMount, Mounts, SecretFile
from homerun.secret_store import SecretStore
from homerun.spec import LATEST_VERSION, RevisionSpec
from homerun.store import Store

# Shorter secret values are not masked in error messages: "[secret X]" for every "ab" in a
# log tail would mangle it and say more than it hides.
_MIN_REDACTED = 4


class SecretValues:
    """What revisions read from the secret store (no writes)."""

    def __init__(self, secrets: SecretStore) -> None:
        self._secrets = secrets

    def check(self, spec: RevisionSpec) -> None:
        """InvalidSpec unless every secret version the spec reads exists."""
        for variable, ref in {**spec.secrets, **spec.secret_files}.items():
            try:
                self._secrets.resolve(ref)
            except NotFound as error:
                raise InvalidSpec(f"{variable}={ref}: {error}") from None

    def env(self, spec: RevisionSpec) -> dict[str, str]:
        return {variable: self._secrets.resolve(ref) for variable, ref in spec.secrets.items()}

    def mounts(self, spec: RevisionSpec) -> Mounts:
        """The spec's secret files with their values read now, and its in-memory volumes."""
        return Mounts(
            secret_files=tuple(
                SecretFile(path, self._secrets.resolve(ref).encode())
                for path, ref in sorted(spec.secret_files.items())
            ),
            memory=tuple(
                MemoryMount(path, _volume_bytes(spec, name))
                for path, name in sorted(spec.volume_mounts.items())
            ),
        )

    def redact(self, text: str, spec: RevisionSpec) -> str:
        """Errors quote the app's last log lines; a secret's value never leaves with them."""
        for variable, ref in {**spec.secrets, **spec.secret_files}.items():
            try:
                value = self._secrets.resolve(ref)
            except NotFound:
                continue
            for piece in {value, value.strip()}:
                if len(piece) >= _MIN_REDACTED:
                    text = text.replace(piece, f"[secret {variable}]")
        return text


def _volume_bytes(spec: RevisionSpec, volume: str) -> int:
    """Its size-limit; without one, half the instance's memory, as Cloud Run sets it."""
    size = spec.volumes[volume].size_limit
    return memory_bytes(size) if size else memory_bytes(spec.memory or DEFAULT_MEMORY) // 2


# latest_read(secret, value): tell running revisions that read `secret:latest` its new value.
LatestChanged = Callable[[str, str], None]


class Secrets:
    """`homerun secrets`: create, list, add versions, delete (not one a routed revision reads)."""

    def __init__(
        self,
        secrets: SecretStore,
        store: Store,
        *,
        routed: Callable[[], Iterable[str]],
        latest_changed: LatestChanged,
    ) -> None:
        self._secrets = secrets
        self._store = store
        self._routed = routed  # revisions with traffic or a tag
        self._latest_changed = latest_changed

    def summaries(self) -> list[SecretSummary]:
        listed = []
        for name in self._secrets.names():
            versions = self._secrets.versions(name)
            listed.append(
                SecretSummary(
                    name=name,
                    versions=len(versions),
                    latest=versions[-1].version if versions else None,
                    created_at=versions[0].created_at if versions else None,
                    used_by=self._revisions_using(name),
                )
            )
        return listed

    def versions(self, name: str) -> list[SecretVersionView]:
        return [
            SecretVersionView(version=v.version, created_at=v.created_at, size=v.size)
            for v in self._secrets.versions(name)
        ]

    def create(self, name: str, data: str) -> SecretVersionCreated:
        version = self._secrets.create(name, data)
        return SecretVersionCreated(name=name, version=version.version)

    def add_version(self, name: str, data: str) -> SecretVersionCreated:
        version = self._secrets.add_version(name, data)
        # `latest` is read when an instance starts: instances started from now on get it.
        self._latest_changed(name, data)
        return SecretVersionCreated(name=name, version=version.version)

    def delete(self, name: str) -> None:
        self._secrets.versions(name)  # NotFound for an unknown secret
        routed = set(self._routed())
        users = [revision for revision in self._revisions_using(name) if revision in routed]
        if users:
            raise InvalidSpec(
                f"secret {name} is used by revision(s) {', '.join(users)}, which serve traffic "
                "or carry a tag; deploy them without it first "
                f"(`homerun services update SERVICE --remove-secrets ENV`)"
            )
        self._secrets.delete(name)

    def _revisions_using(self, secret: str) -> list[str]:
        return [
            revision.name
            for revision in self._store.revisions()
            if any(
                ref.secret == secret
                for ref in [*revision.spec.secrets.values(), *revision.spec.secret_files.values()]
            )
        ]


def reads_latest(spec: RevisionSpec, secret: str) -> list[str]:
    """The env vars of `spec` that read `secret` at its latest version."""
    return [
        variable
        for variable, ref in spec.secrets.items()
        if ref.secret == secret and ref.version == LATEST_VERSION
    ]


def files_reading_latest(spec: RevisionSpec, secret: str) -> list[str]:
    """The secret files of `spec` that hold `secret` at its latest version."""
    return [
        path
        for path, ref in spec.secret_files.items()
        if ref.secret == secret and ref.version == LATEST_VERSION
    ]
