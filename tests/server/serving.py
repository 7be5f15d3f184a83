"""Helpers of the server tests: a real uvicorn in a thread, polling, a generation gate."""

from __future__ import annotations

import contextlib
import threading
import time


@contextlib.contextmanager
def live_server(app):
    """Serve ``app`` with a real uvicorn on a free loopback port; yields the base URL."""
    import uvicorn

    from llama_index_vlm.cli.serve import bind

    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def wait_for(condition, what: str, timeout: float = 60.0):
    """Poll ``condition()`` until it returns a true value (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


class GenerationGate:
    """A transformers stopping criterion that holds generation at its ``hold_at``-th token until
    :meth:`release`, and counts the tokens generated. It never stops generation itself.
    """

    def __init__(self, hold_at: int | None = None):
        self.hold_at = hold_at
        self.tokens = 0
        self.holding = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.tokens += 1
        if self.tokens == self.hold_at:
            self.holding.set()
            self._released.wait(timeout=60)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)
