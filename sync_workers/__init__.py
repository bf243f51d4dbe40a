"""Background workers that reconcile the database with reality (GitHub, the servers); run by ``orchestrator sync``."""
