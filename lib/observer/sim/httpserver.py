"""The simulator's HTTP servers (each provider's REST server, the control endpoint): a threading server
bound at construction (port 0 = a free one), served from its own thread, stoppable before it started."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class ThreadedServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, handler, *, name: str):
        super().__init__((host, port), handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                       name=name.format(port=self.port), daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever(), forever if it never ran
            self.shutdown()
        self.server_close()
