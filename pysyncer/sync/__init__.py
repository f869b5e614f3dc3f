"""The sync engine: export local instances, import remote ones, repair by digests.

Owns the semantics of section 2 of the design: origin ownership (only local
instances are exported, never copies), revisioned change logs, idempotent at-least-once
apply, no delete before a full view, renewal of copies, slot-digest anti-entropy. It
talks to the registry only through an adapter, persists only through a store, reaches
peers only through the RPC client, and learns of peers only from gossip.

Imports: aiowait, _core, adapters, admin, errors, gossip, hostport, model, redact, rpc,
shardeddict, store, supervisor.
"""
