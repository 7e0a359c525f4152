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

    # -- compute: providers and jobs ---------------------------------------------------------------

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
