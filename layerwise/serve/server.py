"""Running the app on uvicorn: in the foreground (``layerwise serve``) or in a thread (tests,
benchmarks).

    with ServerThread(create_app({"mlp": "runs/mlp-..."})) as server:   # a free port
        urllib.request.urlopen(f"{server.url}/readyz")

The listening socket is bound before the server starts, so a port in use is an OSError at
once (uvicorn would log it and exit the process), and port 0 picks a free one.
"""

import socket
import threading
import time

import uvicorn

STARTUP_TIMEOUT_S = 30.0


def bind(host, port):
    """A listening TCP socket on (host, port); OSError (address in use, ...) if it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says
    # TCP, and with it on a small answer waits for a delayed ACK: 40 ms a request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def make_server(app, log_level="warning", access_log=False):
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on")
    return uvicorn.Server(config)


class ServerThread:
    """The app served by uvicorn on ``host``:``port`` in a background thread; ``stop()`` shuts
    it down gracefully (open requests answered, queues drained)."""

    def __init__(self, app, host="127.0.0.1", port=0):
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = make_server(app)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="layerwise-serve-http", daemon=True)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self, timeout=STARTUP_TIMEOUT_S):
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout=STARTUP_TIMEOUT_S):
        self.server.should_exit = True
        self._thread.join(timeout)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
