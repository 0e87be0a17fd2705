"""What describe, list and status report: one declaration read by the admin API (and its
OpenAPI document), the CLI and the dashboard."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from homerun.model.cost import CostEstimate
from homerun.model.inspection import Capacity, RampResult, RevisionInspection
from homerun.model.jobs import ExecutionStatus, TaskStatus
from homerun.model.states import InstanceState, RevisionStatus


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Route(_View):
    """A revision the service routes to now, with its share and tag."""

    revision: str
    percent: int
    tag: str | None = None
    url: str | None = None  # the tag's own URL


class TrafficSpec(_View):
    """A line of the traffic block as set (LATEST not yet resolved to a revision)."""

    percent: int
    revision: str | None = None
    latest: bool = False
    tag: str | None = None


class Readiness(_View):
    """A service's Knative Ready condition, as `services describe --format yaml` shows it:
    False when its latest revision failed (reason RevisionFailed, with that revision's message)
    even while an earlier revision still serves; Unknown while the latest one deploys."""

    status: Literal["True", "False", "Unknown"]
    reason: str | None = None  # RevisionFailed, RevisionMissing, Deploying; None when True
    message: str | None = None


class ServiceSummary(_View):
    name: str
    url: str
    ready: bool  # readiness.status is "True"; `traffic` says what serves meanwhile
    readiness: Readiness
    latest_ready_revision: str | None
    latest_created_revision: str | None
    traffic: list[Route]
    traffic_spec: list[TrafficSpec]
    allow_unauthenticated: bool
    ingress: str
    invokers: list[str]
    owner: str  # the OS user running the daemon, who may invoke every service
    created_at: float
    generation: int


class Tag(_View):
    tag: str
    url: str


class InstanceView(_View):
    name: str
    state: InstanceState
    pid: int
    port: int
    in_flight: int
    age_seconds: float
    limit: int | None = None  # --concurrency auto: the instance's adaptive limit now


class StartMode(_View):
    mode: str  # "fork" (from the revision's zygote) or "spawn"
    reason: str


class Decision(_View):
    seconds_ago: float
    desired: int
    mode: str  # "stable" | "panic"
    reason: str


class Scaling(_View):
    min_instances: int
    max_instances: int
    target_per_instance: float
    stable_window_seconds: float
    overloaded_requests: int  # answered 429 after waiting at max-instances
    waited_requests: int
    median_wait_ms: float | None
    decisions: list[Decision]  # newest first


class RevisionSummary(_View):
    name: str
    service: str
    status: RevisionStatus
    message: str | None
    created_at: float
    entrypoint: list[str] | None
    entrypoint_origin: str | None
    concurrency: int
    adaptive_concurrency: bool = False  # --concurrency auto: `concurrency` is the maximum
    timeout_seconds: int
    env: dict[str, str]
    secrets: dict[str, str]  # ENV -> SECRET:VERSION; never a value
    # mount path -> what is there: "secret NAME:VERSION" (a file), "in-memory volume V, 1Mi".
    mounts: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str]
    image: str | None
    source: str
    percent: int
    tags: list[Tag]
    instances: list[InstanceView]
    in_flight: int
    start_mode: StartMode | None
    queue_length: int
    scaling: Scaling | None = None  # present while the revision is live
    # The server's real capacity (measured by the runtime inspector, else read from the start
    # command), what its instances measured, and where capacity and concurrency disagree.
    capacity: Capacity | None = None
    inspection: RevisionInspection | None = None
    warnings: list[str] = []
    # Instances ended for going past the memory limit while the revision was live.
    memory_limit_exceeded: int = 0
    ramp: RampResult | None = None  # the latest `services advise --ramp` of the revision
    cost: CostEstimate | None = None  # its observed use in Cloud Run's terms, while it runs


class ServiceDescription(ServiceSummary):
    revisions: list[RevisionSummary]  # newest first


class PlatformStatus(_View):
    pid: int
    router: str
    dashboard: str | None
    services: int
    revisions: int
    instances: int
    container_engine: str | None = None  # "podman 4.3.1": builds Dockerfiles, runs images
    # How images' instances run: their network, whether they fork from a zygote and why not.
    containers: str | None = None
    # What the process runtime's instances get: "sandboxed (bubblewrap): ..." or "none: why".
    sandbox: str | None = None


class SecretSummary(_View):
    name: str
    versions: int
    latest: int | None
    created_at: float | None
    used_by: list[str]  # revisions whose spec reads it


class SecretVersionView(_View):
    version: int
    created_at: float
    size: int


class SecretVersionCreated(_View):
    name: str
    version: int


class Binding(_View):
    members: list[str]
    role: str


class IamPolicy(_View):
    """As gcloud prints it (no etag: one writer, the daemon)."""

    bindings: list[Binding]
    version: int = 1


class IdentityToken(_View):
    token: str
    member: str
    audience: str


class TaskSummary(_View):
    """One task of an execution: its latest attempt and how many it took."""

    index: int
    status: TaskStatus
    attempts: int  # started so far
    failures: int  # failed attempts held against --max-retries
    last_failure: str | None  # why its latest failed attempt failed
    started_at: float | None  # its latest attempt's
    ended_at: float | None
    exit_status: int | None  # >= 0 an exit code, < 0 the signal that ended it


class ExecutionSummary(_View):
    name: str
    job: str
    status: ExecutionStatus
    message: str | None  # how it ended: which tasks failed, and why
    created_at: float
    completed_at: float | None
    generation: int  # of the job it ran
    task_count: int
    parallelism: int  # 0: as many as the platform allows
    max_retries: int
    task_timeout_seconds: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retries: int  # failed attempts tried again (or about to be); interrupted ones are not
    cancel_requested: bool


class ExecutionDescription(ExecutionSummary):
    entrypoint: list[str]
    env: dict[str, str]
    tasks: list[TaskSummary]


class JobSummary(_View):
    name: str
    created_at: float
    updated_at: float
    generation: int
    source: str
    image: str | None = None  # --image, pinned to its digest
    # Its tasks are containers of an image podman built; else processes.
    container_image: str | None = None
    entrypoint: list[str]
    entrypoint_origin: str
    env: dict[str, str]
    secrets: dict[str, str]  # ENV -> SECRET:VERSION; never a value
    cpu: str | None
    memory: str | None
    task_count: int
    parallelism: int
    max_retries: int
    task_timeout_seconds: int
    executions: int
    latest_execution: ExecutionSummary | None
    schedule: str | None = None  # unix-cron, read in `time_zone`
    time_zone: str | None = None
    next_run_at: float | None = None  # when the schedule runs it next
    command: list[str] | None = None  # as given (--command); `entrypoint` is what runs
    args: list[str] | None = None
    digest: str | None = None  # of the job's artifact: its image homerun.local/JOB@sha256:...
    # Its secret files (/path -> SECRET:VERSION), in-memory volumes (name -> size limit or
    # None) and their mounts (path -> volume), as the job's spec holds them.
    secret_files: dict[str, str] = Field(default_factory=dict)
    volumes: dict[str, str | None] = Field(default_factory=dict)
    volume_mounts: dict[str, str] = Field(default_factory=dict)


class JobDescription(JobSummary):
    recent_executions: list[ExecutionSummary]  # newest first


class PoolInstance(_View):
    """One slot of a worker pool: its running instance, or why it waits."""

    index: int
    pid: int | None  # None: not running (waiting to start again)
    started_at: float | None
    restarts: int  # instances of this slot started since the pool's deploy, but the first
    last_exit: str | None  # how its last instance ended ("exit code 1")
    restart_at: float | None = None  # when a waiting slot starts again


class WorkerPoolSummary(_View):
    name: str
    revision: str  # POOL-0000N: the generation its instances run
    created_at: float
    updated_at: float
    source: str
    entrypoint: list[str]
    entrypoint_origin: str
    env: dict[str, str]
    secrets: dict[str, str]  # ENV -> SECRET:VERSION; never a value
    cpu: str | None
    memory: str | None
    instances: int  # the count kept running
    running: int
    slots: list[PoolInstance]


class DomainMappingView(_View):
    """A domain of the user's and the service it routes to (`homerun domain-mappings`)."""

    domain: str
    service: str
    created_at: float
    ready: bool  # the service exists and has a ready revision
    reason: str  # why it is not ready; "" when it is
    url: str  # http://DOMAIN[:PORT]: the router's port
    https_url: str | None  # with config.yaml's https-port
    certificate: str  # which certificate a TLS handshake naming the domain gets
    reach: str  # how a client gets to this machine at the domain (DNS, /etc/hosts)
