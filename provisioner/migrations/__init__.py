"""Alembic migrations of the provisioner's database (run by ``provisioner.db.upgrade``)."""
