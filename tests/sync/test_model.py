"""The shared data model: service keys, instance fields and digests, records."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections import OrderedDict
from types import MappingProxyType

import pytest

from pysyncer._core import digest, slots
from pysyncer.model import (
    ORIGIN_DC_PROPERTY,
    Instance,
    Record,
    ServiceKey,
    is_copy,
    record_key_hash,
)

CART = ServiceKey("shop", "cart", "1.0.0", "production")


def test_service_key_text_round_trip_and_slot() -> None:
    assert CART.text() == "default/default/production/shop/cart/1.0.0"
    assert ServiceKey.parse(CART.text()) == CART
    assert CART.slot == slots.key_slot(CART.text())
    with pytest.raises(ValueError):
        ServiceKey.parse("a/b")


def test_instance_fields_round_trip_and_digest_tracks_content() -> None:
    one = Instance(CART, "i1", "host-1", ("rest:10.0.0.1:8080",), properties={"zone": "a"})
    assert Instance.from_fields(CART, one.fields()) == one
    assert one.ttl == 120
    moved = Instance(CART, "i1", "host-1", ("rest:10.0.0.2:8080",), properties={"zone": "a"})
    assert one.digest() != moved.digest()
    assert one.digest() == Instance.from_fields(CART, one.fields()).digest()
    # the digest written from the parts is the one of the fields (their shape lives twice)
    assert one.digest() == digest.record_digest(CART.text(), one.fields())
    with pytest.raises(ValueError):
        Instance.from_fields(CART, {"id": "x"})


def test_copies_and_records() -> None:
    copy = Instance(CART, "c1", "h", properties={ORIGIN_DC_PROPERTY: "east"})
    assert is_copy(copy) and not is_copy(Instance(CART, "o1", "h"))
    record = Record("east", CART, "i1", 7, Instance(CART, "i1", "h"))
    tombstone = Record("east", CART, "i1", 8, None)
    assert record.key_hash == tombstone.key_hash == record_key_hash("east", "i1")
    assert record.key_hash != record_key_hash("west", "i1")
    assert tombstone.deleted and tombstone.digest == 0
    assert record.slot == CART.slot


def test_properties_dict_is_a_new_plain_dict_whatever_mapping_holds_them() -> None:
    key = ServiceKey("shop", "cart", "1.0.0")
    given = {"zone": "a", "rack": "7"}
    for held in (given, MappingProxyType(given), MappingProxyType(OrderedDict(given))):
        inst = Instance(key, "i1", "h", properties=held)
        copied = inst.properties_dict()
        assert type(copied) is dict and copied == given
        copied["zone"] = "b"  # a copy: the instance's properties stay as they were
        assert inst.properties["zone"] == "a" and inst.properties_dict() == given


def test_a_service_keys_text_slot_and_hash_are_its_fields_and_survive_a_copy() -> None:
    key = ServiceKey("shop", "cart", "1.0.0", "production", "acme/prod")
    same = ServiceKey("shop", "cart", "1.0.0", "production", "acme/prod")
    assert key == same and hash(key) == hash(same) and {key: 1}[same] == 1
    assert key.text() == "acme/prod/production/shop/cart/1.0.0"
    assert key.slot == slots.key_slot(key.text())
    moved = dataclasses.replace(key, version="2.0.0")
    assert moved.text() == "acme/prod/production/shop/cart/2.0.0" and moved != key
    assert moved.slot == slots.key_slot(moved.text())
    for again in (pickle.loads(pickle.dumps(key)), copy.copy(key), copy.deepcopy(key)):
        assert again == key and hash(again) == hash(key) and again.text() == key.text()
    # made again from its fields, not from a hash another process worked out
    assert pickle.dumps(key).count(b"_hash") == 0
    assert repr(key) == (
        "ServiceKey(app='shop', name='cart', version='1.0.0', environment='production', "
        "project='acme/prod')"
    )
