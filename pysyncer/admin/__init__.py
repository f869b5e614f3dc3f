"""The HTTP admin API of a running daemon (JSON on ``--admin-addr``) and its metrics.

Owns request parsing, response shapes and error bodies of the admin contract. It talks
to the rest of the daemon only through :class:`pysyncer.admin.app.AdminBackend`, so it
never reaches into gossip or sync internals.
"""
