"""Start failures explained: tracebacks cut to the app's frames, hints for common causes."""

from __future__ import annotations

from homerun.scaling.diagnosis import hint, trimmed

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
