"""pysyncer's reliability lab (not shipped in the wheels): real network namespaces,
shaped links, faults on a seeded schedule, churn and an invariant checker.

``python -m lab.chaos`` runs it; docs/reliability.md says how and what it checks. The
lab drives pysyncer only from outside (processes, REST, the admin API) and must not be
imported by pysyncer.
"""
