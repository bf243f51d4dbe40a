"""What the runtime refuses, and why; nothing was changed in any of these cases (the API: 403, 404, 409, 422)."""

from __future__ import annotations


class RuntimeInputError(ValueError):
    """Bad input to the runtime; nothing was changed. The subclasses say which (the API: 403, 404, 409, else 422)."""


class UnknownThread(RuntimeInputError):
    """No checkpoint exists for the thread id."""


class UnknownProject(RuntimeInputError):
    """No project has that name."""


class ThreadStateConflict(RuntimeInputError):
    """The thread's state does not allow the request: it waits for an answer, has nothing pending, or is running."""


class NotAllowed(RuntimeInputError):
    """The identity may not do this (its role is too low, or a rule such as the separate approver forbids it)."""
