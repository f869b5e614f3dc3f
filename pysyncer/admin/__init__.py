"""The HTTP admin API of a running daemon (JSON on ``--admin-addr``) and its metrics.

Owns the admin contract: the payload types (:mod:`~pysyncer.admin.payloads`, a leaf of
declarations that any layer producing a payload may import), the route table and error
bodies (:mod:`~pysyncer.admin.app`), reading and checking request bodies
(:mod:`~pysyncer.admin.bodies`), the presenter that fills the
answers from the gossip stack and the sync engine (:mod:`~pysyncer.admin.presenter`),
the Prometheus collectors (:mod:`~pysyncer.admin.metrics`) and the command line's client
(:mod:`~pysyncer.admin.client`). The server talks to the daemon only through the backend
protocols of :mod:`~pysyncer.admin.app`; the presenter reads gossip through the
``GossipStack`` API and sync through ``SyncEngine.status()``, never their internals.

Imports: aiowait, _core, errors, gossip, hostport, httpbody, logs, redact.
"""
