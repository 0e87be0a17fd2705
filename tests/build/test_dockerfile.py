"""The Dockerfile subset parser: every instruction, both forms, continuations, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homerun.build import builder
from homerun.build.dockerfile import (
    ContainerCommand,
    Copy,
    Dockerfile,
    PipInstall,
    UnknownInstruction,
    Workdir,
    parse,
    split_instructions,
)
from homerun.errors import DockerfileError
from homerun.model.engine import Engine

from .helpers import SEED_FLASK, Output


def test_the_seed_dockerfile() -> None:
    dockerfile = parse((SEED_FLASK / "Dockerfile").read_text(), "cloudrun_example/Dockerfile")
    assert dockerfile.base_image == "python:3.8-slim"
    assert dockerfile.base_line == 3
    assert dockerfile.steps == (
        Workdir("/app", 6),
        Copy("COPY", (".",), "/app/", 7),
        PipInstall(("flask", "gunicorn"), "/app", 10),
    )
    assert dockerfile.workdir == "/app"
    assert dockerfile.cmd == ContainerCommand(
        "CMD",
        (
            "/bin/sh",
            "-c",
            "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app",
        ),
        True,
        13,
    )
    assert dockerfile.entrypoint is None
    assert dockerfile.env == {}


def _parse(body: str) -> Dockerfile:
    return parse("FROM python:3.12-slim\n" + body)


# (instructions after FROM, what to look at, expected)
CASES: list[tuple[str, str, Any]] = [
    # ENV: both forms, quotes, escapes, substitution from ARG and earlier ENV
    ("ENV A 1", "env", {"A": "1"}),
    ("ENV GREETING hello   big world", "env", {"GREETING": "hello   big world"}),
    (
        'ENV A=1 B="two words" C=three\\ words',
        "env",
        {"A": "1", "B": "two words", "C": "three words"},
    ),
    ("ENV A=1\nENV B=$A-${A}", "env", {"A": "1", "B": "1-1"}),
    ("ENV A=1 B=$A", "env", {"A": "1", "B": ""}),  # same instruction: not yet set (Docker)
    ("ARG V=2\nENV X=${V}", "env", {"X": "2"}),
    ("ENV X=${UNSET:-fallback} Y=${UNSET:+alt}", "env", {"X": "fallback", "Y": ""}),
    ("ENV A=1\nENV X=${A:+alt}", "env", {"A": "1", "X": "alt"}),
    ("ENV X='$NOT_EXPANDED'", "env", {"X": "$NOT_EXPANDED"}),
    ("ENV X=\\$LITERAL", "env", {"X": "$LITERAL"}),
    ('ENV A="x \\" y" B=\'q\\\'', "env", {"A": 'x " y', "B": "q\\"}),
    (
        "ENV PATH=/app/bin:$PATH",
        "env",
        {"PATH": "/app/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"},
    ),
    # ARG: defaults, no default, several at once; not part of the runtime env
    ("ARG A=1 B\nARG C", "args", {"A": "1", "B": "", "C": ""}),
    ("ARG A=1", "env", {}),
    # WORKDIR: absolute, relative to the previous one, with substitution
    ("WORKDIR /srv\nWORKDIR app", "workdir", "/srv/app"),
    ("ENV BASE=/opt\nWORKDIR $BASE/service/../app", "workdir", "/opt/app"),
    ("", "workdir", "/"),
    # COPY / ADD: destination relative to WORKDIR, directory when it ends with / or has
    # several sources; JSON form; flags accepted and ignored
    ("WORKDIR /app\nCOPY . ./", "copies", (Copy("COPY", (".",), "/app/", 3),)),
    ("WORKDIR /app\nCOPY main.py .", "copies", (Copy("COPY", ("main.py",), "/app/", 3),)),
    ("COPY main.py /srv/server.py", "copies", (Copy("COPY", ("main.py",), "/srv/server.py", 2),)),
    ("COPY a.py b.py /srv", "copies", (Copy("COPY", ("a.py", "b.py"), "/srv/", 2),)),
    ('COPY ["my file.py", "/srv/"]', "copies", (Copy("COPY", ("my file.py",), "/srv/", 2),)),
    (
        "COPY --chown=app:app --chmod=644 --link *.py /srv/",
        "copies",
        (Copy("COPY", ("*.py",), "/srv/", 2),),
    ),
    ("ARG SRC=lib\nADD $SRC /opt/lib/", "copies", (Copy("ADD", ("lib",), "/opt/lib/", 3),)),
    # EXPOSE and LABEL are recorded
    ("EXPOSE 8080 9000/udp", "exposed_ports", ("8080", "9000/udp")),
    (
        'LABEL version="1.0" description="an app" org.opencontainers.image.title=x',
        "labels",
        {"version": "1.0", "description": "an app", "org.opencontainers.image.title": "x"},
    ),
    ("LABEL maintainer someone@example.com", "labels", {"maintainer": "someone@example.com"}),
    ("MAINTAINER someone@example.com", "labels", {}),
    # CMD / ENTRYPOINT in both forms; the last one wins; bad JSON is shell form (Docker)
    (
        'CMD ["gunicorn", "-b", ":8080", "main:app"]',
        "cmd",
        ContainerCommand("CMD", ("gunicorn", "-b", ":8080", "main:app"), False, 2),
    ),
    (
        "CMD python main.py",
        "cmd",
        ContainerCommand("CMD", ("/bin/sh", "-c", "python main.py"), True, 2),
    ),
    ("CMD first\nCMD second", "cmd", ContainerCommand("CMD", ("/bin/sh", "-c", "second"), True, 3)),
    (
        "CMD [python, main.py]",
        "cmd",
        ContainerCommand("CMD", ("/bin/sh", "-c", "[python, main.py]"), True, 2),
    ),
    (
        'ENTRYPOINT ["python", "-m"]',
        "entrypoint",
        ContainerCommand("ENTRYPOINT", ("python", "-m"), False, 2),
    ),
    (
        "ENTRYPOINT exec python main.py",
        "entrypoint",
        ContainerCommand("ENTRYPOINT", ("/bin/sh", "-c", "exec python main.py"), True, 2),
    ),
    (
        'CMD ["echo", "$PORT"]',
        "cmd",  # no substitution in CMD: the shell (if any) does it
        ContainerCommand("CMD", ("echo", "$PORT"), False, 2),
    ),
]


@pytest.mark.parametrize(
    ("body", "attribute", "expected"),
    CASES,
    ids=[case[0].replace("\n", " | ")[:60] for case in CASES],
)
def test_instruction(body: str, attribute: str, expected: Any) -> None:
    assert getattr(_parse(body), attribute) == expected


# RUN lines that are pip installs, and the arguments kept for each pip run.
PIP_CASES: list[tuple[str, list[tuple[str, ...]]]] = [
    ("RUN pip install flask gunicorn", [("flask", "gunicorn")]),
    ("RUN pip3 install flask", [("flask",)]),
    ("RUN pip3.12 install flask", [("flask",)]),
    ("RUN python -m pip install flask", [("flask",)]),
    ("RUN python3 -m pip install flask", [("flask",)]),
    ("RUN /usr/local/bin/python3.12 -m pip install flask", [("flask",)]),
    (
        "RUN pip install --no-cache-dir -r requirements.txt",
        [("--no-cache-dir", "-r", "requirements.txt")],
    ),
    (
        "RUN pip install --upgrade pip && pip install -r requirements.txt",
        [("--upgrade", "pip"), ("-r", "requirements.txt")],
    ),
    ("RUN pip install a; pip install b", [("a",), ("b",)]),
    ("RUN PIP_NO_CACHE_DIR=1 pip install flask", [("flask",)]),
    ("RUN pip --no-cache-dir install flask", [("--no-cache-dir", "flask")]),
    ("RUN pip --timeout 60 install flask", [("--timeout", "60", "flask")]),
    ('RUN ["pip", "install", "flask"]', [("flask",)]),
    (
        "RUN pip install \"uvicorn[standard]>=0.29\" 'django<6'",
        [("uvicorn[standard]>=0.29", "django<6")],
    ),
    ("ARG REQS=requirements.txt\nRUN pip install -r $REQS", [("-r", "requirements.txt")]),
]


@pytest.mark.parametrize(("body", "expected"), PIP_CASES, ids=[case[0] for case in PIP_CASES])
def test_pip_install_lines(body: str, expected: list[tuple[str, ...]]) -> None:
    assert [install.arguments for install in _parse(body).pip_installs] == expected


def test_pip_install_keeps_the_workdir_current_at_its_line() -> None:
    dockerfile = _parse("WORKDIR /srv\nRUN pip install a\nWORKDIR /app\nRUN pip install b")
    assert [(install.workdir, install.line) for install in dockerfile.pip_installs] == [
        ("/srv", 3),
        ("/app", 5),
    ]


def test_continuations_comments_and_blank_lines_inside_them() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"  # 1 parser directive
        "FROM python:3.11\n"  # 2
        "RUN pip install \\\n"  # 3
        "    # a comment inside\n"  # 4
        "\n"  # 5
        "    flask \\  \n"  # 6 (spaces after the backslash are allowed)
        "    gunicorn\n"  # 7
        "CMD gunicorn \\\n"  # 8
        "  main:app\n"  # 9
        "USER nobody\n"  # 10
    )
    instructions, escape = split_instructions(text)
    assert escape == "\\"
    assert [(i.keyword, i.line) for i in instructions] == [
        ("FROM", 2),
        ("RUN", 3),
        ("CMD", 8),
        ("USER", 10),
    ]
    assert instructions[1].text == "pip install     flask     gunicorn"
    with pytest.raises(DockerfileError) as raised:
        parse(text, "Dockerfile")
    assert raised.value.line == 10


def test_escape_directive_changes_the_continuation_character() -> None:
    text = "# escape=`\nFROM python:3.11\nRUN pip install `\n    flask\nENV P=C:\\dir\n"
    dockerfile = parse(text)
    assert dockerfile.pip_installs[0].arguments == ("flask",)
    assert dockerfile.env == {"P": "C:\\dir"}


@pytest.mark.parametrize(
    "image",
    [
        "python",
        "python:3.8-slim",
        "python:3.12-bookworm",
        "docker.io/library/python:3.11",
        "mirror.gcr.io/library/python:3.10-alpine",
        "python@sha256:abc123",
        "localhost:5000/python:3.12",
    ],
)
def test_any_python_image_is_a_base(image: str) -> None:
    assert parse(f"FROM {image}\n").base_image == image


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("ARG V=1\nFROM python:3.12\nENV A=$V\n", {"A": ""}),
        ("ARG V=1\nFROM python:3.12\nARG V\nENV A=$V\n", {"A": "1"}),
    ],
)
def test_args_before_from_need_redeclaring(text: str, env: dict[str, str]) -> None:
    assert parse(text).env == env


def test_from_accepts_platform_and_a_stage_name_and_arg_before_it() -> None:
    dockerfile = parse("ARG VERSION=3.12\nFROM --platform=linux/amd64 python:${VERSION} AS app\n")
    assert (dockerfile.base_image, dockerfile.base_line) == ("python:3.12", 2)


# (Dockerfile, line of the error, words the message must contain)
REFUSED: list[tuple[str, int, list[str]]] = [
    (
        "FROM python:3.11\nRUN apt-get update && apt-get install -y libpq-dev\n",
        2,
        ["RUN apt-get update", "pip install"],
    ),
    ("FROM python:3.11\nRUN pip install flask && rm -rf /root/.cache\n", 2, ["RUN pip"]),
    ("FROM python:3.11\nRUN pip install flask | tee log\n", 2, ["operator |"]),
    ("FROM python:3.11\nRUN pip install $(cat reqs)\n", 2, ["command substitution"]),
    ("FROM python:3.11\nRUN pip install --target /deps flask\n", 2, ["--target"]),
    ("FROM python:3.11\nRUN pip install --user flask\n", 2, ["--user"]),
    ("FROM python:3.11\nRUN <<EOF\npip install flask\nEOF\n", 2, ["heredoc"]),
    ("FROM python:3.11\nUSER nobody\n", 2, ["USER nobody"]),
    ("FROM python:3.11\nVOLUME /data\n", 2, ["VOLUME"]),
    ("FROM python:3.11\nHEALTHCHECK CMD curl -f http://localhost/\n", 2, ["HEALTHCHECK"]),
    ('FROM python:3.11\nSHELL ["/bin/bash", "-c"]\n', 2, ["SHELL"]),
    ("FROM python:3.11\nSTOPSIGNAL SIGINT\n", 2, ["STOPSIGNAL"]),
    ("FROM python:3.11\nONBUILD RUN pip install x\n", 2, ["ONBUILD"]),
    ("FROM python:3.11 AS build\nRUN pip install x\nFROM python:3.11-slim\n", 3, ["multi-stage"]),
    ("FROM ubuntu:22.04\n", 1, ["not a python image"]),
    ("FROM node:20\n", 1, ["node:20"]),
    ("FROM python:3.11\nCOPY --from=build /app /app\n", 2, ["--from"]),
    ("FROM python:3.11\nADD https://example.com/data.csv /data/\n", 2, ["URL"]),
    ("FROM python:3.11\nADD vendor.tar.gz /opt/\n", 2, ["archive"]),
    ("FROM python:3.11\nCOPY --exclude=*.md . /app\n", 2, ["--exclude"]),
]


@pytest.mark.parametrize(
    ("text", "line", "words"), REFUSED, ids=[case[0].splitlines()[-1][:40] for case in REFUSED]
)
def test_refused_instructions_name_the_line_and_how_to_proceed(
    text: str, line: int, words: list[str]
) -> None:
    with pytest.raises(DockerfileError) as raised:
        parse(text, "/src/Dockerfile")
    error = raised.value
    assert (error.path, error.line) == ("/src/Dockerfile", line)
    message = str(error)
    assert message.startswith(f"/src/Dockerfile:{line}: ")
    for word in words:
        assert word in message
    assert "install podman" in message and "--command" in message
    assert "docker" not in message  # homerun would not use it


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("WORKDIR /app\nFROM python:3.11\n", 1, ["before FROM"]),
        ("# only a comment\n", 1, ["no FROM"]),
        ("FROM python:3.11\nCOPY onlyone\n", 2, ["source and a destination"]),
        ("FROM python:3.11\nENV LONELY\n", 2, ["missing value"]),
        ('FROM python:3.11\nENV A="unclosed\n', 2, ["unterminated"]),
        ("FROM python:3.11\nLABEL a='unclosed\n", 2, ["LABEL: unterminated single quote"]),
        ("FROM python:3.11\nEXPOSE http\n", 2, ["not a port"]),
        ("FROM python:3.11\nENV X=${A/b/c}\n", 2, ["substitution"]),
        ("FROM python:3.11\nCMD\n", 2, ["needs a command"]),
    ],
)
def test_malformed_instructions(text: str, line: int, words: list[str]) -> None:
    with pytest.raises(DockerfileError) as raised:
        parse(text)
    assert raised.value.line == line
    for word in words:
        assert word in str(raised.value)


# (Dockerfile, line of the error, the whole message after "Dockerfile:LINE: ")
UNKNOWN: list[tuple[str, int, str]] = [
    (
        "# the seed, mistyped\nFROM python:3.8-slim\nWORKDIR /app\nCOPPY . ./\n",
        4,
        "COPPY is not a Dockerfile instruction; did you mean COPY?",
    ),
    ("FORM python:3.12\n", 1, "FORM is not a Dockerfile instruction; did you mean FROM?"),
    ("FROM python:3.12\nrun pip install flask\nentrypont python main.py\n", 3, "ENTRYPONT"),
    # Reported even after a line only an engine can build: no engine would get further.
    ("FROM python:3.12\nRUN apt-get update\nUSR nobody\n", 3, "did you mean USER?"),
    # A heredoc's lines are its body; the line after its end is an instruction again.
    ("FROM python:3.12\nRUN <<EOF\napt-get update\nEOF\nCOPPY . .\n", 5, "COPPY"),
    (
        "FROM python:3.11\n\n\n# comment\nFROBNICATE now\n",
        5,
        "FROBNICATE is not a Dockerfile instruction (they are ADD, ARG, CMD, COPY, ENTRYPOINT, "
        "ENV, EXPOSE, FROM, HEALTHCHECK, LABEL, MAINTAINER, ONBUILD, RUN, SHELL, STOPSIGNAL, "
        "USER, VOLUME, WORKDIR); correct or remove the line",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), UNKNOWN)
def test_a_word_that_is_no_instruction_is_refused_with_the_one_meant(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(UnknownInstruction) as raised:
        parse(text)
    assert (raised.value.path, raised.value.line) == ("Dockerfile", line)
    assert str(raised.value).startswith(f"Dockerfile:{line}: ")
    assert message in str(raised.value)
    assert not isinstance(raised.value, DockerfileError)  # not "beyond the subset"


@pytest.mark.parametrize(
    "body",
    [
        "RUN <<EOF\napt-get update\npip install flask\nEOF\n",
        "RUN <<-'END' bash\n\tset -e\n\techo hi\n\tEND\n",
        "COPY <<one <<two /app/\nfirst\none\nsecond\ntwo\n",
    ],
)
def test_heredoc_bodies_are_no_instructions(body: str) -> None:
    with pytest.raises(DockerfileError, match="heredoc"):  # beyond the subset: the engine's
        parse("FROM python:3.12\n" + body + "CMD python main.py\n")


def test_only_a_known_instruction_beyond_the_subset_goes_to_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def engine_build(engine: Engine, source: Path, dest: Path, **options: Any) -> Any:
        asked.append(options["why"])
        raise RuntimeError("the fake engine stops here")

    monkeypatch.setattr(builder, "engine_build", engine_build)
    podman = Engine(name="podman", program="/usr/bin/podman", version="4.3.1")
    source = tmp_path / "app"
    source.mkdir()
    (source / "main.py").write_text("app = None\n")

    def build(dockerfile: str) -> None:
        (source / "Dockerfile").write_text(dockerfile)
        builder.build(
            source, tmp_path / "artifact", command=None, args=None, user_env={},
            venv_cache=tmp_path / "venvs", output=Output(), engine=podman,
        )  # fmt: skip

    with pytest.raises(RuntimeError):
        build("FROM python:3.8-slim\nRUN apt-get update\nCOPY . ./\n")
    [why] = asked
    assert why.startswith(f"{source / 'Dockerfile'}:2: `RUN apt-get update` is outside the ")
    with pytest.raises(UnknownInstruction, match=r"Dockerfile:3: COPPY .*did you mean COPY\?"):
        build("FROM python:3.8-slim\nRUN apt-get update\nCOPPY . ./\n")
    assert len(asked) == 1  # podman was not asked: it would have failed on FROM, offline


# -- any input: a Dockerfile or an error naming a line, never another exception -------------

words = st.sampled_from(
    [
        "FROM",
        "python:3.12-slim",
        "AS",
        "base",
        "WORKDIR",
        "/app",
        "COPY",
        "ADD",
        ".",
        "./",
        "--chown=1:1",
        "--from=base",
        "ENV",
        "A=1",
        "B",
        "ARG",
        "X=$A",
        "${X:-d}",
        "RUN",
        "pip",
        "install",
        "-r",
        "requirements.txt",
        "flask",
        "&&",
        "CMD",
        "ENTRYPOINT",
        '["python",',
        '"main.py"]',
        "[",
        "]",
        '"',
        "'",
        "\\",
        "\\\n",
        "\n",
        "#",
        "# escape=`",
        "`",
        "EXPOSE",
        "8080",
        "LABEL",
        "k=v",
        "USER",
        "HEALTHCHECK",
        "ONBUILD",
        "SHELL",
        "$PORT",
        "\t",
        "\x00",
        "é",
    ]
)
lines = st.lists(words, max_size=8).map(" ".join)


@given(st.lists(lines, max_size=10).map("\n".join) | st.text(max_size=200))
def test_any_text_parses_or_is_refused_with_a_line(text: str) -> None:
    try:
        dockerfile = parse(text)
    except (DockerfileError, UnknownInstruction) as error:
        assert error.line >= 0 and str(error).startswith("Dockerfile:")
        return
    assert isinstance(dockerfile, Dockerfile)
