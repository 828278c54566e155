"""How the steps that call Audian retry: only what can pass by waiting."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import dagster as dg

from audian_pipeline.client.errors import RateLimited, ServerError
from audian_pipeline.client.paging import PagingError

api_step_retry = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""For the steps that call Audian. The client already retries each request with back-off; when a
request still exhausts that (a minute of 5xx, a burst of 429s), the step is idempotent, so it
runs again after 10, 30 then 70 s (jittered, so parallel steps do not return together) rather
than ending the run without its warehouse. Only for what can pass: see `retried_only_if_transient`."""

Step = TypeVar("Step", bound=Callable)
TRANSIENT = (ServerError, RateLimited, PagingError)
"""5xx and 429 that outlasted the client's own retries, and a list that churned too much to page
exactly: each worth a step retry a little later."""


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
