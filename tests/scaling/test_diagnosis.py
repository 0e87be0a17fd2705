"""Start failures explained: tracebacks cut to the app's frames, hints for common causes."""

from __future__ import annotations

from pathlib import Path

from homerun.model.artifact import ArtifactRecord
from homerun.scaling.diagnosis import BuiltApp, StartFailed, built_app, hint, trimmed

GUNICORN_IMPORT_ERROR = [
    "[INFO] Booting worker with pid: 12",
    "Traceback (most recent call last):",
    '  File "/h/venvs/ab/lib/python3.11/site-packages/gunicorn/arbiter.py", line 609, in spawn',
    "    worker.init_process()",
    '  File "/h/venvs/ab/lib/python3.11/site-packages/gunicorn/util.py", line 371, in import_app',
    "    mod = importlib.import_module(module)",
    '  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module',
    "    return _bootstrap._gcd_import(name[level:], package, level)",
    '  File "<frozen importlib._bootstrap>", line 1204, in _gcd_import',
    '  File "/h/revisions/svc-00001-abc/main.py", line 3, in <module>',
    "    import flask",
    "ModuleNotFoundError: No module named 'flask'",
]


def test_library_frames_fold_into_one_line_and_the_apps_frame_stays() -> None:
    assert trimmed(GUNICORN_IMPORT_ERROR) == [
        "[INFO] Booting worker with pid: 12",
        "Traceback (most recent call last):",
        "  ... 4 frames in libraries ...",
        '  File "/h/revisions/svc-00001-abc/main.py", line 3, in <module>',
        "    import flask",
        "ModuleNotFoundError: No module named 'flask'",
    ]


def test_a_missing_module_points_at_requirements() -> None:
    advice = hint(GUNICORN_IMPORT_ERROR)
    assert advice is not None and advice.startswith("the app imports flask, which is not")
    assert "requirements.txt" in advice
    assert hint(["ModuleNotFoundError: No module named 'yaml.constructor'"]) is not None


def test_an_app_past_its_memory_limit_is_told_to_ask_for_more() -> None:
    said = hint(
        [
            "Booting worker with pid: 7",
            "Memory limit of 128 MiB exceeded with 128 MiB used by the revision's zygote, "
            "importing the app. Consider increasing the memory limit, see "
            "https://cloud.google.com/run/docs/configuring/memory-limits",
        ]
    )
    assert said == (
        "the app used more memory than its limit of 128 MiB (what it loads at import counts): "
        "deploy with a larger --memory (e.g. --memory 256Mi) or make it use less"
    )
    larger = hint(["Memory limit of 2048 MiB exceeded with 2049 MiB used."])
    assert larger is not None and "(e.g. --memory 4Gi)" in larger


def test_a_taken_port_and_a_refused_permission_have_hints() -> None:
    taken = hint(["OSError: [Errno 98] Address already in use"])
    assert taken is not None and "PORT" in taken
    denied = hint(["PermissionError: [Errno 13] Permission denied: '/data/app.db'"])
    assert denied is not None and "/tmp" in denied


def test_a_program_the_shell_may_not_run_is_named_not_blamed_on_ports() -> None:
    for line in (
        "/bin/sh: 1: exec: gunicorn: Permission denied",
        "sh: ./start.sh: Permission denied",
    ):
        advice = hint([line])
        assert advice is not None and "chmod +x" in advice, line
        assert "1024" not in advice
    assert "gunicorn may not be run" in (
        hint(["/bin/sh: 1: exec: gunicorn: Permission denied"]) or ""
    )


def test_a_program_that_is_not_there_is_named_with_how_to_install_it() -> None:
    for line in (
        "/bin/sh: 1: exec: gunicorn: not found",  # dash
        "bash: line 1: gunicorn: command not found",
        "setpriv: failed to execute gunicorn: No such file or directory",  # in the sandbox
    ):
        advice = hint([line]) or ""
        assert advice.startswith("gunicorn was not found: install it"), line
        assert "requirements.txt" in advice and "1024" not in advice


def test_other_output_has_no_hint_and_stays_as_it_was() -> None:
    lines = ["starting", "ValueError: DATABASE_URL is not set"]
    assert hint(lines) is None
    assert trimmed(lines) == lines


