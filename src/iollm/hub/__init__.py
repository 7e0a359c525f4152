"""Model Network Layer: repositories of models, datasets and spaces; accounts; HF-compatible API; mirrors."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ANONYMOUS": "accounts",
        "Accounts": "accounts",
        "Identity": "accounts",
        "native_router": "api:router",
        "import_archive": "archive",
        "list_archive": "archive",
        "plan_export": "archive",
        "hf_catch_all": "hf_api",
        "hf_router": "hf_api:router",
        "PullThrough": "mirror",
        "mirror_repo": "mirror",
        "oci_router": "oci_api:router",
        "CommitInfo": "repos",
        "DEFAULT_BRANCH": "repos",
        "Hub": "repos",
        "Repo": "repos",
        "ensure_local_admin": "seed",
        "publish_file": "seed",
        "seed_packaged_models": "seed",
        "write_secret_file": "seed",
        "metadata": "tables",
    },
)
