"""Service hosts resolve inside instances: `http://renderer.localhost:8080` reaches the router.

glibc resolves `localhost` from /etc/hosts but not `renderer.localhost` (only libnss-myhostname
or systemd-resolved do, and neither is everywhere), and without a mount namespace of its own
an instance cannot be given another /etc/hosts. Python runs this file as it starts, because
the daemon puts its folder first on an instance's PYTHONPATH: it wraps socket.getaddrinfo,
gethostbyname and gethostbyname_ex, which requests, urllib3, httpx, aiohttp and asyncio's
getaddrinfo all go through, and uvloop's getaddrinfo and create_connection, which resolve in C
(uvicorn runs apps on uvloop when it is installed; httpx and aiohttp then resolve through it).
A name is looked up, in order:

1. in the hosts file named by HOMERUN_HOSTS (written by the daemon as services come and go,
   every service and tag host -> the router's address; read again when it changes);
2. `localhost` and any name under it -> loopback (RFC 6761 section 6.3, as curl and browsers
   do), 127.0.0.1 or ::1 by the address family asked for;
3. the system's resolver, for everything else.

Only the standard library is used (homerun is not installed in the app's virtualenv). An
app's own sitecustomize, or the interpreter's (Debian's), still runs: it is imported after.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import socket
import sys
from typing import Any

_HOSTS_VARIABLE = "HOMERUN_HOSTS"
_LOCALHOST = "localhost"


class _HostsFile:
    """The hosts file's names, read again when its modification time or size changes."""

    def __init__(self) -> None:
        self._path = ""
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, list[str]] = {}

    def addresses(self, name: str) -> list[str]:
        path = os.environ.get(_HOSTS_VARIABLE, "")
        if not path:
            return []
        try:
            status = os.stat(path)
        except OSError:
            return []
        stamp = (status.st_mtime_ns, status.st_size)
        if path != self._path or stamp != self._stamp:
            self._names = _parse(path)
            self._path, self._stamp = path, stamp
        return self._names.get(name, [])


def _parse(path: str) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                words = line.partition("#")[0].split()
                for name in words[1:]:
                    names.setdefault(name.lower(), []).append(words[0])
    except (OSError, UnicodeDecodeError):
        return {}
    return names


_hosts = _HostsFile()


def _name(host: Any) -> str | None:
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    return host.rstrip(".").lower()


def _addresses(host: Any, family: int) -> list[str]:
    """The addresses of `host` this file answers for, fit for `family`; [] for the system's."""
    name = _name(host)
    if not name:
        return []
    found = _hosts.addresses(name)
    if not found and (name == _LOCALHOST or name.endswith("." + _LOCALHOST)):
        found = ["127.0.0.1", "::1"]
    if family == socket.AF_INET:
        return [address for address in found if ":" not in address]
    if family == socket.AF_INET6:
        return [address for address in found if ":" in address]
    return found


_system_getaddrinfo = socket.getaddrinfo
_system_gethostbyname = socket.gethostbyname
_system_gethostbyname_ex = socket.gethostbyname_ex


def getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> Any:
    addresses = _addresses(host, family)
    if not addresses:
        return _system_getaddrinfo(host, port, family, type, proto, flags)
    results = []
    for address in addresses:
        # The system's own answer for the numeric address: the same tuples a name would give.
        results += _system_getaddrinfo(
            address, port, family, type, proto, flags | socket.AI_NUMERICHOST
        )
    return results


def gethostbyname(host: str) -> str:
    addresses = _addresses(host, socket.AF_INET)
    return addresses[0] if addresses else _system_gethostbyname(host)


def gethostbyname_ex(host: str) -> tuple[str, list[str], list[str]]:
    addresses = _addresses(host, socket.AF_INET)
    if not addresses:
        return _system_gethostbyname_ex(host)
    return (host, [], addresses)


def install() -> None:
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    sys.meta_path.insert(0, _UvloopFinder())


def patch_uvloop(module: Any) -> None:
    """uvloop.Loop (a Python subclass of its C loop) resolves names itself, in C: its
    getaddrinfo and create_connection look a name up here first."""
    loop_class = module.Loop
    system_getaddrinfo = loop_class.getaddrinfo
    system_create_connection = loop_class.create_connection

    async def loop_getaddrinfo(
        self: Any, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
        flags: int = 0,
    ) -> Any:  # fmt: skip
        addresses = _addresses(host, family)
        if not addresses:
            return await system_getaddrinfo(
                self, host, port, family=family, type=type, proto=proto, flags=flags
            )
        results = []
        for address in addresses:
            results += await system_getaddrinfo(
                self, address, port, family=family, type=type, proto=proto,
                flags=flags | socket.AI_NUMERICHOST,
            )  # fmt: skip
        return results

    async def loop_create_connection(
        self: Any, protocol_factory: Any, host: Any = None, port: Any = None, **options: Any
    ) -> Any:
        addresses = _addresses(host, options.get("family", 0))
        if addresses:
            if options.get("ssl") and options.get("server_hostname") is None:
                options["server_hostname"] = host  # TLS still names the host, not the address
            host = addresses[0]
        return await system_create_connection(self, protocol_factory, host, port, **options)

    loop_class.getaddrinfo = loop_getaddrinfo
    loop_class.create_connection = loop_create_connection


class _UvloopFinder(importlib.abc.MetaPathFinder):
    """Patches uvloop once it is imported (importing it here would cost every process)."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "uvloop":
            return None
        sys.meta_path.remove(self)  # once: the next finders find the real module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        patch_uvloop(module)

    def __getattr__(self, name: str) -> Any:  # the rest of the loader's protocol (resources)
        return getattr(self._loader, name)


def _chain() -> None:
    """Import the sitecustomize this one hides (the app's, or the interpreter's), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    kept = sys.path[:]
    this = sys.modules.pop(__name__, None)
    sys.path[:] = [entry for entry in kept if os.path.abspath(entry or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ModuleNotFoundError as error:
        if error.name != "sitecustomize":
            raise
    finally:
        sys.path[:] = kept
        if this is not None and "sitecustomize" not in sys.modules:
            sys.modules[__name__] = this


def _load_inspector() -> None:
    """The runtime inspector's import hooks (_homerun_inspector.py, beside this file): they do
    nothing until a server runs with HOMERUN_INSPECT set, so a zygote's base can load them."""
    try:
        import _homerun_inspector  # type: ignore[import-not-found]

        _homerun_inspector.install()
    except Exception:  # noqa: BLE001 - the inspector never stops the app from starting
        pass


if __name__ == "sitecustomize":  # as Python starts; a test imports it under its own name
    install()
    _load_inspector()
    _chain()
