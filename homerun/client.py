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
        try:
            with self._http.stream(
                "POST", f"/v1/services/{request['service']}/deploy", json=request
            ) as response:
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
