"""Gossip layer: a Serf-compatible membership pool (memberlist SWIM + Lifeguard, Serf events).

Owns the wire-level pieces that are not hot paths (keyring and AES-GCM framing, LZW),
the timing formulas, and later the membership state machine and the Serf layer. Packet
encoding and the timer structure are compiled hot paths in :mod:`pysyncer._core`.
Nothing here knows about registries or the sync engine.
"""
