"""`upgrade()`: bring the database to the newest Alembic revision (CLI, API and worker start-up).

The Alembic config is built in code from the repository's `migrations/` folder, so it works from
any working directory; `alembic.ini` is there for developers running `alembic` by hand.
"""

from __future__ import annotations

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config():
    from alembic.config import Config

    from control.settings import get_settings

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # "%" is ConfigParser interpolation syntax; URLs may contain it (escaped passwords)
    config.set_main_option("sqlalchemy.url", get_settings().database_url.replace("%", "%%"))
    return config


def upgrade(revision: str = "head") -> None:
    from alembic import command

    from control.settings import get_settings

    get_settings().ensure_dirs()
    command.upgrade(alembic_config(), revision)
