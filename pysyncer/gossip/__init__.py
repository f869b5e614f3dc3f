"""Gossip layer: a Serf-compatible membership pool (memberlist SWIM + Lifeguard, Serf events).

Owns everything a pysyncer node needs to be a member of a pool that real ``serf agent``
processes can join, one job per module, from the bytes up:

* wire: ``messages`` and ``serf_messages`` (every memberlist and Serf message shape),
  ``packet`` and ``stream`` (UDP packet and TCP stream framing), ``keyring`` (AES-GCM),
  ``lzw``;
* memberlist: ``timing`` (every timeout formula and the default profiles),
  ``membership`` (the member state machine), ``probe`` (the SWIM probe cycle),
  ``broadcast`` (transmit-limited queues), ``node`` (one node's protocol behaviour),
  ``transport`` and ``agent`` (real sockets), ``clock`` and ``simulator``;
* Serf: ``serf`` (the :class:`~pysyncer.gossip.serf.Serf` object and its public API),
  composed of ``serf_model``, ``serf_intents``, ``serf_queries``, ``serf_reaper`` and
  ``serf_delegate``; ``lamport``, ``coalesce``, ``keymanager``, ``snapshot``;
* assembly: ``settings`` (typed settings) and ``stack`` (the pieces wired together).

Packet encoding and the timer structure are compiled hot paths in :mod:`pysyncer._core`.
Must not import registries, the store, the sync engine, the admin API or the daemon:
nothing here knows about them (``tests/gossip/test_gossip_imports.py`` checks this and
the import rules each module's docstring states).

Imports: _core, errors, hostport, supervisor.
"""
