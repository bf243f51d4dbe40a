"""One module per graph: wiring and routers; ``state`` and ``context`` hold the schemas nodes read and write."""
