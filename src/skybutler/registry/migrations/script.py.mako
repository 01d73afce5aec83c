"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Every revision ends by recording its schema version (bump SCHEMA_VERSION in
registry/schema.py to match), and reads the repository's universe with
`stored_universe` when it needs dimension columns. See registry/_migrate.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from skybutler.registry._migrate import set_schema_version, stored_universe
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    set_schema_version(op.get_bind(), ...)


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
    set_schema_version(op.get_bind(), ...)