# What homerun keeps of a gunicorn 27 whose worker failed to import the app: the last 20
# lines (unit.recent_output), so the traceback's header is gone. The frames of gunicorn's
# import, from a real run; the app's own frame and what follows are each test's.
GUNICORN_IMPORT_FRAMES = [
    "    mod = importlib.import_module(module)",
    "          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    '  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module',
    "    return _bootstrap._gcd_import(name[level:], package, level)",
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
    '  File "<frozen importlib._bootstrap>", line 1206, in _gcd_import',
    '  File "<frozen importlib._bootstrap>", line 1178, in _find_and_load',
    '  File "<frozen importlib._bootstrap>", line 1149, in _find_and_load_unlocked',
]
IMPORTED_MAIN = [
    '  File "<frozen importlib._bootstrap>", line 690, in _load_unlocked',
    '  File "<frozen importlib._bootstrap_external>", line 940, in exec_module',
    '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed',
    '  File "/h/revisions/svc-00001-abc/app/main.py", line 3, in <module>',
]
# HOME is /root, which the app's user may not write: gunicorn's control-socket thread says
# so from the master, here after the worker's traceback.
CONTROL_SOCKET_REFUSED = (
    "[2026-12-08 00:19:23 +0000] [10325] [ERROR] Control server error: [Errno 13] "
    "Permission denied: '/root/.gunicorn'"
)
WORKER_FAILED_TO_BOOT = [
    "[2026-12-08 00:19:23 +0000] [10326] [INFO] Worker exiting (pid: 10326)",
    CONTROL_SOCKET_REFUSED,
    "[2026-12-08 00:19:23 +0000] [10325] [ERROR] Worker (pid:10326) exited with code 3.",
    "[2026-12-08 00:19:23 +0000] [10325] [ERROR] Shutting down: Master",
    "[2026-12-08 00:19:23 +0000] [10325] [ERROR] Reason: Worker failed to boot.",
]
HELPERS_TYPO = [
    *GUNICORN_IMPORT_FRAMES,
    *IMPORTED_MAIN,
    "    from helpers import ok",
    "ModuleNotFoundError: No module named 'helpers'",
    "No module named 'helpers'",
    *WORKER_FAILED_TO_BOOT,
]
# `gunicorn mian:app`: gunicorn's import of the app module itself fails.
COMMAND_TYPO = [
    *GUNICORN_IMPORT_FRAMES,
    "ModuleNotFoundError: No module named 'mian'",
    "No module named 'mian'",
    *WORKER_FAILED_TO_BOOT,
]
SOURCE = {"main": "main.py", "helper": "helper.py", "shop": "shop/"}


def test_the_exception_that_ended_the_boot_wins_over_a_later_permission_denied() -> None:
    advice = hint(HELPERS_TYPO) or ""
    assert advice.startswith("the app imports helpers, which is not installed"), advice
    assert "1024" not in advice


def test_an_exception_without_a_hint_gets_none_rather_than_another_lines() -> None:
    ended_by_a_value_error = [
        *GUNICORN_IMPORT_FRAMES,
        *IMPORTED_MAIN,
        "    raise ValueError('DATABASE_URL is not set')",
        "ValueError: DATABASE_URL is not set",
        "DATABASE_URL is not set",
    ]
    assert hint([*ended_by_a_value_error, *WORKER_FAILED_TO_BOOT]) is None
    # The control socket's line printed before the traceback is no cause either.
    assert hint([CONTROL_SOCKET_REFUSED, *ended_by_a_value_error]) is None


def test_the_exception_itself_keeps_its_hint_and_a_later_failure_of_its_own_wins() -> None:
    denied = [
        '  File "/h/revisions/svc-00001-abc/app/main.py", line 4, in <module>',
        '    open("/data/app.db", "w")',
        "PermissionError: [Errno 13] Permission denied: '/data/app.db'",
    ]
    assert "/tmp" in (hint([*denied, *WORKER_FAILED_TO_BOOT]) or "")
    # uvicorn imports the app before it binds: a traceback the app logged and went on from
    # (from a real run) is not what stopped it.
    logged_then_bind_failed = [
        "ERROR:root:redis is not there; running without a cache",
        "Traceback (most recent call last):",
        '  File "/h/revisions/svc-00001-abc/app/cached.py", line 5, in <module>',
        '    socket.create_connection(("127.0.0.1", 6379), timeout=1)',
        '  File "/usr/lib/python3.11/socket.py", line 851, in create_connection',
        "    raise exceptions[0]",
        '  File "/usr/lib/python3.11/socket.py", line 836, in create_connection',
        "    sock.connect(sa)",
        "ConnectionRefusedError: [Errno 111] Connection refused",
        "INFO:     Started server process [12830]",
        "INFO:     Waiting for application startup.",
        "INFO:     Application startup complete.",
        "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8768): "
        "address already in use",
        "INFO:     Waiting for application shutdown.",
        "INFO:     Application shutdown complete.",
    ]
    assert "PORT" in (hint(logged_then_bind_failed) or "")


