"""Service and revision specs: what a deploy asks for, validated before anything changes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from homerun.errors import InvalidSpec
from homerun.model.annotations import check_annotations
from homerun.model.capabilities import (
    both_added_and_dropped,
    capability_to_add,
    capability_to_drop,
)
from homerun.model.limits import below_one_cpu, concurrency_beyond_cpu
from homerun.model.probes import Probe, ProbeAction
from homerun.model.validation import validation_message
from homerun.model.volumes import (
    check_mount_points,
    mount_path,
    secret_folder,
    secrets_by_folder,
)

# A DNS label (RFC 1123) that starts with a letter, as Cloud Run requires for service names.
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Secret Manager's secret ids.
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# A volume's name, as Kubernetes': a DNS label.
_VOLUME_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes quantities as Cloud Run takes them: cpu `1`, `0.5`, `500m`; memory `512Mi`, `1Gi`.
_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
# A service account as Cloud Run takes it, an account's e-mail (NAME@PROJECT.iam.gserviceaccount
# .com, PROJECT_NUMBER-compute@developer.gserviceaccount.com), or a bare name as Kubernetes'
# serviceAccountName (a DNS subdomain), read as NAME@PROJECT.iam.gserviceaccount.com.
_ACCOUNT_NAME = r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?"
_SERVICE_ACCOUNT = re.compile(
    rf"^{_ACCOUNT_NAME}(@[a-z0-9]([-a-z0-9.]{{0,200}}[a-z0-9])?\.gserviceaccount\.com)?$"
)
LATEST_VERSION = "latest"

# Cloud Run sets these itself; a user may not.
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})

DEFAULT_CONCURRENCY = 80
MAX_CONCURRENCY = 1000
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 3600
DEFAULT_STARTUP_TIMEOUT_SECONDS = 240


# Each check of one value raises ValueError saying what is wrong, naming no field: a pydantic
# model puts the field's path in front (knative/models.py), and the validate_/check_ functions
# below put the flag's name.


def service_name(name: str) -> str:
    if not _SERVICE_NAME.match(name):
        raise ValueError(
            f"invalid service name {name!r}: use at most 63 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen (e.g. 'helloworld')"
        )
    if "---" in name:
        raise ValueError(
            f"invalid service name {name!r}: '---' separates a tag from the service in URLs"
        )
    return name


def env_name(name: str) -> str:
    if name in RESERVED_ENV:
        raise ValueError(
            f"{name} is reserved: homerun sets PORT, K_SERVICE, K_REVISION and "
            "K_CONFIGURATION for every instance"
        )
    if not _ENV_NAME.match(name):
        raise ValueError(
            f"invalid variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit"
        )
    return name


def secret_name(name: str) -> str:
    if not _SECRET_NAME.match(name):
        raise ValueError(
            f"invalid secret name {name!r}: use up to 255 letters, digits, '-' and '_'"
        )
    return name


def secret_version(version: str) -> str:
    """A version number (`007` -> `7`) or `latest`."""
    if version == LATEST_VERSION:
        return version
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"version {version!r} must be a number from 1, or 'latest'")
    return str(int(version))


def volume_name(name: str) -> str:
    if not _VOLUME_NAME.match(name):
        raise ValueError(
            f"invalid volume name {name!r}: use at most 63 lowercase letters, digits and "
            "hyphens, not starting or ending with a hyphen (e.g. 'cache')"
        )
    return name


def cpu_amount(value: str) -> str:
    if not _CPU.match(value) or _quantity(value.rstrip("m")) == 0:
        raise ValueError(f"{value!r} is not a CPU amount; write e.g. 1, 2, 0.5 or 500m")
    return value


def memory_amount(value: str) -> str:
    if not _MEMORY.match(value) or _quantity(value.rstrip("KMGTikm")) == 0:
        raise ValueError(f"{value!r} is not a memory amount; write e.g. 512Mi or 2Gi")
    return value


def service_account(value: str) -> str:
    if not _SERVICE_ACCOUNT.match(value):
        raise ValueError(
            f"{value!r} is not a service account; give its e-mail, "
            "NAME@PROJECT.iam.gserviceaccount.com, or a name of lowercase letters, digits, '-' "
            "and '.' (read as NAME@PROJECT.iam.gserviceaccount.com)"
        )
    return value


def _quantity(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


# The same checks as field types, for pydantic models.
ServiceName = Annotated[str, AfterValidator(service_name)]
EnvName = Annotated[str, AfterValidator(env_name)]
SecretName = Annotated[str, AfterValidator(secret_name)]
SecretVersion = Annotated[str, AfterValidator(secret_version)]
CpuAmount = Annotated[str, AfterValidator(cpu_amount)]
MemoryAmount = Annotated[str, AfterValidator(memory_amount)]
ServiceAccount = Annotated[str, AfterValidator(service_account)]
CapabilityToAdd = Annotated[str, AfterValidator(capability_to_add)]
CapabilityToDrop = Annotated[str, AfterValidator(capability_to_drop)]
# seccompProfile.type as homerun takes it (Localhost names a file on a node: none here).
SeccompType = Literal["RuntimeDefault", "Unconfined"]


def _checked(check: Callable[[str], str], value: str, where: str | None) -> str:
    try:
        return check(value)
    except ValueError as error:
        raise InvalidSpec(f"{where}: {error}" if where else str(error)) from None


def validate_service_name(name: str) -> str:
    return _checked(service_name, name, None)


def validate_env_name(name: str, flag: str = "--set-env-vars") -> None:
    _checked(env_name, name, flag)


def validate_secret_name(name: str, flag: str = "secret") -> str:
    return _checked(secret_name, name, flag)


def check_secret_version(version: str, where: str) -> str:
    return _checked(secret_version, version, where)


def check_cpu(value: str, where: str) -> str:
    return _checked(cpu_amount, value, where)


def check_memory(value: str, where: str) -> str:
    return _checked(memory_amount, value, where)


def check_service_account(value: str, where: str) -> str:
    return _checked(service_account, value, where)


def parse_env_vars(
    text: str, flag: str = "--set-env-vars", *, check_names: bool = True
) -> dict[str, str]:
    """Parse gcloud's `K=V,K2=V2` list; `^DELIM^K=V...` picks another delimiter."""
    delimiter = ","
    if text.startswith("^"):
        end = text.find("^", 1)
        if end <= 1:
            raise InvalidSpec(f"{flag}: a custom delimiter is written ^DELIM^ before the list")
        delimiter, text = text[1:end], text[end + 1 :]
    env: dict[str, str] = {}
    if not text:
        return env
    for item in text.split(delimiter):
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidSpec(
                f"{flag}: {item!r} is not KEY=VALUE; write {flag} KEY1=VALUE1,KEY2=VALUE2 "
                "(use ^;^ before the list to separate with ';' when values contain commas)"
            )
        if check_names:
            validate_env_name(name, flag)
        env[name] = value
    return env


