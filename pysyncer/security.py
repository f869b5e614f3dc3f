"""A running daemon's security posture: TLS files watched, expiry and exposure warned about.

Owns what the daemon does over time about its protection: it looks at the TLS files every
:data:`TLS_POLL_INTERVAL` seconds (a changed file is re-read by
:class:`~pysyncer.rpc.tls.TlsFiles`, so new connections use it without a restart), warns
once a day from :data:`EXPIRY_WARNING` before the certificate or the CA expires, and
repeats a WARNING every :data:`INSECURE_WARNING_INTERVAL` while the daemon runs
``--insecure`` with something exposed unprotected. Its Prometheus families:
``pysyncer_tls_cert_expiry_timestamp_seconds{file}``, ``pysyncer_tls_reloads_total``,
``pysyncer_tls_reload_failures_total``, ``pysyncer_identity_conflicts_total`` and
``pysyncer_insecure``. Must not import the daemon, the configuration or the sync layer: it
is handed the files, the reasons and a counter to read.

Imports: rpc.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pysyncer.rpc.tls import TlsFiles

__all__ = [
    "EXPIRY_WARNING",
    "INSECURE_WARNING_INTERVAL",
    "TLS_POLL_INTERVAL",
    "SecurityCollector",
    "SecurityWatch",
]

log = logging.getLogger("pysyncer.security")

TLS_POLL_INTERVAL = 5.0  # seconds between looks at the TLS files
EXPIRY_WARNING = 30 * 86400.0  # warn this long before the certificate or CA expires
EXPIRY_REPEAT = 86400.0  # then once a day
INSECURE_WARNING_INTERVAL = 3600.0


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds")


class SecurityWatch:
    """The daemon's periodic security duties (:meth:`run` until cancelled)."""

    def __init__(
        self,
        tls: TlsFiles | None,
        insecure_reasons: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tls = tls
        self.insecure_reasons = list(insecure_reasons)
        self._clock = clock
        self._expiry_warned: dict[str, float] = {}  # file -> when last warned
        self._insecure_warned = 0.0

    @property
    def insecure(self) -> bool:
        return bool(self.insecure_reasons)

    def announce(self) -> None:
        """The start-up lines: the sync plane's identity, or what runs unprotected."""
        if self.tls is not None:
            material = self.tls.current()
            log.info(
                "sync RPC: mutual TLS as %s (certificate expires %s)",
                material.identity,
                _when(material.cert_expires),
            )
        self.check()

    def check(self) -> None:
        """One look: re-read changed TLS files, warn about expiry and exposure when due."""
        now = self._clock()
        if self.tls is not None:
            material = self.tls.current()
            for what, expires in (("certificate", material.cert_expires),
                                  ("CA", material.ca_expires)):  # fmt: skip
                self._warn_expiry(what, expires, now)
        if self.insecure and now - self._insecure_warned >= INSECURE_WARNING_INTERVAL:
            self._insecure_warned = now
            log.warning(
                "running --insecure: %s; anyone on the network can join the pool or read "
                "and feed the sync plane",
                "; ".join(self.insecure_reasons),
            )

    def _warn_expiry(self, what: str, expires: float, now: float) -> None:
        left = expires - now
        if left > EXPIRY_WARNING:
            self._expiry_warned.pop(what, None)  # rotated: warn again near the new date
            return
        if now - self._expiry_warned.get(what, -EXPIRY_REPEAT) < EXPIRY_REPEAT:
            return
        self._expiry_warned[what] = now
        assert self.tls is not None
        if left <= 0:
            log.warning(
                "tls: the %s expired at %s: peers refuse this syncer (replace %s)",
                what,
                _when(expires),
                self.tls.paths[0 if what == "CA" else 1],
            )
        else:
            log.warning(
                "tls: the %s expires in %.0f days (%s): replace %s; the daemon picks the new "
                "file up without a restart",
                what,
                left / 86400,
                _when(expires),
                self.tls.paths[0 if what == "CA" else 1],
            )

    async def run(self) -> None:
        """:meth:`check` every :data:`TLS_POLL_INTERVAL` seconds, until cancelled."""
        while True:
            await asyncio.sleep(TLS_POLL_INTERVAL)
            self.check()


class SecurityCollector(Collector):
    """The posture's metrics, read at scrape time."""

    def __init__(self, watch: SecurityWatch, identity_conflicts: Callable[[], int]) -> None:
        self._watch = watch
        self._conflicts = identity_conflicts

    def collect(self) -> Iterator[Metric]:
        insecure = GaugeMetricFamily(
            "pysyncer_insecure", "1 while an exposed address runs without encryption or TLS"
        )
        insecure.add_metric([], 1.0 if self._watch.insecure else 0.0)
        yield insecure
        conflicts = CounterMetricFamily(
            "pysyncer_identity_conflicts",
            "syncers seen claiming a data center another, established syncer serves",
        )
        conflicts.add_metric([], float(self._conflicts()))
        yield conflicts
        tls = self._watch.tls
        if tls is None:
            return
        material = tls.current()
        expiry = GaugeMetricFamily(
            "pysyncer_tls_cert_expiry_timestamp_seconds",
            "when the sync plane's certificate (file=cert) and CA (file=ca) expire",
            labels=["file"],
        )
        expiry.add_metric(["cert"], material.cert_expires)
        expiry.add_metric(["ca"], material.ca_expires)
        yield expiry
        reloads = CounterMetricFamily(
            "pysyncer_tls_reloads", "new TLS files taken into use without a restart"
        )
        reloads.add_metric([], float(tls.reloads))
        yield reloads
        failures = CounterMetricFamily(
            "pysyncer_tls_reload_failures", "changed TLS files refused (the old ones kept)"
        )
        failures.add_metric([], float(tls.reload_failures))
        yield failures
