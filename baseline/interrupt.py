"""Ctrl-C during training: acted on between two steps, where the state is consistent."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


class DeferredInterrupt:
    """Ctrl-C during a step is acted on after the step (so the saved state is consistent);
    a second Ctrl-C interrupts at once. Only in the main thread, where signals are handled.

    ``on_first`` is called on the first Ctrl-C (to say what will happen: the wait may be minutes).
    """

    def __init__(self, on_first: Callable[[], None] | None = None):
        self.requested = False
        self.on_first = on_first
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_first is not None:
            self.on_first()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
