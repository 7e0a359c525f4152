"""Universal environment: environment files, inference backends, OpenAI- and Ollama-compatible serving,
usage metering."""

from .backends import BackendFailure, ChatMessage, ContextTooLong, GenerationParams
from .engines import DEFAULT_CONTEXT, make_factory
from .envfile import BaseRef, Envfile, EnvfileError, load_envfile, parse_envfile
from .environments import Environments
from .manager import ModelManager, Overloaded
from .metrics import router as metrics_router
from .ollama_api import router as ollama_router
from .openai_api import hot_routes as openai_hot_routes
from .openai_api import router as openai_router
from .openai_responses import router as responses_router
from .resolve import ModelNotFound, ModelSpec, NotRunnable, Resolver, split_model_id
from .service import Call, Runtime, params_for
from .usage import UsageLog, UsageRecord
from .usage import metadata as usage_metadata
from .venvs import VenvInfo, VenvManager
from .workers import WorkerPool

__all__ = [
    "DEFAULT_CONTEXT",
    "BackendFailure",
    "BaseRef",
    "Call",
    "ChatMessage",
    "ContextTooLong",
    "Envfile",
    "EnvfileError",
    "Environments",
    "GenerationParams",
    "ModelManager",
    "ModelNotFound",
    "ModelSpec",
    "NotRunnable",
    "Overloaded",
    "Resolver",
    "Runtime",
    "UsageLog",
    "UsageRecord",
    "VenvInfo",
    "VenvManager",
    "WorkerPool",
    "load_envfile",
    "make_factory",
    "metrics_router",
    "ollama_router",
    "openai_hot_routes",
    "openai_router",
    "params_for",
    "parse_envfile",
    "responses_router",
    "split_model_id",
    "usage_metadata",
]
