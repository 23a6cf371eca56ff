"""Fan-out: one pub/sub connection per backend replica, routing to local sockets.

A replica subscribes to a user's live channel while it holds at least one socket
of that user. ``subscribe`` returns only once Redis confirmed the subscription,
so a caller that reads history afterwards cannot miss an event in between.

On a Redis Cluster the channels are sharded (``SSUBSCRIBE``; the emit script
``SPUBLISH``-es on the user's slot), and redis-py keeps each on the node that owns
its slot. When a failover moves a slot, messages published meanwhile may be gone,
and the promoted replica may lack the last events its master acknowledged: every
local subscriber is told to catch up from the history
(:meth:`UserEventHub.resync`), which also finds a history that went back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge.batch import epoch_of_line, seq_of_line, split_batch
from servicekit.redisclient import is_cluster, on_topology_change
from servicekit.rediskeys import HUB_CONTROL_CHANNEL, UserKeys
from servicekit.tasks import cancel_and_wait

__all__ = ["EventSink", "Subscription", "UserEventHub"]

log = logging.getLogger(__name__)

#: Called with (seq, epoch, raw event JSON) for each live event of the user; the hub
#: reads seq and epoch once per event, however many sockets the user has.
EventSink = Callable[[int, str, str], None]


@dataclass(eq=False)
class Subscription:
    user_id: str
    sink: EventSink
    on_reconnect: Callable[[], None] | None = None


@dataclass
class _Channel:
    subscriptions: set[Subscription] = field(default_factory=set)
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


class UserEventHub:
    """Routes live events of users to the local sinks that asked for them."""

    def __init__(self, redis: Redis, *, control_channel: str = HUB_CONTROL_CHANNEL) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._channels: dict[str, _Channel] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._control = control_channel
        self._beat = 0.0
        self.connected = False
        self._sharded = is_cluster(redis)
        on_topology_change(redis, self.resync)

    async def start(self) -> None:
        """Open the pub/sub link (again, after a failed start); idempotent."""
        if self._reader is not None and not self._reader.done():
            return
        pubsub = self._redis.pubsub()
        try:
            await self._subscribe(pubsub, self._control)
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self.connected = True
        self._beat = asyncio.get_running_loop().time()
        self._reader = asyncio.create_task(self._read_loop(), name="user-event-hub")

    def check_alive(self, *, stale_after_s: float = 5.0) -> None:
        """Raise unless the reader runs, is connected and looped recently."""
        if self._reader is None or self._reader.done():
            raise ConnectionError("the pub/sub reader is not running")
        if not self.connected:
            raise ConnectionError("the pub/sub link is down")
        if asyncio.get_running_loop().time() - self._beat > stale_after_s:
            raise ConnectionError("the pub/sub reader is stuck")

    def resync(self) -> None:
        """Tell every local subscriber that live events may have been missed."""
        self._notify_reconnect()

    async def stop(self) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()

    @property
    def users(self) -> int:
        return len(self._channels)

    async def subscribe(self, subscription: Subscription, *, timeout: float = 5.0) -> None:
        """Deliver the user's live events to ``subscription`` from now on."""
        assert self._pubsub is not None, "hub not started"
        name = UserKeys(subscription.user_id).channel
        async with self._lock:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel()
                await self._subscribe(self._pubsub, name)
            channel.subscriptions.add(subscription)
        await asyncio.wait_for(channel.confirmed.wait(), timeout)

    async def unsubscribe(self, subscription: Subscription) -> None:
        assert self._pubsub is not None, "hub not started"
        name = UserKeys(subscription.user_id).channel
        async with self._lock:
            channel = self._channels.get(name)
            if channel is None:
                return
            channel.subscriptions.discard(subscription)
            if not channel.subscriptions:
                del self._channels[name]
                with contextlib.suppress(RedisError, OSError):
                    if self._sharded:
                        await cast(Any, self._pubsub).sunsubscribe(name)
                    else:
                        await self._pubsub.unsubscribe(name)

    async def _subscribe(self, pubsub: PubSub, name: str) -> None:
        if self._sharded:
            await cast(Any, pubsub).ssubscribe(name)
        else:
            await pubsub.subscribe(name)

    async def _read_loop(self) -> None:
        assert self._pubsub is not None
        backoff = 0.05
        while True:
            self._beat = asyncio.get_running_loop().time()
            try:
                # sharded: a short wait, for redis-py polls only the nodes it had
                # subscriptions on when the wait began, and a subscription's
                # confirmation on another node would wait it out
                message = await (cast(Any, self._pubsub).get_sharded_message(timeout=0.02)
                                 if self._sharded else self._pubsub.get_message(timeout=1.0))
                if not self.connected:
                    self.connected = True
                    self._notify_reconnect()
                backoff = 0.05
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("pub/sub link lost: %s", exc)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if message is not None:
                self._route(message)

    def _route(self, message: dict[str, object]) -> None:
        raw_channel = message.get("channel")
        name = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        channel = self._channels.get(name)
        if channel is None:
            return
        kind = message.get("type")
        if kind in ("subscribe", "ssubscribe"):
            channel.confirmed.set()
        elif kind in ("message", "smessage"):
            data = message["data"]
            text = data.decode() if isinstance(data, bytes) else str(data)
            subscriptions = list(channel.subscriptions)
            for raw in split_batch(text):
                try:
                    seq, epoch = seq_of_line(raw), epoch_of_line(raw)
                except ValueError:
                    # not an event: the gap it leaves is filled from the history
                    log.error("ignoring a malformed message on %s", name)
                    continue
                for subscription in subscriptions:
                    subscription.sink(seq, epoch, raw)

    def _notify_reconnect(self) -> None:
        for channel in self._channels.values():
            for subscription in list(channel.subscriptions):
                if subscription.on_reconnect is not None:
                    subscription.on_reconnect()
