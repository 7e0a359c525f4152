"""Which engine runs a spec: the backend its environment names (``backends.registry``: llama.cpp
in-process for GGUF, transformers for safetensors, HTTP for remote servers), in a worker process in the
environment's own virtual environment when it pins packages."""

from __future__ import annotations

from .backends import Backend, registry
from .backends.registry import LoadOptions
from .resolve import ModelSpec, NotRunnable, Resolver

DEFAULT_CONTEXT = 4096


def make_factory(resolver: Resolver, default_context: int = DEFAULT_CONTEXT, workers=None):
    """Returns spec -> Backend. ``workers`` (optional) starts out-of-process engines for REQUIRES."""

    def build(spec: ModelSpec) -> Backend:
        try:
            kind = registry.named(spec.backend)
        except registry.UnknownBackend as exc:
            raise NotRunnable(f"{spec.model_id}: {exc}") from exc
        if kind.remote:
            if not spec.remote_url or not spec.remote_model:
                raise NotRunnable(f"{spec.model_id}: a remote environment needs a URL and a model name")
            return kind.load(LoadOptions(url=spec.remote_url, model=spec.remote_model, api=spec.remote_api))
        location = resolver.materialize(spec)
        context = int(spec.parameters.get("num_ctx") or default_context)
        if spec.requires and workers is not None:
            return workers.start(spec, location, context)
        return kind.load(
            LoadOptions(
                location,
                context,
                template=spec.template,
                system=spec.system,
                batch=int(spec.parameters.get("num_batch") or 512),
                threads=int(spec.parameters.get("num_thread") or 0) or None,  # Modelfile's num_thread
            )
        )

    return build
