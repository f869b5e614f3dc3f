"""The embedded registry's random ids: version-4 UUIDs' hex, never handed out twice."""

from __future__ import annotations

import os
import uuid

from pysyncer.servicecenter.ids import IDS_PER_FILL, new_id


def test_ids_are_version_4_uuids_in_hex_and_do_not_repeat_across_refills() -> None:
    ids = [new_id() for _ in range(3 * IDS_PER_FILL + 7)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_hand_out_the_ids_its_parent_will() -> None:
    new_id()  # the buffer holds ids the parent has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent, then out
        try:
            os.write(write, "".join(new_id() for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    parent = {new_id() for _ in range(8)}
    assert len(child) == 8 and not child & parent
