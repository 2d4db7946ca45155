"""Alembic environment: runs on the connection that core.database.migrate hands over."""

from __future__ import annotations

import importlib

from alembic import context

from core.database import Base

# Autogenerate compares against every domain's tables; core does not import them otherwise.
for _module in (
    "ingest.tables",
    "models.tables",
    "rca.tables",
    "rca.alertmanager.tables",
    "remediation.tables",
    "api.tables",
    "prognos.engine.tables",
    "core.selfmetrics.tables",
    "core.leadership",
):
    importlib.import_module(_module)

target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through core.database.migrate()")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
