"""Talks to the daemon's admin API: over its Unix socket, or over TCP with the admin token
(HOMERUN_URL and HOMERUN_TOKEN)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from homerun.errors import DaemonUnavailable, HomerunError, NotFound


def remote_target() -> tuple[str, str] | None:
    """(HOMERUN_URL, HOMERUN_TOKEN) when the CLI should talk to a daemon's TCP admin listener."""
    url = os.environ.get("HOMERUN_URL")
    if not url:
        return None
    token = os.environ.get("HOMERUN_TOKEN", "")
    if not token:
        raise HomerunError(
            "HOMERUN_URL is set but HOMERUN_TOKEN is not: set it to the content of "
            "HOMERUN_HOME/admin-token on the daemon's machine"
        )
    return url.rstrip("/"), token.strip()


def connect(socket_path: Path) -> Client:
    """The daemon at HOMERUN_URL when set, else the one whose socket is `socket_path`."""
    remote = remote_target()
    if remote is not None:
        return Client(url=remote[0], token=remote[1])
    return Client(socket_path)


class Client:
    def __init__(
        self, socket_path: Path | None = None, *, url: str | None = None, token: str = ""
    ) -> None:
        timeout = httpx.Timeout(30.0, read=None)
        if url is not None:
            self._where = url
            self._http = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
                trust_env=False,
            )
            return
        if socket_path is None:
            raise ValueError("a Client needs a socket path or an URL")
        self._where = str(socket_path)
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://homerun",
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status", timeout=5.0)

    def shutdown(self) -> None:
        try:
            self._call("POST", "/v1/shutdown")
        except DaemonHungUp:
            pass  # a daemon that hangs up while it stops has done what was asked

    def services(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/services")

    def describe(self, service: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/services/{service}")

    def knative_service(self, service: str) -> dict[str, Any]:
        """The service as a serving.knative.dev/v1 Service document."""
        return self._call("GET", f"/v1/services/{service}", params={"format": "knative"})

    def update_traffic(self, service: str, update: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/v1/services/{service}/traffic", json=update)

    def replace(
        self, service: str, document: dict[str, Any], file: str
    ) -> Iterator[dict[str, Any]]:
        """`services replace`: events as for a deploy (a changed template builds one)."""
        return self._stream(
            "PUT", f"/v1/services/{service}", json=document, params={"file": file}
        )

    def revision(self, name: str, knative: bool = False) -> dict[str, Any]:
        params = {"format": "knative"} if knative else {}
        return self._call("GET", f"/v1/revisions/{name}", params=params)

    def delete_revision(self, name: str) -> None:
        self._call("DELETE", f"/v1/revisions/{name}")

    def secrets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/secrets")

    def create_secret(self, name: str, data: str) -> dict[str, Any]:
        return self._call("POST", "/v1/secrets", json={"name": name, "data": data})

    def secret_versions(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/secrets/{name}/versions")

    def add_secret_version(self, name: str, data: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/secrets/{name}/versions", json={"data": data})

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", f"/v1/secrets/{name}")

    def delete(self, service: str) -> None:
        self._call("DELETE", f"/v1/services/{service}")

    def revisions(self, service: str | None = None) -> list[dict[str, Any]]:
        params = {"service": service} if service else {}
        return self._call("GET", "/v1/revisions", params=params)

    def logs(self, service: str, limit: int, **filters: str | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = limit
        return self._call("GET", f"/v1/services/{service}/logs", params=params)

    def iam_policy(self, service: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/services/{service}/iam")

    def add_iam_binding(self, service: str, member: str, role: str) -> dict[str, Any]:
        body = {"member": member, "role": role}
        return self._call("POST", f"/v1/services/{service}/iam/add", json=body)

    def remove_iam_binding(self, service: str, member: str, role: str) -> dict[str, Any]:
        body = {"member": member, "role": role}
        return self._call("POST", f"/v1/services/{service}/iam/remove", json=body)

    def identity_token(self, member: str, audience: str | None) -> dict[str, Any]:
        return self._call("POST", "/v1/tokens", json={"member": member, "audience": audience})

    def deploy(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The deploy's events as they happen; the last one is `done` or `error`."""
        return self._stream("POST", f"/v1/services/{request['service']}/deploy", json=request)

    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except (httpx.ConnectError, FileNotFoundError) as error:
            raise self._unavailable(error) from None
        except httpx.RemoteProtocolError as error:
            raise HomerunError(
                f"the daemon closed the connection during the deploy: {error}"
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, httpx.ReadTimeout) as error:
            raise self._unavailable(error) from None
        except httpx.HTTPError as error:
            raise DaemonHungUp(
                f"the daemon at {self._where} broke off the exchange ({error}); "
                "`homerun status` tells whether it still runs"
            ) from None
        _raise_for(response)
        return response.json()

    def _unavailable(self, error: Exception) -> DaemonUnavailable:
        return DaemonUnavailable(f"no homerun daemon answers at {self._where} ({error})")


class DaemonHungUp(HomerunError):
    """The daemon closed the connection before it answered."""


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.status_code == 401:
        raise HomerunError(
            f"the daemon at {response.request.url.host} refused the admin token: set "
            "HOMERUN_TOKEN to the content of HOMERUN_HOME/admin-token on its machine"
        )
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text or f"HTTP {response.status_code}"
    raise (NotFound if response.status_code == 404 else HomerunError)(message)
