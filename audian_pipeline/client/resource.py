"""The Audian client as a Dagster resource, configured from the environment with `EnvVar`."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from audian_pipeline.client.client import AudianClient
from audian_pipeline.settings import SettingError, check_api_key, check_api_url


class AudianResource(dg.ConfigurableResource):
    """Audian's API. `api_key` comes from `dg.EnvVar("AUDIAN_API_KEY")`: resolved at launch,
    never shown in the UI. A bad URL or key fails the run at start, naming the setting."""

    api_url: str
    api_key: str
    detail_concurrency: int = 16
    """Concurrent `GET /v2/recordings/{id}` and `GET /v2/calls/{id}` calls over the pooled session."""
    download_concurrency: int = 4
    """Concurrent downloads (each streams to disk; memory stays flat)."""
    list_limit: int = 200
    retries: int = 6

    _client: AudianClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_api_url(self.api_url)
        check_api_key(self.api_key)
        for name in ("detail_concurrency", "download_concurrency", "list_limit"):
            if getattr(self, name) < 1:
                raise SettingError(f"AudianResource.{name} must be at least 1 (got {getattr(self, name)}).")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_client(self) -> AudianClient:
        if self._client is None:
            self._client = AudianClient(
                self.api_url,
                self.api_key,
                retries=self.retries,
                pool_size=max(self.detail_concurrency, self.download_concurrency) * 2,
            )
        return self._client
