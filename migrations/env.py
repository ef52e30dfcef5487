"""Alembic environment: the schema is `control.db.models`' metadata; the URL comes from the settings
unless the caller (control/db/migrate.py) put one in the config."""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import create_engine

from control.db import models  # noqa: F401 - registers the tables on Base.metadata
from control.db.base import Base
from control.settings import get_settings

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url())
    with engine.connect() as connection:
        # batch mode lets later migrations alter tables on SQLite (copy-and-move)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
