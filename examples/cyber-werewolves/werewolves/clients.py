"""Connections to NATS and Redis, made the same way by every service, and the NATS subjects.

NATS: token authentication from the `nats-url` secret, reconnecting for ever every 0.5 s once
connected; its callbacks log state changes without the URL (which holds the token). Redis: a
client from the `redis-url` secret with short timeouts, checked by PING. `connect_with_retry`
retries a first connection (a service may start before its broker) until it works or the
service is told to stop.

Called by `api`, `gateway` and `agents` at start. It must not log a URL or a password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as Nats

T = TypeVar("T")

# The NATS subjects of the game: events of a room, and the api-server's request/reply services.
ACT_SUBJECT = "werewolves.act"
BOTS_SUBJECT = "werewolves.bots"


def room_subject(room_id: str) -> str:
    return f"rooms.{room_id}.events"

log = logging.getLogger("werewolves.clients")


async def connect_nats(url: str, name: str) -> Nats:
    """A NATS connection named `name` (shown in the server's monitoring)."""

    made: list[Nats] = []

    async def error(exc: Exception) -> None:
        log.warning("nats: %s", type(exc).__name__)

    async def disconnected() -> None:
        closing = bool(made) and (made[0].is_draining or made[0].is_closed)
        log.log(logging.INFO if closing else logging.WARNING, "nats: disconnected")

    async def reconnected() -> None:
        log.info("nats: reconnected")

    client = await nats.connect(url, name=name, connect_timeout=3, reconnect_time_wait=0.5,
                                max_reconnect_attempts=-1, allow_reconnect=True, error_cb=error,
                                disconnected_cb=disconnected, reconnected_cb=reconnected)
    made.append(client)
    return client


async def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client, checked with one PING."""
    client = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
    try:
        await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


async def redis_ok(client: aioredis.Redis | None) -> bool:
    if client is None:
        return False
    try:
        async with asyncio.timeout(1.0):
            return bool(await client.ping())
    except (TimeoutError, OSError, aioredis.RedisError):
        return False


async def connect_with_retry(what: str, connect: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
    """`connect()` until it succeeds (None when `stop` is set first), waiting 0.5 s to 5 s between
    tries and logging each failure by its kind only (an error text could hold the URL)."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect()
        except Exception as error:  # noqa: BLE001 - every failure to connect is retried; its kind is logged
            log.warning("cannot connect to %s yet (%s); retrying in %.1fs", what, type(error).__name__, delay)
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
        except TimeoutError:
            pass
        delay = min(delay * 2, 5.0)
    return None