def test_a_misspelt_module_of_the_source_is_named_with_the_one_it_has() -> None:
    built = BuiltApp(source_modules=SOURCE, app_module="main")
    assert hint(HELPERS_TYPO, built) == (
        "no module named 'helpers' in the source or its packages; the source has helper.py: "
        "did you mean helper?"
    )
    assert hint(["ModuleNotFoundError: No module named 'shops'"], built) == (
        "no module named 'shops' in the source or its packages; the source has shop/: did you "
        "mean shop?"
    )
    inner = hint(["ModuleNotFoundError: No module named 'shop.cart'"], built) or ""
    assert inner.startswith("no module named 'shop.cart': shop is the source's own (shop/)")


def test_a_start_command_naming_a_module_the_source_lacks_says_so() -> None:
    built = BuiltApp(
        source_modules=SOURCE, app_module="mian", command_origin="Dockerfile CMD (line 4)"
    )
    assert hint(COMMAND_TYPO, built) == (
        "the start command (Dockerfile CMD (line 4)) names the module mian, which the source "
        "does not have; the source has main.py: did you mean main?"
    )
    # uvicorn says it without a traceback, of its MODULE:app only.
    uvicorn = ['ERROR:    Error loading ASGI app. Could not import module "mian".']
    assert (hint(uvicorn) or "").startswith("the start command names the module mian, which")
    assert "did you mean main?" in (hint(uvicorn, built) or "")
    nothing_like_it = BuiltApp(source_modules={"server": "server.py"}, app_module="mian")
    advice = hint(COMMAND_TYPO, nothing_like_it) or ""
    assert "does not have" in advice and "requirements.txt" not in advice


def test_a_module_nothing_in_the_source_is_like_is_a_package_to_install() -> None:
    advice = hint(GUNICORN_IMPORT_ERROR, BuiltApp(source_modules=SOURCE, app_module="main"))
    assert advice is not None and advice.startswith("the app imports flask, which is not")
    assert "requirements.txt" in advice


def test_a_dockerfile_builds_packages_from_its_run_pip_install_not_requirements() -> None:
    built = BuiltApp(source_modules=SOURCE, app_module="main", from_dockerfile=True)
    advice = hint(GUNICORN_IMPORT_ERROR, built) or ""
    assert advice.startswith("the app imports flask, which is not installed: add its package")
    assert "RUN pip install line of the Dockerfile" in advice
    assert "requirements.txt" not in advice


def test_what_a_hint_knows_comes_from_the_folder_and_the_artifact(tmp_path: Path) -> None:
    app = tmp_path / "rootfs" / "app"
    (app / "shop").mkdir(parents=True)
    (app / "shop" / "cart.py").write_text("")
    (app / "templates").mkdir()  # no Python in it: not a module
    (app / "templates" / "index.html").write_text("")
    for name in ("main.py", "helper.py", "not-a-module.py", "requirements.txt"):
        (app / name).write_text("")
    dockerfile_build = ArtifactRecord(
        argv=["/bin/sh", "-c", "exec gunicorn --bind 0.0.0.0:$PORT --workers 2 'main:app'"],
        env={},
        cwd="rootfs/app",
        entrypoint_origin="Dockerfile CMD (line 9)",
    )
    assert built_app(app, dockerfile_build) == BuiltApp(
        source_modules={"main": "main.py", "helper": "helper.py", "shop": "shop/"},
        app_module="main",
        command_origin="Dockerfile CMD (line 9)",
        from_dockerfile=True,
    )
    source_build = dockerfile_build.model_copy(
        update={"argv": ["/v/bin/python", "-m", "uvicorn", "shop.api:create()"], "cwd": "app"}
    )
    built = built_app(app, source_build)
    assert built.app_module == "shop.api" and not built.from_dockerfile
    image = source_build.model_copy(update={"engine_image": "sha256:ab"})
    assert built_app(tmp_path, image).from_dockerfile
    assert built_app(tmp_path / "gone", None) == BuiltApp()


def test_the_failure_detail_gives_the_hint_that_knows_the_build() -> None:
    failure = StartFailed("the app exited (code 3)", HELPERS_TYPO)
    built = BuiltApp(source_modules=SOURCE, app_module="main")
    assert failure.detail(built).endswith("Hint: " + (hint(HELPERS_TYPO, built) or ""))
    assert "did you mean helper?" in failure.detail(built)
