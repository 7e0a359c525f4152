"""Typed calls to the node's compute, mining and leaderboard APIs, mixed into ``NodeClient``.

Commands name what they ask for (``client.jobs(state="running")``) instead of spelling URLs, so a
route lives in one place on each side of the wire. Each call is one JSON request through
``NodeClient.get_json``/``post_json`` and returns the node's reply as sent (commands print it with
``--json`` unchanged); errors come back as the node's own exception classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote


class ServiceCalls:
    """The node's services beyond the sharing protocol: compute pool, joint mining, leaderboards."""

    if TYPE_CHECKING:  # provided by NodeClient

        def get_json(self, path: str, **kwargs: Any) -> Any: ...

        def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any: ...

        def delete_json(self, path: str, **kwargs: Any) -> Any: ...

    # -- accounts: tokens, users, organizations ----------------------------------------------------

    def create_token(self, name: str, scope: str, user: str | None = None) -> dict[str, Any]:
        """A new token (its secret is in the reply, shown once); ``user`` mints for another user (admin)."""
        body: dict[str, Any] = {"name": name, "scope": scope}
        if user:
            body["user"] = user
        return self.post_json("/api/tokens", body)

    def tokens(self) -> dict[str, Any]:
        """The caller's tokens (never their secrets)."""
        return self.get_json("/api/tokens")

    def revoke_token(self, ref: str, user: str | None = None) -> dict[str, Any]:
        """Revoke a token by id or name; ``user`` names another user's token (admin)."""
        return self.delete_json(f"/api/tokens/{quote(ref, safe='')}", params={"user": user} if user else None)

    def create_user(self, name: str, admin: bool = False) -> dict[str, Any]:
        """A new user (admin)."""
        return self.post_json("/api/users", {"name": name, "admin": admin})

    def users(self) -> dict[str, Any]:
        """Every user on the node (admin)."""
        return self.get_json("/api/users")

    def create_org(self, name: str) -> dict[str, Any]:
        """A new organization, the caller its first admin."""
        return self.post_json("/api/orgs", {"name": name})

    def add_org_member(self, org: str, user: str, role: str) -> dict[str, Any]:
        """Add ``user`` to ``org`` (or change their role)."""
        return self.post_json(f"/api/orgs/{org}/members", {"user": user, "role": role})

    # -- runtime: environments and usage -----------------------------------------------------------

    def create_environment(self, name: str, envfile: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        """Build an environment from Envfile text and already-uploaded weight files (their entries)."""
        return self.post_json("/api/environments", {"name": name, "envfile": envfile, "files": files})

    def environment_envfile(self, namespace: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``{"envfile": ...}``: an environment's Envfile, pinned or as written (``params``)."""
        return self.get_json(f"/api/environments/{namespace}/{name}/envfile", params=params)

    def usage(self, params: dict[str, Any]) -> dict[str, Any]:
        """Inference calls with their token counts and totals, filtered by ``params``."""
        return self.get_json("/api/usage", params=params)

    def create_path(self, name: str, graph: dict[str, Any]) -> dict[str, Any]:
        """Store a path (a graph of models) as a model repository."""
        return self.post_json("/api/paths", {"name": name, "graph": graph})

    # -- compute: providers and jobs ---------------------------------------------------------------

    def provider_challenge(self) -> dict[str, Any]:
        """``{"seed", "size", "nonce"}``: the benchmark a provider answers to register."""
        return self.post_json("/api/providers/challenge", {})

    def register_provider(self, payload: dict[str, Any], signature: str, product: Any) -> dict[str, Any]:
        """Register (or refresh) a provider: its signed payload and the benchmark's answer."""
        return self.post_json(
            "/api/providers", {"payload": payload, "signature": signature, "product": product}
        )

    def providers(self) -> dict[str, Any]:
        """``{"providers": [...]}``: the pool's providers with capacity, standing and metered compute."""
        return self.get_json("/api/providers")

    def provider(self, provider_id: str) -> dict[str, Any]:
        """One provider's capacity, standing, audits and metered compute."""
        return self.get_json(f"/api/providers/{provider_id}")

    def submit_job(
        self, kind: str, spec: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Submit a job; resubmitting with the same ``idempotency_key`` returns the same job."""
        return self.post_json("/api/jobs", {"kind": kind, "spec": spec, "idempotency_key": idempotency_key})

    def jobs(self, state: str | None = None) -> dict[str, Any]:
        """``{"jobs": [...]}``: the caller's jobs (every job for an admin), newest first."""
        return self.get_json("/api/jobs", params={"state": state} if state else {})

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's state, units, providers and result."""
        return self.get_json(f"/api/jobs/{job_id}")

    def job_logs(self, job_id: str) -> dict[str, Any]:
        """``{"job", "logs": [{"at", "line"}, ...]}`` from the node and the providers running it."""
        return self.get_json(f"/api/jobs/{job_id}/logs")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; returns the job."""
        return self.post_json(f"/api/jobs/{job_id}/cancel", {})

    # -- mining: credits, prices, keys, ledger ----------------------------------------------------

    def grant_credits(self, user: str, amount: str, transfer_id: str | None = None) -> dict[str, Any]:
        """Give ``user`` credits (admin); ``amount`` is a decimal string of credits."""
        return self.post_json("/api/credits/grant", {"user": user, "amount": amount, "id": transfer_id})

    def statement(self, account: str) -> dict[str, Any]:
        """Every line of an account, each traced to the record behind it."""
        return self.get_json("/api/statement", params={"account": account})

    def set_price(self, model: str, prompt_per_million: str, completion_per_million: str) -> dict[str, Any]:
        """Price a model in credits per million tokens (decimal strings)."""
        return self.post_json(
            "/api/prices",
            {
                "model": model,
                "prompt_per_million": prompt_per_million,
                "completion_per_million": completion_per_million,
            },
        )

    def register_key(self, key_id: str, proof: str) -> dict[str, Any]:
        """Register the caller's signing key; ``proof`` signs ``{"user", "key"}`` with it."""
        return self.post_json("/api/keys", {"key_id": key_id, "proof": proof})

    def verify_ledger(self) -> dict[str, Any]:
        """Recompute balances and the Merkle root from the log: ``{"ok", "problems", ...}``."""
        return self.post_json("/api/ledger/verify", {})

    def ledger_proof(self, entry: str) -> dict[str, Any]:
        """An inclusion proof for a log index or transfer id."""
        return self.get_json(f"/api/ledger/proof/{entry}")

    # -- mining: balances and agreements -----------------------------------------------------------

    def balance(self, account: str | None = None) -> dict[str, Any]:
        """``{"account", "balance"}``; without ``account``, the caller's own wallet."""
        return self.get_json("/api/balance", params={"account": account} if account else {})

    def agreements(self, model: str | None = None) -> dict[str, Any]:
        """``{"agreements": [...]}``, optionally only those of one model."""
        return self.get_json("/api/agreements", params={"model": model} if model else {})

    def agreement(self, agreement_id: str, version: int | None = None) -> dict[str, Any]:
        """One agreement at ``version`` (default: its latest)."""
        return self.get_json(
            f"/api/agreements/{agreement_id}", params={"version": version} if version else {}
        )

    def propose_agreement(self, terms: dict[str, Any], signature: str) -> dict[str, Any]:
        """Propose terms signed with the designer's key; in force once every provider has signed."""
        return self.post_json("/api/agreements", {"terms": terms, "signature": signature})

    def sign_agreement(
        self, agreement_id: str, provider: str, version: int, signature: str
    ) -> dict[str, Any]:
        """Add one provider's signature over the terms of ``version``."""
        return self.post_json(
            f"/api/agreements/{agreement_id}/signatures",
            {"provider": provider, "version": version, "signature": signature},
        )

    # -- leaderboards ------------------------------------------------------------------------------

    def leaderboard(self, suite: str, fingerprint: str | None = None) -> dict[str, Any]:
        """A suite's record holder and ranked submissions (default: the latest held-out split used)."""
        params = {"fingerprint": fingerprint} if fingerprint else None
        return self.get_json(f"/api/leaderboard/{quote(suite, safe='/')}", params=params)

    def submit_result(self, suite: str, body: dict[str, Any]) -> dict[str, Any]:
        """Record a path's held-out scores for ``suite``; the caller is its designer."""
        return self.post_json(f"/api/leaderboard/{quote(suite, safe='/')}/submissions", body)
