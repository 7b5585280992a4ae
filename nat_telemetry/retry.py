"""When to retry a POST, and how long to wait first.

The policy knows nothing about sockets, threads or status codes: the handler
and the detached sender ask it how long the next attempt must wait and when to
give up, and obey.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Callable

__all__ = ["RetryPolicy", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date; a
    date in the past means 0), or None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():  # "²".isdigit() too, but float() refuses it
        return float(text)  # 5,000 digits give inf: capped by the policy
    from email.utils import parsedate_to_datetime  # only needed for the rare date form

    try:
        when = parsedate_to_datetime(text)
    except Exception:  # any text at all may arrive here; none of it may raise
        return None
    if when is None or when.tzinfo is None:
        return None  # RFC 9110 dates are always GMT; a zoneless one is not one
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class RetryPolicy:
    """Exponential backoff with jitter, never sooner than ``Retry-After`` asks.

    The n-th consecutive failure waits a random time in ``[d/2, d]`` where
    ``d = min(backoff_max, backoff_base * 2 ** (n - 1))``.  The jitter keeps
    many clients that failed together from retrying together.  A
    ``Retry-After`` longer than that wins, up to ``retry_after_max``, so a
    confused or hostile endpoint cannot park the client for days.
    """

    def __init__(
        self,
        max_retries: int = 3,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 300.0,
        rng: Callable[[float, float], float] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self._rng = rng  # random.uniform, imported at the first backoff

    def exhausted(self, retry_count: int) -> bool:
        """Whether an event that has failed ``retry_count`` times is given up."""
        return retry_count > self.max_retries

    def delay(self, failures: int, retry_after: str | None = None,
              now: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive transient failure."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** max(0, failures - 1))
        if self._rng is None:
            import random  # only a failure needs it: kept off a command line's path

            self._rng = random.uniform
        wait = self._rng(ceiling / 2.0, ceiling)
        asked = parse_retry_after(retry_after, now)
        if asked is not None:
            wait = max(wait, min(asked, self.retry_after_max))
        return wait
