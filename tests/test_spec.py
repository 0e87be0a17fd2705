import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from homerun.errors import HomerunError, InvalidSpec
from homerun.model.probes import Probe, ProbeAction
from homerun.spec import (
    DeployRequest,
    EnvChanges,
    MemoryVolume,
    MountChanges,
    RevisionChanges,
    RevisionSpec,
    SecretChanges,
    SecretRef,
    VolumeChanges,
    check_cpu,
    check_memory,
    env_name,
    expand_k8s_vars,
    parse_env_vars,
    parse_list,
    parse_secret_refs,
    parse_volume,
    parse_volume_mount,
    validate_env_name,
    validate_service_name,
)


@pytest.mark.parametrize("name", ["helloworld", "a", "my-api-2", "a" * 63])
def test_valid_service_names(name: str) -> None:
    assert validate_service_name(name) == name


@pytest.mark.parametrize(
    "name", ["Bad_Name", "UPPER", "1abc", "-abc", "abc-", "a" * 64, "", "a.b", "x---y"]
)
def test_invalid_service_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidSpec, match="invalid service name"):
        validate_service_name(name)


def test_env_vars_parse_like_gcloud() -> None:
    assert parse_env_vars("A=1,B=two") == {"A": "1", "B": "two"}
    assert parse_env_vars("A=x=y") == {"A": "x=y"}
    assert parse_env_vars("EMPTY=") == {"EMPTY": ""}
    assert parse_env_vars("^;^A=1,2;B=3") == {"A": "1,2", "B": "3"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOEQUALS", "is not KEY=VALUE"),
        ("A=1,B", "is not KEY=VALUE"),
        ("PORT=1", "PORT is reserved"),
        ("K_SERVICE=x", "K_SERVICE is reserved"),
        ("1A=x", "invalid variable name"),
        ("=x", "invalid variable name"),
    ],
)
def test_malformed_env_vars_are_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_env_vars(text)


def test_a_check_names_no_field_and_its_flag_form_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"^PORT is reserved"):
        env_name("PORT")
    with pytest.raises(InvalidSpec, match=r"^--update-env-vars: PORT is reserved"):
        validate_env_name("PORT", "--update-env-vars")
    with pytest.raises(InvalidSpec, match=r"^--cpu: 'lots' is not a CPU amount"):
        check_cpu("lots", "--cpu")


def test_lists_and_k8s_expansion() -> None:
    assert parse_list("--bind,:8080") == ["--bind", ":8080"]
    assert parse_list("^:^a,b:c") == ["a,b", "c"]
    env = {"PORT": "1234"}
    assert expand_k8s_vars("--bind=:$(PORT)", env) == "--bind=:1234"
    assert expand_k8s_vars("$$(PORT) $(MISSING)", env) == "$(PORT) $(MISSING)"


# -- changes to a revision (deploy and services update flags) ---------------------------------

BASE = RevisionSpec(
    source="/src",
    env={"A": "1", "B": "2"},
    secrets={"DB": SecretRef(secret="db", version="1")},
    container_concurrency=10,
    annotations={"autoscaling.knative.dev/max-scale": "5"},
)


def test_flags_not_given_keep_the_latest_revisions_values() -> None:
    spec = RevisionChanges(timeout_seconds=30).apply(BASE)
    assert spec.env == BASE.env and spec.secrets == BASE.secrets
    assert spec.container_concurrency == 10 and spec.timeout_seconds == 30
    assert spec.annotations == BASE.annotations


def test_env_edits_start_from_the_current_env() -> None:
    update = RevisionChanges(env=EnvChanges(update={"B": "3", "C": "4"}, remove=["A"]))
    assert update.apply(BASE).env == {"B": "3", "C": "4"}
    assert RevisionChanges(env=EnvChanges(replace={"Z": "9"})).apply(BASE).env == {"Z": "9"}
    assert RevisionChanges(env=EnvChanges(clear=True)).apply(BASE).env == {}


