"""Deadlines on legacy operations: a coroutine that does not finish in time is cancelled."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")


async def with_timeout(clock: IReactorTime, operation: Awaitable[T], seconds: float) -> T:
    deferred: Deferred[T] = ensureDeferred(operation)  # type: ignore[arg-type]
    call = clock.callLater(seconds, deferred.cancel)
    try:
        return await deferred
    except CancelledError as exc:
        raise TimeoutError from exc
    finally:
        if call.active():
            call.cancel()
