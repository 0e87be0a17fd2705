"""runtime/_site/sitecustomize.py in a real interpreter started as an instance's is: service
hosts resolve (the hosts file first, then RFC 6761's localhost names), everything else goes to
the system's resolver, and an app's own sitecustomize still runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fakes import free_port

from homerun.runtime.names import HOSTS_VARIABLE, SITE_FOLDER, resolving_env

PROBE = """
import json, socket, sys, urllib.request
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({info[4][0] for info in socket.getaddrinfo(name, 80)})
    except socket.gaierror as error:
        out[name] = str(error.errno)
out["v4only"] = socket.gethostbyname("renderer.localhost")
out["v6"] = sorted({i[4][0] for i in socket.getaddrinfo("renderer.localhost", 80, socket.AF_INET6)})
print(json.dumps(out))
"""


def run_python(code: str, env: dict[str, str], *args: str) -> str:
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_resolving_env_puts_the_folder_first_and_keeps_the_apps_path(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    assert resolving_env({}, hosts) == {
        HOSTS_VARIABLE: str(hosts),
        "PYTHONPATH": str(SITE_FOLDER),
    }
    kept = resolving_env({"PYTHONPATH": "/app/lib"}, hosts)["PYTHONPATH"]
    assert kept == f"{SITE_FOLDER}:/app/lib"


def test_names_resolve_from_the_hosts_file_then_under_localhost(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# a comment\n127.0.0.3\tshop.example.test  # trailing\n")
    env = resolving_env({}, hosts)
    out = json.loads(
        run_python(
            PROBE,
            env,
            "shop.example.test",
            "SHOP.example.test.",
            "a.b.localhost",
            "other.example.test",
        )  # fmt: skip
    )
    assert out["shop.example.test"] == ["127.0.0.3"]
    assert out["SHOP.example.test."] == ["127.0.0.3"]  # case and a final dot do not matter
    assert out["a.b.localhost"] == ["127.0.0.1", "::1"]
    # Not ours: the system's resolver answers (no such name: an error, not loopback).
    assert out["other.example.test"] == str(socket.EAI_NONAME)
    assert out["v4only"] == "127.0.0.1"
    assert out["v6"] == ["::1"]


def test_the_hosts_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.3 a.example.test\n")
    code = f"""
import os, socket, sys
def ask():
    try:
        return socket.getaddrinfo("a.example.test", 80)[0][4][0]
    except socket.gaierror:
        return "none"
first = ask()
with open({str(hosts)!r} + ".partial", "w") as f:
    f.write("127.0.0.4 a.example.test b.example.test\\n")
os.replace({str(hosts)!r} + ".partial", {str(hosts)!r})
print(first, ask())
"""
    assert run_python(code, resolving_env({}, hosts)).split() == ["127.0.0.3", "127.0.0.4"]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.headers["Host"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    with ThreadingHTTPServer(("127.0.0.1", free_port()), _Hello) as http:
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield http.server_address[1]
        finally:
            http.shutdown()
            thread.join(timeout=10)


def test_an_http_client_reaches_a_service_url(tmp_path: Path, server: int) -> None:
    """urllib (http.client -> socket.create_connection) and asyncio's getaddrinfo both connect."""
    code = f"""
import asyncio, urllib.request
url = "http://renderer.localhost:{server}/"
print(urllib.request.urlopen(url, timeout=10).read().decode())
async def main():
    reader, writer = await asyncio.open_connection("renderer.localhost", {server})
    writer.write(b"GET / HTTP/1.0\\r\\nHost: asyncio.localhost\\r\\n\\r\\n")
    data = await reader.read()
    writer.close()
    print(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
asyncio.run(main())
"""
    out = run_python(code, resolving_env({}, tmp_path / "absent")).split()
    assert out == [f"renderer.localhost:{server}", "asyncio.localhost"]


def test_clients_on_uvloop_reach_a_service_url(tmp_path: Path, server: int) -> None:
    """uvicorn runs apps on uvloop, which resolves in C: httpx (anyio: the loop's getaddrinfo)
    and asyncio.open_connection (the loop's create_connection) still reach the service."""
    code = f"""
import asyncio, httpx, uvloop
async def main():
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get("http://renderer.localhost:{server}/")
    print(type(asyncio.get_running_loop()).__module__, answer.text)
    reader, writer = await asyncio.open_connection("renderer.localhost", {server})
    writer.write(b"GET / HTTP/1.0\\r\\nHost: raw.localhost\\r\\n\\r\\n")
    data = await reader.read()
    writer.close()
    print(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
uvloop.run(main())
"""
    out = run_python(code, resolving_env({}, tmp_path / "absent")).split()
    assert out == ["uvloop", f"renderer.localhost:{server}", "raw.localhost"]


def test_without_the_folder_glibc_does_not_resolve_localhost_names(tmp_path: Path) -> None:
    """Why the hook exists: the same lookup fails in a plain interpreter on this machine
    (skipped where the system resolves them itself, as with libnss-myhostname)."""
    try:
        socket.getaddrinfo("renderer.localhost", 80)
    except socket.gaierror:
        pass
    else:
        pytest.skip("this machine's resolver answers for names under localhost")
    code = "import socket\ntry: socket.getaddrinfo('r.localhost', 80)\nexcept OSError: print('no')"
    assert run_python(code, {}).strip() == "no"


def test_an_apps_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "app"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import builtins\nbuiltins.APP_SITE = True\n")
    env = resolving_env({"PYTHONPATH": str(theirs)}, tmp_path / "hosts")
    code = (
        "import builtins, socket, sitecustomize\n"
        "print(builtins.APP_SITE, socket.gethostbyname('x.localhost'), sitecustomize.__file__)"
    )
    app_site, address, module = run_python(code, env).split()
    assert (app_site, address) == ("True", "127.0.0.1")
    assert module == str(theirs / "sitecustomize.py")
