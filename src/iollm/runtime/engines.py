"""Which engine runs a spec: llama.cpp in-process for GGUF, transformers for safetensors, HTTP for remote
servers, and a worker process in the environment's own virtual environment when it pins packages."""

from __future__ import annotations

from .backends import Backend
from .backends.remote import RemoteBackend
from .resolve import ModelSpec, NotRunnable, Resolver

DEFAULT_CONTEXT = 4096


def make_factory(resolver: Resolver, default_context: int = DEFAULT_CONTEXT, workers=None):
    """Returns spec -> Backend. ``workers`` (optional) starts out-of-process engines for REQUIRES."""

    def build(spec: ModelSpec) -> Backend:
        if spec.backend == "remote":
            if not spec.remote_url or not spec.remote_model:
                raise NotRunnable(f"{spec.model_id}: a remote environment needs a URL and a model name")
            return RemoteBackend(spec.remote_url, spec.remote_model, spec.remote_api)
        location = resolver.materialize(spec)
        context = int(spec.parameters.get("num_ctx") or default_context)
        if spec.requires and workers is not None:
            return workers.start(spec, location, context)
        if spec.backend == "llama.cpp":
            from .backends.llamacpp import LlamaCppBackend

            batch = int(spec.parameters.get("num_batch") or 512)
            threads = int(spec.parameters.get("num_thread") or 0) or None  # Modelfile's num_thread
            return LlamaCppBackend(
                location,
                n_ctx=context,
                template=spec.template,
                system=spec.system,
                n_batch=batch,
                n_threads=threads,
            )
        if spec.backend == "transformers":
            from .backends.transformers import TransformersBackend

            return TransformersBackend(location, n_ctx=context, template=spec.template, system=spec.system)
        raise NotRunnable(f"{spec.model_id}: unknown backend {spec.backend!r}")

    return build
