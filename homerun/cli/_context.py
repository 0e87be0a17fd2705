"""What a command needs besides its flags: the daemon's client, the terminal and the clock."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from homerun.cli import _daemon
from homerun.client import Client, connect, remote_target
from homerun.config import Paths, default_home, load_settings
from homerun.errors import HomerunError


class Aborted(HomerunError):
    """The user answered no to a confirmation."""


class Context:
    """A command's way to the daemon and the user. Given a client (a test's fake), it uses that
    one and never connects or starts a daemon."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self._given = client
        self._connected: Client | None = None

    def close(self) -> None:
        if self._connected is not None:
            self._connected.close()

    # Where the daemon is

    @property
    def home(self) -> Path:
        return default_home()

    def paths(self) -> Paths:
        home = self.home
        return load_settings(home).paths(home)

    def where(self) -> str:
        remote = remote_target()
        return f"HOMERUN_URL={remote[0]}" if remote else f"HOMERUN_HOME={self.home}"

    # The daemon

    def client(self) -> Client:
        """The daemon's client; DaemonUnavailable comes with the first call if none runs."""
        if self._given is not None:
            return self._given
        if self._connected is None:
            self._connected = connect(self.paths().admin_socket)
        return self._connected

    def client_starting_daemon(self) -> Client:
        """The client of the running daemon; one is started in the background if none runs
        on this machine (a remote daemon is not started from here)."""
        if self._given is not None or self._connected is not None or remote_target():
            return self.client()
        home = self.home
        settings = load_settings(home)
        if not _daemon.running(settings.paths(home)):
            self._connected = _daemon.start_in_background(
                home, settings, sleep=self.sleep, clock=self.clock
            )
        return self.client()

    def daemon_answers(self) -> bool:
        """Whether the daemon of this HOMERUN_HOME (or the given client) answers now."""
        if self._given is None:
            return _daemon.running(self.paths())
        try:
            self._given.status()
        except HomerunError:
            return False
        return True

    def daemon_alive(self) -> bool:
        """Whether the daemon's process still lives (answering or not); with a given client,
        whether it answers."""
        if self._given is None:
            return _daemon.alive(self.paths())
        return self.daemon_answers()

    # The user

    @property
    def interactive(self) -> bool:
        """Whether someone at a terminal can answer a question (not a script, not a test)."""
        return sys.stdin.isatty()

    def ask(self, question: str) -> str | None:
        """The answer, stripped and lowercased; None at the end of input."""
        try:
            return input(question).strip().lower()
        except EOFError:
            return None

    def confirm(self, consequence: str, *, quiet: bool) -> None:
        """gcloud's confirmation before a delete: asked only on a terminal without -q."""
        if quiet or not self.interactive:
            return
        print(consequence)
        print()
        if self.ask("Do you want to continue (Y/n)? ") not in ("", "y", "yes"):
            raise Aborted("Aborted by user: nothing was changed.")
