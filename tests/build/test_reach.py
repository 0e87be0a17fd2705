"""Requirement lines and pip arguments that reach outside the source folder are refused,
naming the file and line; those that stay inside, or name an index, pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.build.dependencies import InstallPlan, fingerprint, plan_dependencies
from homerun.build.dockerfile import parse
from homerun.build.reach import confine
from homerun.build.source import lay_out
from homerun.errors import BuildError

from .helpers import Output, write_tree


def _plan(tmp_path: Path, files: dict[str, str], name: str = "src") -> InstallPlan:
    source = write_tree(tmp_path / name, files)
    dockerfile = (
        parse(files["Dockerfile"], str(source / "Dockerfile")) if "Dockerfile" in files else None
    )
    layout = lay_out(source, tmp_path / f"{name}-dest", dockerfile, Output())
    return plan_dependencies(
        source=source, layout=layout, dockerfile=dockerfile, default_app=None, output=Output()
    )


# (requirements.txt, the line refused, words of the message)
REFUSED_LINES = [
    ("flask\n-r /etc/other.txt\n", 2, "`-r /etc/other.txt` reaches outside the source folder"),
    ("-c ../constraints.txt\n", 1, "`-c ../constraints.txt` reaches outside"),
    ("--requirement=/root/x.txt\n", 1, "`--requirement=/root/x.txt` reaches outside"),
    ("-r/etc/x.txt\n", 1, "`-r/etc/x.txt` reaches outside"),
    ("flask\n\n# a comment\n../shared\n", 4, "`../shared` reaches outside"),
    ("/opt/wheels/evil-1.0-py3-none-any.whl\n", 1, "reaches outside"),
    ("-e /srv/lib\n", 1, "`-e /srv/lib` reaches outside"),
    ("evil @ file:///opt/evil\n", 1, "`evil @ file:///opt/evil` reaches outside"),
    ("file:///root/evil.tar.gz\n", 1, "reaches outside"),
    ("git+file:///root/repo#egg=x\n", 1, "reaches outside"),
    ("--find-links /opt/wheels\nflask\n", 1, "`--find-links /opt/wheels` reaches outside"),
    ("-f ../wheels\n", 1, "`-f ../wheels` reaches outside"),
    ("--extra-index-url file:///opt/pypi/simple\n", 1, "reaches outside"),
    ("-i file:///root/index\n", 1, "reaches outside"),
    ("flask \\\n  --hash=sha256:abc\n-r ${HOME}/x.txt\n", 3, "reaches outside"),
    ("x @ file://otherhost/share/x\n", 1, "names a file on another machine (otherhost)"),
]


@pytest.mark.parametrize(("text", "line", "words"), REFUSED_LINES)
def test_a_requirement_reaching_outside_is_refused_naming_its_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    with pytest.raises(BuildError) as refused:
        _plan(tmp_path, {"requirements.txt": text})
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'src-dest' / 'app' / 'requirements.txt'}:{line}: ")
    assert words in message
    assert "copy it into the source folder" in message or "another machine" in message


def test_a_nested_requirement_file_is_named_with_its_own_line(tmp_path: Path) -> None:
    files = {"requirements.txt": "-r reqs/base.txt\n", "reqs/base.txt": "flask\n-r ../../x.txt\n"}
    with pytest.raises(BuildError, match=r"reqs/base.txt:2: `-r \.\./\.\./x\.txt` reaches"):
        _plan(tmp_path, files)


def test_a_link_out_of_the_folder_is_outside(tmp_path: Path) -> None:
    """The source's own links out are refused when it is copied; a folder the build reads
    through a link is judged by where the link leads."""
    context = write_tree(tmp_path / "context", {"requirements.txt": "-r linked/x.txt\n"})
    (tmp_path / "elsewhere").mkdir()
    (context / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BuildError, match="reaches outside"):
        confine(
            ("-r", str(context / "requirements.txt")),
            cwd=context,
            context=context,
            where="here",
        )


ALLOWED = [
    "flask==3.0\ngunicorn>=22 ; python_version >= '3.8'\n",
    "-r base.txt\n-c constraints.txt\n",
    "--index-url https://pypi.example.com/simple\n--extra-index-url https://x.example/simple\n",
    "--trusted-host pypi.example.com\n--no-index\n--find-links ./wheels\n",
    "--find-links https://download.example.com/wheels.html\n",
    "git+https://github.com/org/repo@v1#egg=repo\n",
    "mylib @ https://example.com/mylib-1.0.tar.gz\n",
    "./libs/shared\n",
    "-e ./libs/shared\n",
    "./wheels/x-1.0-py3-none-any.whl\n",
    "flask --hash=sha256:0123\n",
]


@pytest.mark.parametrize("text", ALLOWED)
def test_what_stays_inside_or_names_an_index_is_allowed(tmp_path: Path, text: str) -> None:
    files = {
        "requirements.txt": text,
        "base.txt": "flask\n",
        "constraints.txt": "flask<4\n",
        "libs/shared/pyproject.toml": "[project]\nname='shared'\n",
        "wheels/x-1.0-py3-none-any.whl": "",
    }
    plan = _plan(tmp_path, files)
    assert plan.steps


def test_local_projects_are_known_to_the_build(tmp_path: Path) -> None:
    """pip builds a local folder in place: the sandboxed build gets a copy it may write."""
    files = {"requirements.txt": "./libs/shared\nflask\n", "libs/shared/setup.py": ""}
    (step,) = _plan(tmp_path, files).steps
    assert step.projects == ((tmp_path / "src-dest" / "app" / "libs" / "shared").resolve(),)
    assert step.reads == tmp_path / "src-dest" / "app"
    assert _plan(tmp_path, {"requirements.txt": "flask\n"}, name="plain").steps[0].projects == ()


# (Dockerfile, words of the message)
REFUSED_DOCKERFILES = [
    ("RUN pip install /opt/evil\n", "Dockerfile:3: `/opt/evil` reaches outside"),
    ("RUN pip install -r /etc/reqs.txt\n", "Dockerfile:3: `-r /etc/reqs.txt` reaches outside"),
    ("RUN pip install --find-links /wheels x\n", "`--find-links /wheels` reaches outside"),
    ("RUN pip install --python /usr/bin/python3 x\n", "runs pip for another Python"),
    ("RUN pip install --src /srv -e git+https://x/y#egg=y\n", "`--src /srv` checks out"),
    ("RUN pip install --log /var/log/pip.log x\n", "writes a log file"),
    ("RUN pip install --cert /root/ca.pem x\n", "`--cert /root/ca.pem` reaches outside"),
]


@pytest.mark.parametrize(("run", "words"), REFUSED_DOCKERFILES)
def test_a_dockerfile_pip_install_reaching_outside_is_refused(
    tmp_path: Path, run: str, words: str
) -> None:
    dockerfile = f"FROM python:3.12\nCOPY . /app\n{run}"
    with pytest.raises(BuildError, match=None) as refused:
        _plan(tmp_path, {"Dockerfile": dockerfile, "main.py": ""})
    assert words in str(refused.value)


def test_a_dockerfile_reads_what_it_copied_into_the_image(tmp_path: Path) -> None:
    files = {
        "Dockerfile": (
            "FROM python:3.12\nCOPY wheels /wheels\nCOPY reqs.txt /tmp/reqs.txt\n"
            "RUN pip install --no-index --find-links /wheels -r /tmp/reqs.txt --cache-dir /c\n"
        ),
        "wheels/x-1.0-py3-none-any.whl": "",
        "reqs.txt": "x\n",
    }
    (step,) = _plan(tmp_path, files).steps
    rootfs = tmp_path / "src-dest" / "rootfs"
    assert step.arguments == (
        "--no-index",
        "--find-links",
        str(rootfs / "wheels"),
        "-r",
        str(rootfs / "tmp" / "reqs.txt"),
    )
    assert step.reads == rootfs


def test_pyproject_dependencies_are_requirements_not_options(tmp_path: Path) -> None:
    pyproject = (
        "[project]\nname = 'x'\ndependencies = [\n  'flask',\n"
        "  '--extra-index-url=https://evil.example/simple',\n]\n"
    )
    with pytest.raises(BuildError) as refused:
        _plan(tmp_path, {"pyproject.toml": pyproject})
    assert str(refused.value).startswith(
        f"{tmp_path / 'src-dest' / 'app' / 'pyproject.toml'}:5: "
        "`--extra-index-url=https://evil.example/simple` is a pip option, not a requirement"
    )


def test_pyproject_dependencies_from_outside_are_refused(tmp_path: Path) -> None:
    pyproject = "[project]\nname = 'x'\ndependencies = ['evil @ file:///opt/evil']\n"
    with pytest.raises(BuildError, match=r"pyproject.toml:3: `evil @ file:///opt/evil` reaches"):
        _plan(tmp_path, {"pyproject.toml": pyproject})


def test_a_find_links_folder_is_keyed_by_its_contents(tmp_path: Path) -> None:
    """Two deploys with the same requirements.txt but other wheels in ./wheels must not share a
    virtualenv: the second would run the first one's packages."""
    files = {"requirements.txt": "--find-links ./wheels\nmylib\n", "wheels/mylib-1.0.whl": "a"}
    one = fingerprint(_plan(tmp_path, files, name="a"))
    same = fingerprint(_plan(tmp_path, files, name="b"))
    other = fingerprint(_plan(tmp_path, {**files, "wheels/mylib-1.0.whl": "b"}, name="c"))
    assert one == same != other


def test_a_requirement_file_fetched_by_url_is_keyed_by_its_url(tmp_path: Path) -> None:
    def plan(url: str, name: str) -> InstallPlan:
        dockerfile = f"FROM python:3.12\nRUN pip install -r {url}\n"
        return _plan(tmp_path, {"Dockerfile": dockerfile}, name=name)

    assert fingerprint(plan("https://a.example/r.txt", "a")) != fingerprint(
        plan("https://b.example/r.txt", "b")
    )
