"""The fake client keeps the real one's methods, so commands tested over it run over the real
one too."""

from __future__ import annotations

import inspect

from homerun.client import Client

from .conftest import FakeClient


def test_the_fake_has_every_method_of_the_client_with_its_parameters() -> None:
    for name, method in inspect.getmembers(Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        fake = getattr(FakeClient, name, None)
        assert fake is not None, f"FakeClient lacks {name}"
        assert list(inspect.signature(fake).parameters) == list(
            inspect.signature(method).parameters
        ), name
