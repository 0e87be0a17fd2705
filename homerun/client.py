"""Talks to the daemon's admin API over its Unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from homerun.errors import DaemonUnavailable, HomerunError, NotFound


class Client:
    def __init__(self, socket_path: Path) -> None:
        self._socket_path = socket_path
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://homerun",
            timeout=httpx.Timeout(30.0, read=None),
        )

    def close(self) -> None:
        self._http.close()

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status", timeout=5.0)

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown")

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
        _raise_for(response)
        return response.json()

    def _unavailable(self, error: Exception) -> DaemonUnavailable:
        return DaemonUnavailable(f"no homerun daemon answers at {self._socket_path} ({error})")


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text or f"HTTP {response.status_code}"
    raise (NotFound if response.status_code == 404 else HomerunError)(message)
