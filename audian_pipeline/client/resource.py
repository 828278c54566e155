"""The Audian client as a Dagster resource, configured from the environment with `EnvVar`."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import dagster as dg
from pydantic import PrivateAttr

from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.errors import RateLimited, ServerError
from audian_pipeline.settings import SettingError, check_api_key, check_api_url


api_step_retry = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""For the steps that call Audian. The client already retries each request with back-off; when a
request still exhausts that (a minute of 5xx, a burst of 429s), the step is idempotent, so it
runs again after 10, 30 then 70 s (jittered, so parallel steps do not return together) rather
than ending the run without its warehouse. Only for what can pass: see `retried_only_if_transient`."""

Step = TypeVar("Step", bound=Callable)
TRANSIENT = (ServerError, RateLimited)
"""5xx and 429 that outlasted the client's own retries: worth a step retry a little later."""


def retried_only_if_transient(step: Step) -> Step:
    """Under `api_step_retry`, let only transient failures retry the step. A wrong key, a broken
    answer, an unreachable host or a full disk fails the same way every time: it fails at once,
    with its own one-line message, instead of after two minutes of retries."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except TRANSIENT:
            raise
        except Exception as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc

    return run  # type: ignore[return-value]


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
