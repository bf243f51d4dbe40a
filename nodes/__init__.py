"""Node bodies by role, registered by reference in ``graphs``; they call ``services`` and read ``graphs.state``."""
