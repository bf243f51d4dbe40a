"""Adapters to the outside world, one module each: Ansible, git, forges, the Developer's workspace, test runs.

They know nothing of projects' lifecycles or graphs: ``services`` gives them meaning. Dependencies: ``core``,
``models``.
"""
