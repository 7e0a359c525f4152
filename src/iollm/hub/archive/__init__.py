"""Self-contained archives of commits as OCI image layouts: export on one node, import on another that
has no network (sneakernet, air-gapped sites; Ollama's long-standing "export/import" request).

An archive is a tar of an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``).
Each exported commit is one OCI image manifest whose config is the commit's canonical iollm manifest
(so the importer recomputes the commit id) and whose layers are the raw file bytes, named by the
SHA-256 the iollm manifest already records (CNCF ModelPack media type for weights). A commit that
builds on another one (an environment on its base model) brings that commit along.

The tar is deterministic (fixed entry order, mtime 0, uid/gid 0, PAX), so the same commits give the
same archive bytes on every node, and an import verifies every byte before it stores anything.

This package is the node's half only: ``layout`` (the format), ``export`` (plan and stream),
``read`` (the tar, mapped in place), ``check`` (verify before storing) and ``ingest`` (store).
The client that downloads and uploads archives is ``iollm.protocol.archive_client``.
"""

from .check import ArchivedCommit, IndexEntry, check_layout, list_archive, read_commit, verify_blobs
from .export import ExportedCommit, ExportPlan, base_references, build_plan, plan_export
from .ingest import RefPlan, import_archive, plan_refs
from .layout import Progress, tar_header
from .read import Archive, Member, read_members, safe_member_name

__all__ = [
    "Archive",
    "ArchivedCommit",
    "ExportPlan",
    "ExportedCommit",
    "IndexEntry",
    "Member",
    "Progress",
    "RefPlan",
    "base_references",
    "build_plan",
    "check_layout",
    "import_archive",
    "list_archive",
    "plan_export",
    "plan_refs",
    "read_commit",
    "read_members",
    "safe_member_name",
    "tar_header",
    "verify_blobs",
]
