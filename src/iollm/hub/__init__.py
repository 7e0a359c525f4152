"""Model Network Layer: repositories of models, datasets and spaces; accounts; HF-compatible API; mirrors."""

from .accounts import ANONYMOUS, Accounts, Identity
from .api import router as native_router
from .archive import import_archive, list_archive, plan_export
from .hf_api import hf_catch_all
from .hf_api import router as hf_router
from .mirror import PullThrough, mirror_repo
from .oci_api import router as oci_router
from .repos import DEFAULT_BRANCH, CommitInfo, Hub, Repo
from .seed import ensure_local_admin, publish_file, seed_packaged_models, write_secret_file
from .tables import metadata

__all__ = [
    "ANONYMOUS",
    "DEFAULT_BRANCH",
    "Accounts",
    "CommitInfo",
    "Hub",
    "Identity",
    "PullThrough",
    "Repo",
    "ensure_local_admin",
    "hf_catch_all",
    "hf_router",
    "import_archive",
    "list_archive",
    "metadata",
    "mirror_repo",
    "native_router",
    "oci_router",
    "plan_export",
    "publish_file",
    "seed_packaged_models",
    "write_secret_file",
]
