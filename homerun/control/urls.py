"""The URLs homerun gives services, tags and itself."""

from __future__ import annotations

from dataclasses import dataclass

from homerun.traffic import TAG_SEPARATOR


@dataclass(frozen=True)
class Urls:
    domain: str  # "localhost": services answer at SERVICE.localhost
    port: int  # the router's

    def service(self, service: str | None) -> str:
        """A service's URL; None: the platform's own (the issuer of its ID tokens)."""
        suffix = "" if self.port == 80 else f":{self.port}"
        host = self.domain if service is None else f"{service}.{self.domain}"
        return f"http://{host}{suffix}"

    def tag(self, service: str, tag: str) -> str:
        return self.service(f"{tag}{TAG_SEPARATOR}{service}")

    @property
    def platform(self) -> str:
        return self.service(None)
