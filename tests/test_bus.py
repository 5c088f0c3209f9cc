"""The conversation bus: events arrive in publish order, only on the channels subscribed, and (Redis)
across two bus instances, as between two server processes."""

import asyncio

from shopdesk.bus import QUEUE_CHANNEL, LocalBus, RedisBus, conversation_channel


async def drain(sub, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    return [await asyncio.wait_for(sub.get(), 5) for _ in range(n)]


async def test_local_bus_delivers_in_order_to_subscribers_of_the_channel_only() -> None:
    bus = LocalBus()
    a, b = conversation_channel("a"), conversation_channel("b")
    async with bus.subscribe(a) as sub_a, bus.subscribe(b, QUEUE_CHANNEL) as sub_b:
        for i in range(50):
            await bus.publish(a, {"n": i})
        await bus.publish(QUEUE_CHANNEL, {"type": "queue_changed"})
        got = await drain(sub_a, 50)
        assert [e["n"] for e in got] == list(range(50)) and got[0]["channel"] == a
        assert (await drain(sub_b, 1))[0]["type"] == "queue_changed"
        assert sub_a.queue.empty() and sub_b.queue.empty()
        await bus.remove(sub_a, a)
        await bus.publish(a, {"n": 99})
        assert sub_a.queue.empty()


async def test_redis_bus_carries_events_between_two_processes_in_order(redis_url, redis_prefix) -> None:  # type: ignore[no-untyped-def]
    shopper_side, agent_side = RedisBus(redis_url, redis_prefix), RedisBus(redis_url, redis_prefix)
    channel = conversation_channel("c1")
    try:
        async with agent_side.subscribe(channel) as agent_sub, shopper_side.subscribe(channel) as shopper_sub:
            await asyncio.sleep(0.2)  # both SUBSCRIBEs reached Redis
            for i in range(20):
                await shopper_side.publish(channel, {"from": "shopper", "n": i})
            await agent_side.publish(channel, {"from": "agent", "n": 0})
            got = await drain(agent_sub, 21)
            assert [(e["from"], e["n"]) for e in got[:20]] == [("shopper", i) for i in range(20)]
            assert got[20]["from"] == "agent"
            assert [e["n"] for e in await drain(shopper_sub, 21)][:20] == list(range(20))
        # Unsubscribed: a later event reaches nobody and nothing breaks.
        await shopper_side.publish(channel, {"late": True})
    finally:
        await shopper_side.aclose()
        await agent_side.aclose()


async def test_redis_bus_ignores_other_prefixes(redis_url, redis_prefix) -> None:  # type: ignore[no-untyped-def]
    mine, other = RedisBus(redis_url, redis_prefix), RedisBus(redis_url, redis_prefix + "other:")
    try:
        async with mine.subscribe(QUEUE_CHANNEL) as sub:
            await asyncio.sleep(0.2)
            await other.publish(QUEUE_CHANNEL, {"n": "other"})
            await mine.publish(QUEUE_CHANNEL, {"n": "mine"})
            assert (await drain(sub, 1))[0]["n"] == "mine"
    finally:
        await mine.aclose()
        await other.aclose()
