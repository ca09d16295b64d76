"""Read ahead: the next items of a stream, made in a background thread while the caller computes.

:func:`prefetch` runs an iterable in one background thread and hands its items to the caller in
order. Reading a store batch is memory-map page faults, copies and dtype casts, and the caller's
work on a batch is mostly BLAS; both release the GIL, so on two cores the next batch is read
while the current one is reduced, and a streamed pass costs about its compute alone.

Guarantees:

* **Bounded memory.** At most ``depth`` items are made ahead of the caller (made but not yet
  handed over), so with the one the caller holds at most ``depth + 1`` exist at once, whatever
  the length of the stream.
* **Errors reach the caller.** An exception raised while making an item is raised again in the
  caller, at the place of that item in the stream (the items before it are delivered first).
* **No leaked thread.** The thread starts at the first ``next()``; when the stream ends, raises,
  or the caller stops early (``break``, ``close()``, or the generator being garbage-collected),
  the thread is told to stop, finishes the item it is making, closes the source and is joined
  before control returns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: Name of the background reading threads (tests look for leaked ones by it).
THREAD_NAME = "repscope-prefetch"

_ITEM, _END, _ERROR = 0, 1, 2


def prefetch(source: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the caller.

    Parameters
    ----------
    source : iterable
        Made and iterated in the background thread only (a generator is also closed there).
        It must not be iterated elsewhere at the same time.
    depth : int
        Items made ahead of the caller; 0 iterates ``source`` in the caller's thread, as a
        plain ``iter(source)`` does.

    Yields
    ------
    The items of ``source``, in order.
    """
    if depth <= 0:
        yield from source
        return
    items: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    room = threading.Semaphore(depth)  # one permit per item the thread may make ahead
    stop = threading.Event()

    def work() -> None:
        it = None
        try:
            it = iter(source)
            while True:
                room.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    items.put((_END, None))
                    return
                items.put((_ITEM, item))
                del item
        except BaseException as err:  # handed to the caller, raised there
            items.put((_ERROR, err))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = items.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise item
            room.release()  # the caller holds this one now: the thread may make the next
            yield item
            item = None
    finally:
        stop.set()
        room.release()  # wake the thread if it waits for room
        thread.join()
