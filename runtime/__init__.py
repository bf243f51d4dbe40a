"""The runtime the CLI, the API and the sync's provisioner share: turns, streams, threads, interrupts, resumes.

It starts a turn and streams it, lists threads and their pending interrupts, resumes, and continues a stopped run.
It sits above the graphs it compiles and runs, and below the entry points that call it; it holds no graph logic.
"""
