"""Loads homerun's runtime inspector into an instance's Python (see _homerun_inspector.py),
then the sitecustomize this one hides, if the interpreter or the app has one."""

import os
import sys


def _load():
    # Hooks only, whatever the environment: a zygote's base is started without
    # HOMERUN_INSPECT, and the instances forked from it read the variable when they serve.
    try:
        import _homerun_inspector

        _homerun_inspector.install()
    except Exception:  # noqa: BLE001 - the inspector never stops the app from starting
        pass


def _chain():
    """Run the next sitecustomize on sys.path, as Python would have without this folder."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_load()
_chain()
