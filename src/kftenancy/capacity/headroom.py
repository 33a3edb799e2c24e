"""How many GPUs to keep warm in a pool: `placeholders(pool, demand, now, zone)`.

    target = max(minimum, ceil(percent * GPUs in use / 100))

where `minimum` is the highest `minimumGpus` of the schedule windows active at `now` (in
the policy's time zone), or the pool's `minimumGpus` outside every window. Unlike the
seed's proactive-node-scaling-operator, headroom is counted in GPUs and is not zero when
nothing runs. The result never exceeds `maximumGpus` (the ceiling), nor what the pool
has left once the GPUs in use and the real pods still waiting are counted (placeholders
must never stand in the way of a tenant, even while preemption is slow), and is 0 when
the policy says 0.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

from kftenancy.capacity.demand import PoolDemand
from kftenancy.policy import WEEKDAYS, GPUPool


def _active_minimum(pool: GPUPool, local: datetime) -> int:
    day = WEEKDAYS[local.weekday()]
    clock = local.strftime("%H:%M")
    active = [
        w.minimum_gpus for w in pool.headroom.schedule if day in w.days and w.start <= clock < w.end
    ]
    return max(active) if active else pool.headroom.minimum_gpus


def headroom_gpus(pool: GPUPool, in_use: int, now: datetime, zone: ZoneInfo) -> int:
    """The warm GPUs the policy asks for (before the pool's own limits)."""
    h = pool.headroom
    target = max(_active_minimum(pool, now.astimezone(zone)), math.ceil(h.percent * in_use / 100))
    return target if h.maximum_gpus is None else min(target, h.maximum_gpus)


def placeholders(pool: GPUPool, demand: PoolDemand, now: datetime, zone: ZoneInfo) -> int:
    """Placeholder pods (one whole GPU each) to keep in `pool` now."""
    room = pool.gpus - demand.in_use - demand.pending
    return max(0, min(headroom_gpus(pool, demand.in_use, now, zone), room))
