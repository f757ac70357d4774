"""Alembic's entry for `python -m devstack.migrations`: the caller puts the service's
metadata, version table and an open connection in config.attributes."""

from alembic import context

from core.migrations import configure_context

configure_context(context, context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
