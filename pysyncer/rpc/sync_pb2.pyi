# ruff: noqa
# mypy: allow-subclassing-any, disable-error-code="import-untyped, type-arg"
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("dc", "since_revision", "epoch", "max_batch")
    DC_FIELD_NUMBER: _ClassVar[int]
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    dc: str
    since_revision: int
    epoch: str
    max_batch: int
    def __init__(
        self,
        dc: _Optional[str] = ...,
        since_revision: _Optional[int] = ...,
        epoch: _Optional[str] = ...,
        max_batch: _Optional[int] = ...,
    ) -> None: ...

class PeerBatch(_message.Message):
    __slots__ = (
        "dc",
        "epoch",
        "revision",
        "reset",
        "heartbeat",
        "more",
        "count",
        "records",
        "committed_at",
    )
    DC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    dc: str
    epoch: str
    revision: int
    reset: bool
    heartbeat: bool
    more: bool
    count: int
    records: bytes
    committed_at: float
    def __init__(
        self,
        dc: _Optional[str] = ...,
        epoch: _Optional[str] = ...,
        revision: _Optional[int] = ...,
        reset: _Optional[bool] = ...,
        heartbeat: _Optional[bool] = ...,
        more: _Optional[bool] = ...,
        count: _Optional[int] = ...,
        records: _Optional[bytes] = ...,
        committed_at: _Optional[float] = ...,
    ) -> None: ...

class RangeRequest(_message.Message):
    __slots__ = ("since", "until", "limit", "epoch")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    since: int
    until: int
    limit: int
    epoch: str
    def __init__(
        self,
        since: _Optional[int] = ...,
        until: _Optional[int] = ...,
        limit: _Optional[int] = ...,
        epoch: _Optional[str] = ...,
    ) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ("dc",)
    DC_FIELD_NUMBER: _ClassVar[int]
    dc: str
    def __init__(self, dc: _Optional[str] = ...) -> None: ...

class DigestTable(_message.Message):
    __slots__ = ("dc", "revision", "epoch", "table")
    DC_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    dc: str
    revision: int
    epoch: str
    table: bytes
    def __init__(
        self,
        dc: _Optional[str] = ...,
        revision: _Optional[int] = ...,
        epoch: _Optional[str] = ...,
        table: _Optional[bytes] = ...,
    ) -> None: ...

class SlotsRequest(_message.Message):
    __slots__ = ("slots",)
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    slots: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, slots: _Optional[_Iterable[int]] = ...) -> None: ...

class SlotBatch(_message.Message):
    __slots__ = ("dc", "slot", "last", "count", "records")
    DC_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    dc: str
    slot: int
    last: bool
    count: int
    records: bytes
    def __init__(
        self,
        dc: _Optional[str] = ...,
        slot: _Optional[int] = ...,
        last: _Optional[bool] = ...,
        count: _Optional[int] = ...,
        records: _Optional[bytes] = ...,
    ) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("dc", "node", "revision", "epoch", "version", "exported")
    DC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_FIELD_NUMBER: _ClassVar[int]
    dc: str
    node: str
    revision: int
    epoch: str
    version: str
    exported: int
    def __init__(
        self,
        dc: _Optional[str] = ...,
        node: _Optional[str] = ...,
        revision: _Optional[int] = ...,
        epoch: _Optional[str] = ...,
        version: _Optional[str] = ...,
        exported: _Optional[int] = ...,
    ) -> None: ...

class ServiceRequest(_message.Message):
    __slots__ = ("name", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    limit: int
    def __init__(self, name: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListedInstance(_message.Message):
    __slots__ = (
        "service",
        "instance_id",
        "host",
        "endpoints",
        "status",
        "properties",
        "health_interval",
        "health_times",
    )
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEALTH_TIMES_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    host: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    status: str
    properties: _containers.ScalarMap[str, str]
    health_interval: int
    health_times: int
    def __init__(
        self,
        service: _Optional[str] = ...,
        instance_id: _Optional[str] = ...,
        host: _Optional[str] = ...,
        endpoints: _Optional[_Iterable[str]] = ...,
        status: _Optional[str] = ...,
        properties: _Optional[_Mapping[str, str]] = ...,
        health_interval: _Optional[int] = ...,
        health_times: _Optional[int] = ...,
    ) -> None: ...

class ServiceListing(_message.Message):
    __slots__ = ("dc", "node", "instances", "truncated", "filters")
    DC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    dc: str
    node: str
    instances: _containers.RepeatedCompositeFieldContainer[ListedInstance]
    truncated: bool
    filters: str
    def __init__(
        self,
        dc: _Optional[str] = ...,
        node: _Optional[str] = ...,
        instances: _Optional[_Iterable[_Union[ListedInstance, _Mapping]]] = ...,
        truncated: _Optional[bool] = ...,
        filters: _Optional[str] = ...,
    ) -> None: ...