class MemoryVolume(BaseModel):
    """An in-memory volume (Knative's emptyDir with medium: Memory): empty at each instance's
    start, its pages counted against the instance's memory; writes past `size_limit` fail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size_limit: str | None = None  # a memory amount (100Mi); None: half of --memory


class SecretRef(BaseModel):
    """`NAME:VERSION` of a secret; the version is a number or `latest`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    version: str = LATEST_VERSION

    def __str__(self) -> str:
        return f"{self.secret}:{self.version}"


# How Cloud Run records `gcloud run deploy --function` and `--base-image` on a revision.
FUNCTION_TARGET_ANNOTATION = "run.googleapis.com/build-function-target"
BASE_IMAGE_ANNOTATION = "run.googleapis.com/build-base-image"
# Read by the build, as GOOGLE_ENTRYPOINT: changing one makes a new build.
BUILD_VARIABLES = (
    "GOOGLE_ENTRYPOINT",
    "GOOGLE_FUNCTION_TARGET",
    "GOOGLE_FUNCTION_SIGNATURE_TYPE",
    "GOOGLE_FUNCTION_SOURCE",
    "GOOGLE_PYTHON_VERSION",
    "GOOGLE_RUNTIME_VERSION",
)


class RevisionSpec(BaseModel):
    """The immutable settings of one revision, as the user gave them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="absolute path of the source folder deployed")
    # `deploy --image`: the image pinned to its digest (`gcr.io/p/hello@sha256:…`); the
    # source is then the folder the image was built from, as far as it is known.
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    container_concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)
    timeout_seconds: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=1, le=MAX_TIMEOUT_SECONDS)
    startup_timeout_seconds: int = Field(default=DEFAULT_STARTUP_TIMEOUT_SECONDS, ge=1, le=3600)
    # Knative revision annotations: autoscaling.knative.dev/min-scale, max-scale, target...
    annotations: dict[str, str] = Field(default_factory=dict)
    # Env vars whose value is a secret version, read when an instance starts.
    secrets: dict[str, SecretRef] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    # Recorded and shown in the Knative YAML, not enforced by the process runtime.
    cpu: str | None = None
    memory: str | None = None
    container_port: int | None = Field(default=None, ge=1, le=65535)
    container_name: str | None = None
    service_account: str | None = None
    # Knative's resources.requests: recorded and shown; nothing reserves them on one machine.
    cpu_request: str | None = None
    memory_request: str | None = None
    # The container's workingDir: a path in the artifact (its rootfs stands for `/`).
    working_dir: str | None = None
    # Probes as the container spec gives them; None: TCP at startup only (startup_timeout).
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    # --use-http2 (Knative's port name h2c): the router speaks HTTP/2 cleartext to instances.
    use_http2: bool = False
    # Secret versions as read-only files (`--set-secrets /secrets/api-key=NAME:VERSION`): file
    # path -> secret; each file's folder is a volume holding only files of one secret.
    secret_files: dict[str, SecretRef] = Field(default_factory=dict)
    # In-memory volumes by name (--add-volume name=V,type=in-memory), and where they are
    # mounted (--add-volume-mount volume=V,mount-path=/p): mount path -> volume name.
    volumes: dict[str, MemoryVolume] = Field(default_factory=dict)
    volume_mounts: dict[str, str] = Field(default_factory=dict)
    # The container's securityContext: the user and group its processes run as (None: the
    # runtime's default, see control/users.py), and whether root is refused.
    run_as_user: int | None = Field(default=None, ge=0)
    run_as_group: int | None = Field(default=None, ge=0)
    run_as_non_root: bool | None = None
    # What the container's securityContext asks of its privileges and root filesystem (None,
    # empty: the runtime's default); control/users.py says where each can be honoured.
    allow_privilege_escalation: bool | None = None
    read_only_root_filesystem: bool | None = None
    capabilities_drop: list[CapabilityToDrop] = Field(default_factory=list)
    capabilities_add: list[CapabilityToAdd] = Field(default_factory=list)
    seccomp_profile: SeccompType | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_concurrency(cls, data: Any) -> Any:
        # Cloud Run's default concurrency depends on the CPU: 1 below one CPU, else 80.
        if isinstance(data, dict) and data.get("container_concurrency") is None:
            if isinstance(data.get("cpu"), str) and below_one_cpu(data["cpu"]):
                return {**data, "container_concurrency": 1}
            return {key: value for key, value in data.items() if key != "container_concurrency"}
        return data

    def check(self) -> RevisionSpec:
        """Checks pydantic cannot express; raises InvalidSpec naming the flag."""
        for name in self.env:
            validate_env_name(name)
        for name, ref in self.secrets.items():
            validate_env_name(name, "--set-secrets")
            validate_secret_name(ref.secret, "--set-secrets")
            if name in self.env:
                raise InvalidSpec(
                    f"{name} is both a plain env var and a secret; remove one "
                    f"(--remove-env-vars {name} or --remove-secrets {name})"
                )
        check_annotations(self.annotations)
        said = both_added_and_dropped(self.capabilities_add, self.capabilities_drop)
        if said is not None:
            raise InvalidSpec(f"securityContext.capabilities: {said}")
        if self.cpu is not None:
            check_cpu(self.cpu, "--cpu")
            if said := concurrency_beyond_cpu(self.cpu, self.container_concurrency):
                raise InvalidSpec(said)
        if self.memory is not None:
            check_memory(self.memory, "--memory")
        if self.service_account is not None:
            check_service_account(self.service_account, "--service-account")
        self._check_volumes()
        return self

    def _check_volumes(self) -> None:
        points: list[tuple[str, str]] = []
        for path, ref in self.secret_files.items():
            where = f"--set-secrets: {path}"
            if _checked(mount_path, path, "--set-secrets") != path:
                raise InvalidSpec(f"{where}: write the path as {mount_path(path)}")
            _checked(secret_folder, path, "--set-secrets")
            validate_secret_name(ref.secret, where)
        for folder, files in secrets_by_folder(
            {path: ref.secret for path, ref in self.secret_files.items()}
        ).items():
            secrets = sorted(set(files.values()))
            if len(secrets) > 1:
                raise InvalidSpec(
                    f"--set-secrets: {folder} holds files of secrets {' and '.join(secrets)}: "
                    "each folder is one secret's volume, as on Cloud Run; mount the other "
                    "secret in another folder (e.g. /secrets/a/key and /secrets/b/key)"
                )
            points.append((folder, f"secret {secrets[0]}'s volume"))
        for name, volume in self.volumes.items():
            _checked(volume_name, name, "--add-volume")
            if volume.size_limit is not None:
                check_memory(volume.size_limit, f"--add-volume {name}: size-limit")
        for path, name in self.volume_mounts.items():
            where = f"--add-volume-mount {path}"
            if _checked(mount_path, path, "--add-volume-mount") != path:
                raise InvalidSpec(f"{where}: write the path as {mount_path(path)}")
            if name not in self.volumes:
                known = ", ".join(sorted(self.volumes)) or "none"
                raise InvalidSpec(
                    f"{where}: no volume named {name!r} (volumes: {known}); add it with "
                    f"--add-volume name={name},type=in-memory"
                )
            points.append((path, f"volume {name}"))
        try:
            check_mount_points(points)
        except ValueError as error:
            raise InvalidSpec(str(error)) from None

    @property
    def mounts_anything(self) -> bool:
        """Whether instances get secret files or volumes (which need a sandbox or a container)."""
        return bool(self.secret_files or self.volume_mounts)

    def configuration(self) -> dict[str, Any]:
        """What makes two revisions the same, whichever folder they were built from."""
        return self.model_dump(exclude={"source"})

    def entrypoint_inputs(self) -> tuple[Any, ...]:
        """What the build resolves the entrypoint from: when these change, the artifact of
        another revision cannot be reused (its argv was decided at build time)."""
        return (
            self.command,
            self.args,
            *(self.env.get(name) for name in BUILD_VARIABLES),
            self.function_target,
            self.base_image,
        )

    @property
    def function_target(self) -> str | None:
        return self.annotations.get(FUNCTION_TARGET_ANNOTATION) or None

    @property
    def base_image(self) -> str | None:
        return self.annotations.get(BASE_IMAGE_ANNOTATION) or None


V = TypeVar("V")


class _MapChanges(BaseModel):
    """gcloud's edit of a name -> value map: replace it all, clear it, or update and remove."""

    model_config = ConfigDict(extra="forbid")

    replace: dict[str, Any] | None = None  # --set-*: all existing ones go first
    clear: bool = False
    update: dict[str, Any] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.replace is None and not self.clear and not self.update and not self.remove

    def touched(self) -> set[str]:
        return set(self.replace or {}) | set(self.update)

    def apply(self, current: Mapping[str, V]) -> dict[str, V]:
        if self.replace is not None:
            return dict(self.replace)
        if self.clear:
            return {}
        edited = {name: value for name, value in current.items() if name not in self.remove}
        edited.update(self.update)
        return edited


