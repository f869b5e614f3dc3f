"""The admin API's paths: the one list the server's route table and the admin client share.

Owns the path of every admin route (the route table in :mod:`pysyncer.admin.app` says what
each one does and who may call it). Imports nothing: any part that talks to the admin API
may use it.
"""

from __future__ import annotations

from typing import Final

HEALTH: Final = "/v1/health"
HEALTH_LIVE: Final = "/v1/health/live"
HEALTH_READY: Final = "/v1/health/ready"
MEMBERS: Final = "/v1/members"
LEAVE: Final = "/v1/leave"
FORCE_LEAVE: Final = "/v1/force-leave"
MONITOR: Final = "/v1/monitor"
COORDINATES: Final = "/v1/coordinates"
EVENTS: Final = "/v1/events"
QUERIES: Final = "/v1/queries"
KEYS: Final = "/v1/keys"
SYNC_STATUS: Final = "/v1/sync/status"
SYNC_FULL: Final = "/v1/sync/full"
SYNC_STREAM: Final = "/v1/sync/stream"
SYNC_DIFF: Final = "/v1/sync/diff"
SYNC_FILTERS_DRY_RUN: Final = "/v1/sync/filters/dry-run"
METRICS: Final = "/metrics"
