"""One database for the node (SQLite by default, PostgreSQL by URL), shared by every layer.

Each layer declares its own tables on its own ``MetaData`` and talks to other layers only through
their public functions, never their tables. This package only opens engines and creates schemas.
"""

from .engine import Database, insert_ignore, open_database, utc_now_iso

__all__ = ["Database", "insert_ignore", "open_database", "utc_now_iso"]
