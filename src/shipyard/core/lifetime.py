"""Processes that must not outlive the one that started them.

A `kill -9` gives a process no chance to stop its children: a log-flush helper or a server
worker would keep running (and holding memory, files and ports) for as long as nobody noticed.
Each such child watches its parent instead and leaves when the parent is gone. Polling the
parent id is what works for every child: `PR_SET_PDEATHSIG` fires when the *thread* that
started the child exits, which for a pool's helper is not the parent's death.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

__all__ = ["exit_with_parent", "pid_alive", "watch_parent"]

log = logging.getLogger("shipyard.lifetime")

POLL_SECONDS = 0.5


def watch_parent(
    parent: int, on_orphaned: Callable[[], None], *, every: float = POLL_SECONDS
) -> threading.Thread:
    """Call `on_orphaned` once, from a daemon thread, when this process's parent is no longer
    `parent` (it died and the process was re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(every)
        on_orphaned()

    thread = threading.Thread(target=watch, name="shipyard-parent-watch", daemon=True)
    thread.start()
    return thread


def _exit_now() -> None:
    os._exit(0)


def exit_with_parent(parent: int) -> None:
    """Leave at once when `parent` dies (for helpers that hold nothing worth flushing).

    Used as a `ProcessPoolExecutor` initializer, so its arguments must pickle: pass the pid.
    """
    watch_parent(parent, _exit_now)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