def test_secret_edits_and_the_newest_kind_wins() -> None:
    secret = RevisionChanges(secrets=SecretChanges(update={"A": SecretRef(secret="a")}))
    spec = secret.apply(BASE)
    assert "A" not in spec.env and spec.secrets["A"] == SecretRef(secret="a", version="latest")
    plain = RevisionChanges(env=EnvChanges(update={"DB": "x"})).apply(BASE)
    assert plain.env["DB"] == "x" and "DB" not in plain.secrets
    both = RevisionChanges(
        env=EnvChanges(update={"X": "1"}),
        secrets=SecretChanges(update={"X": SecretRef(secret="x")}),
    )
    with pytest.raises(InvalidSpec, match="both as a plain env var and as a secret"):
        both.apply(BASE)


def test_annotations_none_removes_and_command_empty_resets() -> None:
    spec = RevisionChanges(
        annotations={"autoscaling.knative.dev/max-scale": None}, command=[]
    ).apply(BASE.model_copy(update={"command": ["python", "main.py"]}))
    assert spec.annotations == {} and spec.command is None


def test_a_new_service_needs_a_source() -> None:
    with pytest.raises(InvalidSpec, match="needs --source"):
        RevisionChanges().apply(None)
    assert RevisionChanges(source="/app").apply(None).source == "/app"


def test_entrypoint_changes_are_known() -> None:
    same = RevisionChanges(env=EnvChanges(update={"A": "9"}), timeout_seconds=9).apply(BASE)
    assert same.entrypoint_inputs() == BASE.entrypoint_inputs()
    assert RevisionChanges(command=["x"]).apply(BASE).entrypoint_inputs() != (None, None, None)
    google = RevisionChanges(env=EnvChanges(update={"GOOGLE_ENTRYPOINT": "x"})).apply(BASE)
    assert google.entrypoint_inputs() != BASE.entrypoint_inputs()


