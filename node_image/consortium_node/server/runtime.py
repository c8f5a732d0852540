"""How the node's Python runs: its event loop and its cyclic garbage collector.

Why a module: both are measured choices (``bench/versus_etcd.py``, issue 17), made once at start.

* **Event loop**: uvloop's when it is installed (the node image installs it), else asyncio's;
  ``CONSORTIUM_NODE_EVENT_LOOP=asyncio`` forces asyncio's. uvloop runs the same coroutines
  with its transports and TLS in C: at batches of 10 transactions per request it cut the
  three nodes' CPU per write by about a fifth (0.34 → 0.27 ms; at batches of 100 the same).
* **Garbage collector**: what the node holds for long (imported modules, its configuration,
  identities; the committed state's rows are untracked by design, ``ledger.kv.Row``) is
  frozen once started, so full collections no longer walk it, and the young generation is
  collected every 50,000 allocations instead of 700: a batch of transactions allocates tens
  of thousands of short-lived objects, and collecting them every 700 promoted the ones in
  flight, which made the older generations' collections frequent. Measured at batches of
  100: collection went from 7-9% of each node's CPU samples, and the CPU per write from
  0.20 to 0.17 ms. Cycles are still collected (the old generations' thresholds are
  Python's), only less often.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("consortium_node")

T = TypeVar("T")
GC_THRESHOLDS = (50_000, 20, 10)  # young generation every 50k allocations; Python's: 700, 10, 10


def settle_memory() -> None:
    """Collect what start-up left, freeze the rest (it lives as long as the process), and
    set the collector's thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the node's event loop (uvloop's if installed)."""
    if os.environ.get("CONSORTIUM_NODE_EVENT_LOOP") != "asyncio":
        try:
            import uvloop  # noqa: PLC0415  (optional: present in the node image)
        except ImportError:
            log.info("uvloop is not installed: running on asyncio's event loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)
