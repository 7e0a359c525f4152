"""The node: one FastAPI app that mounts every layer's routes, bounds every request and answers every error
as JSON; ``iollm up`` runs it."""
