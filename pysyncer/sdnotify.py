"""systemd's notify protocol: ``READY=1``, ``STOPPING=1``, ``STATUS=`` and the watchdog.

Owns talking to the service manager through ``$NOTIFY_SOCKET`` (one datagram per message,
``KEY=VALUE`` lines; a path starting with ``@`` is an abstract socket) and reading the
watchdog period from ``$WATCHDOG_USEC`` (for this process when ``$WATCHDOG_PID`` says so).
:func:`notify_loop` sends ``READY=1`` once the daemon is first ready and ``WATCHDOG=1``
every half period while its event loop is healthy, so a stalled daemon is restarted.
Without ``$NOTIFY_SOCKET`` every call does nothing. Standard library only; no
dependency on libsystemd. It decides nothing about readiness itself.

Imports: -.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "notify_loop"]

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between readiness checks while waiting to send READY=1


class Notifier:
    """Sends notify messages to the socket named by ``environ`` (``os.environ``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog = _watchdog_seconds(env)
        self.failures = 0
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """One message of ``KEY=value`` lines (``send(READY="1")``); False when not sent."""
        if not self.enabled:
            return False
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(text.encode(), self.address)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:  # once: a missing socket stays missing
                log.warning("systemd notify socket %s: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a wrapper)
    return int(usec) / 1_000_000


async def notify_loop(
    notifier: Notifier, ready: Callable[[], bool], healthy: Callable[[], bool]
) -> None:
    """``READY=1`` once ``ready()``, then ``WATCHDOG=1`` at half the watchdog period
    while ``healthy()``. Returns at once without a notify socket."""
    if not notifier.enabled:
        return
    watchdog = notifier.watchdog
    period = POLL if watchdog is None else min(POLL, watchdog / 2)
    loop = asyncio.get_running_loop()
    next_watchdog = loop.time()
    announced = False
    while True:
        if not announced and ready():
            announced = notifier.send(READY="1", STATUS="ready")
        if watchdog is not None and loop.time() >= next_watchdog:
            if healthy():  # a stalled loop sends nothing: systemd restarts the service
                notifier.send(WATCHDOG="1")
            next_watchdog = loop.time() + watchdog / 2
        await asyncio.sleep(period)
