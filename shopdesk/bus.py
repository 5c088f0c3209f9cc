"""The conversation bus: events about a conversation reach every process that serves one of its parties.

A shopper and an agent may be connected to different server processes. Whatever one of them does that
the other must see (an agent's reply, a state change, the bot's turn for the console, suggested
replies) is published on the conversation's channel; each socket subscribed to it forwards what is
meant for its audience. Redis pub/sub when `SHOPDESK_REDIS_URL` is set; otherwise an in-process bus,
which is exact for one process. The bus carries notifications only: every message is stored in the
database first, so a socket that missed events (a reconnect) reads them back from there.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

QUEUE_CHANNEL = "queue"  # the agents' queue changed (a conversation waits, was taken, closed)
_SUBSCRIBER_BUFFER = 1000  # events a slow socket may fall behind before it is told to reload


def conversation_channel(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


class Bus(Protocol):
    async def publish(self, channel: str, event: dict[str, Any]) -> None: ...

    def subscribe(self, *channels: str) -> contextlib.AbstractAsyncContextManager["Subscription"]: ...

    async def add(self, sub: "Subscription", channel: str) -> None: ...

    async def remove(self, sub: "Subscription", channel: str) -> None: ...

    async def aclose(self) -> None: ...


class Subscription:
    """Events of the subscribed channels in publish order; `overflow` marks a subscriber that fell so
    far behind that events were dropped (it should reload from the database)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_SUBSCRIBER_BUFFER)
        self.channels: set[str] = set()
        self.overflow = False

    def deliver(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflow = True

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()


class _Subscribing:
    """`subscribe` for both buses: a Subscription on these channels, left when the block ends."""

    async def add(self, sub: Subscription, channel: str) -> None:
        raise NotImplementedError

    async def remove(self, sub: Subscription, channel: str) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        sub = Subscription()
        try:
            for channel in channels:
                await self.add(sub, channel)
            yield sub
        finally:
            for channel in list(sub.channels):
                with contextlib.suppress(Exception):  # Redis gone: nothing left to leave
                    await self.remove(sub, channel)


class LocalBus(_Subscribing):
    """One process: subscribers are queues in memory."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        for sub in list(self._subs.get(channel, ())):
            sub.deliver({**event, "channel": channel})

    async def add(self, sub: Subscription, channel: str) -> None:
        self._subs.setdefault(channel, set()).add(sub)
        sub.channels.add(channel)

    async def remove(self, sub: Subscription, channel: str) -> None:
        self._subs.get(channel, set()).discard(sub)
        sub.channels.discard(channel)

    async def aclose(self) -> None:
        self._subs.clear()


class RedisBus(_Subscribing):
    """Several processes: one Redis connection per process reads every channel its sockets want and
    fans events out locally, so a thousand sockets cost one Redis subscription each channel, not a
    connection each."""

    def __init__(self, url: str, prefix: str = "shopdesk:") -> None:
        import redis.asyncio as redis

        self._prefix = prefix  # one Redis may serve several stores (or test runs)
        self._redis = redis.from_url(url, decode_responses=True)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._local = LocalBus()
        self._counts: dict[str, int] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def publish(self, channel: str, event: dict[str, Any]) -> None:
        await self._redis.publish(self._prefix + channel, json.dumps(event, default=str))

    async def add(self, sub: Subscription, channel: str) -> None:
        async with self._lock:
            if self._counts.get(channel, 0) == 0:
                await self._pubsub.subscribe(self._prefix + channel)
            self._counts[channel] = self._counts.get(channel, 0) + 1
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
        await self._local.add(sub, channel)

    async def remove(self, sub: Subscription, channel: str) -> None:
        if channel not in sub.channels:
            return
        await self._local.remove(sub, channel)
        async with self._lock:
            self._counts[channel] -= 1
            if self._counts[channel] == 0:
                del self._counts[channel]
                await self._pubsub.unsubscribe(self._prefix + channel)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted: keep trying; sockets reload from the DB on gaps
                log.exception("redis bus read failed")
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                if not self._counts:
                    await asyncio.sleep(0.05)
                continue
            channel = str(message["channel"]).removeprefix(self._prefix)
            try:
                event = json.loads(message["data"])
            except ValueError:
                log.warning("ignored a malformed bus event on %s", channel)
                continue
            await self._local.publish(channel, event)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def create_bus(redis_url: str, prefix: str = "shopdesk:") -> LocalBus | RedisBus:
    return RedisBus(redis_url, prefix) if redis_url else LocalBus()