class EnvChanges(_MapChanges):
    replace: dict[str, str] | None = None
    update: dict[str, str] = Field(default_factory=dict)


class SecretChanges(_MapChanges):
    replace: dict[str, SecretRef] | None = None
    update: dict[str, SecretRef] = Field(default_factory=dict)


class VolumeChanges(_MapChanges):
    """--add-volume, --remove-volume, --clear-volumes: name -> volume."""

    replace: dict[str, MemoryVolume] | None = None
    update: dict[str, MemoryVolume] = Field(default_factory=dict)


class MountChanges(_MapChanges):
    """--add-volume-mount, --remove-volume-mount, --clear-volume-mounts: path -> volume."""

    replace: dict[str, str] | None = None
    update: dict[str, str] = Field(default_factory=dict)


class RevisionChanges(BaseModel):
    """What `deploy` or `services update` flags change; anything left None keeps the value of
    the service's latest revision, as `gcloud run deploy` keeps what it is not told to change."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None  # None: reuse the latest revision's artifact
    image: str | None = None  # deploy --image NAME (the daemon pins it to its digest)
    command: list[str] | None = None  # [] resets to the image's default
    args: list[str] | None = None
    container_concurrency: int | None = None  # 0: the default (1 below one CPU, else 80)
    timeout_seconds: int | None = None
    startup_timeout_seconds: int | None = None
    annotations: dict[str, str | None] = Field(default_factory=dict)  # None removes
    cpu: str | None = None
    memory: str | None = None
    container_port: int | None = Field(default=None, ge=1, le=65535)  # --port
    service_account: str | None = None  # "" goes back to the service's own account
    # gcloud's --startup-probe, --liveness-probe, --readiness-probe.
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    use_http2: bool | None = None
    env: EnvChanges = Field(default_factory=EnvChanges)
    # Env vars (ENV=...) and files (/path=...) alike, as gcloud's --set-secrets.
    secrets: SecretChanges = Field(default_factory=SecretChanges)
    volumes: VolumeChanges = Field(default_factory=VolumeChanges)
    volume_mounts: MountChanges = Field(default_factory=MountChanges)

    def apply(self, base: RevisionSpec | None) -> RevisionSpec:
        """The spec of the next revision: `base` (the latest one) with these changes."""
        new = base is None
        if base is None:
            if self.source is None and self.image is None:
                raise InvalidSpec("a new service needs --source DIR or --image IMAGE")
            base = RevisionSpec(source=self.source or "")
        fields = base.model_dump()
        if self.container_concurrency == 0 or (new and self.container_concurrency is None):
            # The default, which follows the CPU asked for (RevisionSpec picks it).
            fields["container_concurrency"] = None
        if self.source is not None or self.image is not None:
            # A source deploy replaces an image, and an image deploy a source.
            fields["source"] = self.source or ""
            fields["image"] = self.image
        for name in ("command", "args"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value or None
        for name in (
            "container_concurrency",
            "timeout_seconds",
            "startup_timeout_seconds",
            "cpu",
            "memory",
            "use_http2",
            "container_port",
        ):
            value = getattr(self, name)
            if value is not None and not (name == "container_concurrency" and value == 0):
                fields[name] = value
        if self.service_account is not None:
            fields["service_account"] = self.service_account or None
        for name in ("readiness_probe", "liveness_probe"):
            probe = getattr(self, name)
            if probe is not None:
                fields[name] = probe.model_dump()
        if self.startup_probe is not None:
            # A TCP startup probe is the default one: its budget is all it changes.
            tcp = self.startup_probe.action is ProbeAction.TCP
            fields["startup_probe"] = None if tcp else self.startup_probe.model_dump()
            if self.startup_timeout_seconds is None:
                fields["startup_timeout_seconds"] = self.startup_probe.budget
        kept = fields.get("startup_probe")
        if kept is not None and self.startup_timeout_seconds is not None:
            # --startup-timeout is the startup probe's budget: the two stay one.
            probe = Probe.model_validate(kept).with_budget(self.startup_timeout_seconds)
            fields["startup_probe"] = probe.model_dump()
        annotations = dict(base.annotations)
        for key, annotation in self.annotations.items():
            if annotation is None:
                annotations.pop(key, None)
            else:
                annotations[key] = annotation
        fields["annotations"] = annotations
        both = self.env.touched() & self.secrets.touched()
        if both:
            raise InvalidSpec(
                f"{', '.join(sorted(both))}: set both as a plain env var and as a secret"
            )
        env = self.env.apply(base.env)
        edited = self.secrets.apply({**base.secrets, **base.secret_files})
        secrets = {name: ref for name, ref in edited.items() if not name.startswith("/")}
        files = {path: ref for path, ref in edited.items() if path.startswith("/")}
        # The newest flag wins: a name set as a plain variable stops being a secret, and back.
        for name in self.env.touched():
            secrets.pop(name, None)
        for name in self.secrets.touched():
            env.pop(name, None)
        fields["env"] = env
        fields["secrets"] = {name: ref.model_dump() for name, ref in secrets.items()}
        fields["secret_files"] = {path: ref.model_dump() for path, ref in files.items()}
        volumes = self.volumes.apply(base.volumes)
        fields["volumes"] = {name: volume.model_dump() for name, volume in volumes.items()}
        mounts = self.volume_mounts.apply(base.volume_mounts)
        if self.volumes.clear or self.volumes.remove:
            # A removed volume's mounts go with it (gcloud's --remove-volume does the same).
            mounts = {path: name for path, name in mounts.items() if name in volumes}
        fields["volume_mounts"] = mounts
        try:
            return RevisionSpec.model_validate(fields).check()
        except ValidationError as error:
            raise InvalidSpec(validation_message(error)) from None


class DeployRequest(BaseModel):
    """What `homerun deploy` and `homerun services update` send to the daemon."""

    model_config = ConfigDict(extra="forbid")

    service: str
    changes: RevisionChanges
    allow_unauthenticated: bool | None = None  # None: as it is (a new service: private)
    ingress: str | None = None  # all | internal; None: as it is (a new service: all)
    no_traffic: bool = False  # pin LATEST to the revision serving now (gcloud's --no-traffic)
    tag: str | None = None  # the new revision's tag: TAG---SERVICE.DOMAIN
    # The service's metadata (gcloud's --labels, --description): labels added to its own, and
    # its description annotation; the new revision's name SERVICE-SUFFIX (--revision-suffix).
    update_labels: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    revision_suffix: str | None = None


# Cloud Run keeps a service's --description in this annotation.
DESCRIPTION_ANNOTATION = "run.googleapis.com/description"
# Google's label rules: a key starts with a lowercase letter; keys and values hold lowercase
# letters, digits, _ and -, 63 at most.
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_REVISION_SUFFIX = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_MAX_REVISION_NAME = 63  # a DNS label, as Knative's revision names


def parse_labels(text: str, flag: str = "--labels") -> dict[str, str]:
    """`KEY=VALUE,...` with Google's label rules."""
    labels = parse_env_vars(text, flag, check_names=False)
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidSpec(
                f"{flag}: {key!r} is not a label key: start with a lowercase letter, then "
                "lowercase letters, digits, _ or - (63 at most)"
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise InvalidSpec(
                f"{flag}: {key}={value!r}: a label value holds lowercase letters, digits, _ or "
                "- (63 at most)"
            )
    return labels


def revision_name_with_suffix(service: str, suffix: str, flag: str = "--revision-suffix") -> str:
    """SERVICE-SUFFIX, as gcloud names a revision given --revision-suffix."""
    name = f"{service}-{suffix}"
    if not _REVISION_SUFFIX.fullmatch(suffix) or len(name) > _MAX_REVISION_NAME:
        raise InvalidSpec(
            f"{flag}: {suffix!r} would name the revision {name!r}: use lowercase letters, "
            f"digits and - (not first or last), {_MAX_REVISION_NAME} characters in all"
        )
    return name


def parse_secret_refs(text: str, flag: str = "--set-secrets") -> dict[str, SecretRef]:
    """`ENV=NAME:VERSION,...` (VERSION a number or `latest`), as gcloud's --set-secrets; a key
    that is a path (`/secrets/api-key=NAME:VERSION`) mounts the version as a read-only file."""
    refs: dict[str, SecretRef] = {}
    for name, value in parse_env_vars(text, flag, check_names=False).items():
        key = name
        if name.startswith("/"):
            key = _checked(mount_path, name, flag)
            _checked(secret_folder, key, flag)
        else:
            validate_env_name(name, flag)
        refs[key] = parse_secret_ref(value, f"{flag}: {name}")
    return refs


def parse_secret_keys(text: str, flag: str = "--remove-secrets") -> list[str]:
    """`ENV,/path,...`: the env vars and files (or mounts) to remove, paths written as they
    are kept."""
    return [
        _checked(mount_path, key, flag) if key.startswith("/") else key for key in parse_list(text)
    ]


def parse_volume(text: str, flag: str = "--add-volume") -> tuple[str, MemoryVolume]:
    """gcloud's `name=V,type=in-memory[,size-limit=SIZE]`."""
    fields = parse_env_vars(text, flag, check_names=False)
    unknown = set(fields) - {"name", "type", "size-limit"}
    if unknown:
        raise InvalidSpec(
            f"{flag}: unknown key(s) {', '.join(sorted(unknown))}; write "
            f"{flag} name=NAME,type=in-memory,size-limit=SIZE"
        )
    name = fields.get("name")
    if not name:
        raise InvalidSpec(f"{flag}: give the volume a name: {flag} name=NAME,type=in-memory")
    kind = fields.get("type")
    if kind != "in-memory":
        said = f"type={kind}" if kind else "no type"
        raise InvalidSpec(
            f"{flag} {name}: {said}; homerun has in-memory volumes (type=in-memory); "
            "Cloud Storage, NFS and other volume types are not available on one machine"
        )
    size = fields.get("size-limit")
    if size is not None:
        check_memory(size, f"{flag} {name}: size-limit")
    return _checked(volume_name, name, flag), MemoryVolume(size_limit=size)


def parse_volume_mount(text: str, flag: str = "--add-volume-mount") -> tuple[str, str]:
    """gcloud's `volume=V,mount-path=/p` -> (path, volume)."""
    fields = parse_env_vars(text, flag, check_names=False)
    unknown = set(fields) - {"volume", "mount-path"}
    if unknown or "volume" not in fields or "mount-path" not in fields:
        raise InvalidSpec(
            f"{flag}: {text!r}: write {flag} volume=NAME,mount-path=/PATH"
            + (f" (unknown key(s) {', '.join(sorted(unknown))})" if unknown else "")
        )
    path = _checked(mount_path, fields["mount-path"], f"{flag}: mount-path")
    return path, fields["volume"]


def parse_secret_ref(value: str, where: str) -> SecretRef:
    secret, sep, version = value.rpartition(":")
    if not sep or not secret:
        raise InvalidSpec(
            f"{where}: {value!r} is not NAME:VERSION; write e.g. {value or 'NAME'}:latest or "
            f"{value or 'NAME'}:1"
        )
    validate_secret_name(secret, where)
    return SecretRef(secret=secret, version=check_secret_version(version, where))


def check_range(flag: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidSpec(f"{flag}: must be between {low} and {high}, got {value}")
    return value


def parse_list(text: str) -> list[str]:
    """gcloud's list flag: `a,b,c`, or `^:^a:b:c` to split on another delimiter."""
    delimiter = ","
    if text.startswith("^"):
        end = text.find("^", 1)
        if end > 1:
            delimiter, text = text[1:end], text[end + 1 :]
    return text.split(delimiter) if text else []


_K8S_VAR = re.compile(r"\$\((\w+)\)|\$\$")


def expand_k8s_vars(argument: str, env: dict[str, str]) -> str:
    """Kubernetes expands `$(VAR)` in command and args from the container's env; `$$` is `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _K8S_VAR.sub(substitute, argument)
