"""Stopping a background task reliably (Python 3.11's asyncio has two traps here).

1. ``asyncio.wait_for`` (3.11 and older; aiomqtt's ``publish`` uses it) swallows a cancellation
   that arrives while the future it waits on has just completed: the task goes on as if it had
   never been cancelled. A server that publishes constantly (a busy link) hits this often, and
   ``task.cancel(); await task`` then waits for ever.
2. ``with contextlib.suppress(asyncio.CancelledError): await task`` also swallows the
   cancellation of the task *doing the waiting*, so whoever bounded a ``close()`` with a timeout
   waits for ever as well.

:func:`cancel_and_wait` cancels again until the task has really ended, and lets the caller's
own cancellation through.
"""

from __future__ import annotations

import asyncio
from typing import Any

RETRY_S = 0.1
"""Seconds between cancellations of a task that did not end."""


async def cancel_and_wait(task: asyncio.Task[Any], *, retry: float = RETRY_S) -> BaseException | None:
    """Cancel ``task`` and wait until it has ended; return the exception it ended with (None if it
    returned or was cancelled). A cancellation of the caller propagates at once (``task`` stays
    cancelled, and ends on its own)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry)
    if task.cancelled():
        return None
    return task.exception()