def test_secret_refs_parse_like_gcloud() -> None:
    assert parse_secret_refs("DB=db:latest,API_KEY=key:3") == {
        "DB": SecretRef(secret="db", version="latest"),
        "API_KEY": SecretRef(secret="key", version="3"),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DB=db", "is not NAME:VERSION"),
        ("DB=db:0", "must be a number from 1"),
        ("DB=db:v2", "must be a number from 1"),
        ("DB=bad/name:1", "invalid secret name"),
        ("/secret=db:1", "cannot be /; put it in a folder of its own"),
        ("/sys/secret=db:1", "Cloud Run does not mount volumes at /dev, /proc, /sys"),
        ("PORT=db:1", "PORT is reserved"),
    ],
)
def test_bad_secret_refs(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_secret_refs(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (RevisionChanges(cpu="lots"), "not a CPU amount"),
        (RevisionChanges(memory="512MB"), "not a memory amount"),
        (RevisionChanges(container_concurrency=-1), "container_concurrency"),
    ],
)
def test_bad_values_are_refused(changes: RevisionChanges, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        changes.apply(BASE)


def test_an_out_of_range_setting_names_the_field_and_the_bound() -> None:
    with pytest.raises(InvalidSpec) as error:
        RevisionChanges(container_concurrency=1001, timeout_seconds=4000).apply(BASE)
    assert str(error.value) == (
        "container_concurrency: must be at most 1000, got 1001; "
        "timeout_seconds: must be at most 3600, got 4000"
    )


def test_the_default_concurrency_follows_the_cpu_as_cloud_runs() -> None:
    # Cloud Run: "If not specified or 0, defaults to 80 when requested CPU >= 1 and defaults
    # to 1 when requested CPU < 1".
    def new(cpu: str | None = None) -> RevisionSpec:
        return RevisionChanges(source="/app", cpu=cpu).apply(None)

    assert new().container_concurrency == 80
    assert new("2").container_concurrency == 80
    assert new("500m").container_concurrency == 1
    assert new("0.25").container_concurrency == 1
    assert RevisionSpec.model_validate({"source": "/app", "cpu": "0.5"}).container_concurrency == 1
    # 0 (`--concurrency default`) is the default for the CPU the revision has.
    halved = RevisionChanges(cpu="0.5", container_concurrency=0).apply(BASE)
    assert halved.container_concurrency == 1
    assert RevisionChanges(container_concurrency=0).apply(BASE).container_concurrency == 80
    # A revision's own number is kept when the CPU changes, as on Cloud Run.
    assert RevisionChanges(cpu="1").apply(new("0.5")).container_concurrency == 1


def test_more_than_one_request_at_a_time_below_one_cpu_is_refused() -> None:
    with pytest.raises(InvalidSpec) as error:
        RevisionChanges(source="/app", cpu="500m", container_concurrency=8).apply(None)
    assert str(error.value) == (
        "--cpu 500m (resources.limits.cpu) is below one CPU, where an instance takes one "
        'request at a time, as on Cloud Run ("Total cpu < 1 is not supported with concurrency '
        '> 1"), and the concurrency is 8: add --concurrency 1 (containerConcurrency: 1), or '
        "give --cpu 1 or more"
    )
    # The latest revision's concurrency (BASE: 10) is kept, so a smaller CPU alone is refused.
    with pytest.raises(InvalidSpec, match="the concurrency is 10: add --concurrency 1"):
        RevisionChanges(cpu="0.5").apply(BASE)
    assert RevisionChanges(cpu="0.5", container_concurrency=1).apply(BASE).cpu == "0.5"


# -- any input: a value or InvalidSpec, never another exception (hypothesis) ---------------

# Text that looks like flag values often enough: the delimiters and signs they are made of.
flag_text = st.text(alphabet=st.sampled_from("AZaz09_-.=,:;^/ $()\x00é"), max_size=40) | st.text(
    max_size=40
)


@given(flag_text)
def test_any_env_list_parses_or_is_refused(text: str) -> None:
    try:
        env = parse_env_vars(text)
    except InvalidSpec:
        return
    for name, value in env.items():
        assert isinstance(name, str) and isinstance(value, str)
        assert name not in ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION")


@given(flag_text)
def test_any_secret_list_or_quantity_parses_or_is_refused(text: str) -> None:
    for parse in (
        parse_secret_refs,
        lambda value: check_cpu(value, "--cpu"),
        lambda value: check_memory(value, "--memory"),
        validate_service_name,
        parse_list,
    ):
        try:
            parse(text)
        except InvalidSpec:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "source",
                "command",
                "args",
                "container_concurrency",
                "timeout_seconds",
                "startup_timeout_seconds",
                "annotations",
                "cpu",
                "memory",
                "env",
                "secrets",
            ]
        ),
        json_values,
    )
)
def test_any_revision_changes_give_a_spec_or_a_named_error(fields: dict[str, object]) -> None:
    """What the admin API does with a deploy body: validate, then apply to no base."""
    try:
        request = DeployRequest.model_validate({"service": "svc", "changes": fields})
    except ValidationError:
        return  # the API answers 400 with the fields' paths
    try:
        spec = request.changes.apply(None)
    except HomerunError:
        return
    assert spec.check() is spec


def test_startup_probe_flags_and_the_startup_timeout_stay_one_budget() -> None:
    http = Probe(action=ProbeAction.HTTP, path="/started", period_seconds=2, failure_threshold=5)
    first = RevisionChanges(source="/s", startup_probe=http).apply(None)
    assert first.startup_probe == http and first.startup_timeout_seconds == 10
    # --startup-timeout alone later: the kept probe takes the new budget.
    second = RevisionChanges(startup_timeout_seconds=30).apply(first)
    assert second.startup_probe is not None and second.startup_probe.budget == 30
    assert second.startup_probe.path == "/started"
    # A TCP startup probe is the default one: only its budget is kept.
    third = RevisionChanges(startup_probe=Probe(period_seconds=3)).apply(second)
    assert third.startup_probe is None and third.startup_timeout_seconds == 9


