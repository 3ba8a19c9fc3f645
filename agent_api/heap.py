"""The garbage collector of a long-lived process of the service, once it has started.

A process of the service (an API process, a worker process) builds most of its objects as it
starts, the modules it imports and what it sets up, and keeps them for its whole life. CPython's
collector goes through every object it tracks at each full collection; :func:`settle_heap`
leaves those out of every collection from then on.
"""

from __future__ import annotations

import gc

# Allocations between two collections of the youngest generation, once a process has started (CPython: 700).
YOUNG_COLLECTION_EVERY = 10_000


def settle_heap() -> None:
    """Keep the garbage collector off what this process built to start, once it has started.

    A worker process holds about 300,000 objects once started (AutoGen, the OpenAI SDK and what
    they import, the teams warmed up), nearly all for its whole life, and CPython's collector went
    through every one of them at each full collection: about 0.2 s of CPU, and as long a pause of
    the process's event loop and run threads, every 500 conversations or so; under load a tenth
    of a worker's CPU went to collections. Frozen (``gc.freeze``), they are left out of every
    collection; and collecting the youngest generation every 10,000 allocations instead of 700
    lets most of a run's objects die of their own before a collection looks at them. Measured
    (1000 one-turn ``/chat``, 50 at once, two worker processes): the collector's share of a
    worker's CPU went from 9.4-10.1% to 3.7-4.5%, and its longest collection from 0.22 s to
    0.07 s (freezing alone: 5.7-6.0%, 0.07 s). An API process holds about 240,000 objects (FastAPI,
    pydantic's models, the protocol SDKs): a burst of 1000 ``/chat`` on one API process cost it
    two full collections of 0.15-0.2 s each, a third of its CPU for the burst, and 0.06-0.13 s
    once settled (measured 2026-12-04). Garbage in reference cycles waits for at most 10,000
    allocations. Called by ``agent-api worker`` once it has started (its engine open, its teams
    warmed up), and by the app once started in a process of its own (:mod:`agent_api.main`).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
