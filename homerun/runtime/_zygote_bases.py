"""What revisions must share to share a base zygote (runtime/zygote.py): the server, how it is
run, and the variables a base is given; and the room a base keeps in its environment."""

from __future__ import annotations

from typing import Any

from homerun.runtime._zygote_command import ServerCommand

# What a base is given of a revision's environment: what the interpreter reads as it starts
# (PYTHON*, the locale, HOME for the user's site-packages), PATH, and what an instance inherits
# from the daemon anyway. Revisions share a base only when these are the same.
_BASE_VARIABLES = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE")
_BASE_PREFIXES = ("PYTHON", "LC_")
# Room a base keeps in its environment for the zygotes forked from it to write their own over
# (_show_environment in _zygote/_homerun_zygote_forks.py): a revision whose variables take
# more gets its own zygote.
ENVIRON_ROOM = "HOMERUN_ENVIRON_ROOM"
ENVIRON_ROOM_BYTES = 32 * 1024


def base_env(env: dict[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in env.items()
        if name in _BASE_VARIABLES or name.startswith(_BASE_PREFIXES)
    }


def environment_bytes(env: dict[str, str]) -> int:
    # As /proc/PID/environ has them, with some room for what the shell adds (PWD).
    return sum(len(name.encode()) + len(value.encode()) + 2 for name, value in env.items()) + 4096


def base_key(command: ServerCommand, env: dict[str, str]) -> tuple[Any, ...]:
    """What revisions must share to share a base: the same server run the same way by the
    same interpreter, with the same variables given to the base."""
    return (
        command.server,
        command.program,
        command.interpreter,
        command.shell,
        tuple(sorted(base_env(env).items())),
    )
