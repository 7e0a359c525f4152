"""The editor's own tables: path searches launched from the editor, kept so they outlive the node process."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, Text

metadata = MetaData()

searches = Table(
    "editor_searches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(96), nullable=False, index=True),  # the user who started it
    Column("node", String(512), nullable=False),  # the node home that runs it (one process at a time)
    Column("state", String(16), nullable=False),  # running | done | failed | cancelled | interrupted
    Column("phase", String(32), nullable=False),
    Column("done", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("config", Text, nullable=False),  # JSON: what was asked (graph, suite, budget, ...)
    Column("preview", Text, nullable=False),  # JSON: what the search planned to spend
    Column("result", Text, nullable=True),  # JSON: the final result, or what was found so far
    Column("error", Text, nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("finished_at", String(32), nullable=True),
)
