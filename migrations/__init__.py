"""Alembic migrations of the shopdesk database (run them with `shopdesk.db.migrate`)."""
