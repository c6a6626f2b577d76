"""SIGTERM as a request to stop cleanly: `timeout`, a batch scheduler's preemption and `kill` send it,
and a long run should then save where it is instead of dying between two periodic checkpoints."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class SigtermHook:
    """While active, SIGTERM calls `on_signal(count)` (count = SIGTERMs received so far) instead of
    ending the process; on exit the previous handler comes back. Python runs signal handlers in the
    main thread only, so elsewhere this does nothing (and `count` stays 0)."""

    def __init__(self, on_signal: Callable[[int], None] | None = None):
        self.on_signal = on_signal
        self.count = 0
        self._old = None

    def __enter__(self) -> SigtermHook:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.on_signal is not None:
            self.on_signal(self.count)

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None
