"""Ctrl-C during training: acted on between two steps, where the state is consistent."""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """Ctrl-C during a step is acted on after the step (so the saved state is consistent);
    a second Ctrl-C interrupts at once. Only in the main thread, where signals are handled."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
