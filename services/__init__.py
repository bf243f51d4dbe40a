"""Operations on the domain that nodes, sync workers, the API and the CLI all call.

Leases, deploys, incidents, servers (register, check, provision), secrets and recovery. A service never imports
``sync_workers``, ``graphs``, ``nodes``, ``runtime`` or an entry point: one that must wake a thread returns what to
resume, or takes a callback from the layer above. Dependencies: ``infra``, ``core``, ``models``, ``prompts``.
"""