def test_use_http2_is_kept_until_changed() -> None:
    on = RevisionChanges(use_http2=True).apply(BASE)
    assert on.use_http2 and not BASE.use_http2
    assert RevisionChanges(timeout_seconds=30).apply(on).use_http2  # a flag not given keeps it
    assert not RevisionChanges(use_http2=False).apply(on).use_http2  # --no-use-http2


def test_a_path_key_is_a_secret_file() -> None:
    assert parse_secret_refs("/secrets/api-key=key:latest,/etc/tls//cert=tls:2,DB=db:1") == {
        "/secrets/api-key": SecretRef(secret="key", version="latest"),
        "/etc/tls/cert": SecretRef(secret="tls", version="2"),
        "DB": SecretRef(secret="db", version="1"),
    }


def test_secret_files_are_edited_with_the_secret_env_vars() -> None:
    spec = RevisionChanges(
        secrets=SecretChanges(update=parse_secret_refs("/secrets/key=key:latest,/secrets/v1=key:1"))
    ).apply(BASE)
    assert spec.secrets == BASE.secrets  # the env var kept
    assert set(spec.secret_files) == {"/secrets/key", "/secrets/v1"}
    removed = RevisionChanges(secrets=SecretChanges(remove=["/secrets/v1", "DB"])).apply(spec)
    assert removed.secrets == {} and set(removed.secret_files) == {"/secrets/key"}
    # --set-secrets replaces both kinds, as gcloud's does.
    replaced = RevisionChanges(
        secrets=SecretChanges(replace=parse_secret_refs("TOKEN=tok:1"))
    ).apply(spec)
    assert replaced.secret_files == {} and set(replaced.secrets) == {"TOKEN"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/secrets/a=one:1,/secrets/b=two:1", "each folder is one secret's volume"),
        ("/secrets/a=one:1,/secrets/a/b=one:1", "mount points cannot nest"),
    ],
)
def test_secret_files_share_a_folder_only_with_their_own_secret(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        RevisionChanges(secrets=SecretChanges(update=parse_secret_refs(text))).apply(BASE)


def test_in_memory_volumes_and_their_mounts() -> None:
    name, volume = parse_volume("name=cache,type=in-memory,size-limit=64Mi")
    spec = RevisionChanges(
        volumes=VolumeChanges(update={name: volume}),
        volume_mounts=MountChanges(update=dict([parse_volume_mount("volume=cache,mount-path=/c")])),
    ).apply(BASE)
    assert spec.volumes == {"cache": MemoryVolume(size_limit="64Mi")}
    assert spec.volume_mounts == {"/c": "cache"}
    assert spec.mounts_anything
    # Removing a volume removes its mounts, as gcloud's --remove-volume does.
    gone = RevisionChanges(volumes=VolumeChanges(remove=["cache"])).apply(spec)
    assert gone.volumes == {} and gone.volume_mounts == {}
    assert not gone.mounts_anything


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            RevisionChanges(volume_mounts=MountChanges(update={"/c": "cache"})),
            "no volume named 'cache'",
        ),
        (
            RevisionChanges(
                volumes=VolumeChanges(update={"cache": MemoryVolume()}),
                volume_mounts=MountChanges(update={"/secrets": "cache"}),
                secrets=SecretChanges(update=parse_secret_refs("/secrets/key=k:1")),
            ),
            "both mounted at /secrets",
        ),
        (
            RevisionChanges(
                volumes=VolumeChanges(update={"cache": MemoryVolume()}),
                volume_mounts=MountChanges(update={"/data": "cache", "/data/more": "cache"}),
            ),
            "cannot nest",
        ),
        (
            RevisionChanges(volumes=VolumeChanges(update={"c": MemoryVolume(size_limit="9X")})),
            "not a memory amount",
        ),
    ],
)
def test_bad_volumes_are_refused(changes: RevisionChanges, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        changes.apply(BASE)
