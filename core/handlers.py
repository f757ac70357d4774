"""Which events a consumer takes, and what handles each: a registry from CloudEvents type to
handler, keyed by the protobuf message class the type carries (core/events.py).

    handlers = EventHandlers()
    handlers.on(events_pb2.DossierSubmitted)(journeys.take_in)

A handler gets a batch, `Sequence[Event[DossierSubmitted]]`, and mypy checks that it can
take what it is registered for. The consumer (core/consumer.py) hands over only the types
registered here; a batch goes to each handler in one call, in the order the events came, so
a handler registered for several types (notify) still writes a whole batch in one
transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from google.protobuf.message import Message

from core.events import TYPE_OF, Event, PoisonEvent

M = TypeVar("M", bound=Message)
Handler = Callable[[Sequence[Event[M]]], Awaitable[None]]
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]


class EventHandlers:
    def __init__(self) -> None:
        self._handlers: list[BatchHandler] = []
        # Type -> index in _handlers: a handler registered for several types has one index.
        self._by_type: dict[str, int] = {}

    def on(self, message: type[M]) -> Callable[[Handler[M]], Handler[M]]:
        """Register a handler of the events carrying `message` (a decorator)."""
        event_type = TYPE_OF.get(message)
        if event_type is None:
            raise ValueError(f"{message.__name__} is not the data of any event type")

        def register(handler: Handler[M]) -> Handler[M]:
            if event_type in self._by_type:
                raise ValueError(f"{event_type} already has a handler")
            # Safe: __call__ hands it only events whose type carries `message`.
            known = cast(BatchHandler, handler)
            # Equal, not identical: `service.handle` is a new bound method at each access.
            if known not in self._handlers:
                self._handlers.append(known)
            self._by_type[event_type] = self._handlers.index(known)
            return handler

        return register

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    async def __call__(self, events: Sequence[Event]) -> None:
        """Hand each handler its events of the batch, in one call, in their order."""
        batches: dict[int, list[Event]] = {}
        for event in events:
            index = self._by_type.get(event.type)
            if index is None:  # the consumer filters by event_types: a wiring mistake
                raise PoisonEvent(f"no handler for {event.type}")
            batches.setdefault(index, []).append(event)
        for index, batch in batches.items():
            await self._handlers[index](batch)
