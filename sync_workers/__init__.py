"""Background workers that schedule services to keep the database equal to GitHub and the servers."""
