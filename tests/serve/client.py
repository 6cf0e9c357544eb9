"""A small HTTP/1.1 client for the tests (the standard library's), a server to start and
stop, and what the tests send."""

import base64
import http.client
import io
import json
import time

import numpy as np
from PIL import Image

from layerwise.serve import ServerThread, create_app

TIMEOUT_S = 30
IMAGE = np.zeros((1, 28, 28)).tolist()  # a blank digit: an input the digits model takes


def call(port, method, path, body=None, headers=None, chunked=False):
    """(status, headers as a lower-case dict, body bytes). ``body``: bytes, or anything else
    sent as JSON."""
    if body is not None and not isinstance(body, (bytes, bytearray)) and not chunked:
        body = json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {},
                           encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        connection.close()


def post(port, path, body, **kwargs):
    status, headers, data = call(port, "POST", path, body, **kwargs)
    return status, headers, json.loads(data) if "json" in headers.get("content-type", "") \
        else data


def get(port, path):
    status, headers, data = call(port, "GET", path)
    return status, json.loads(data) if "json" in headers.get("content-type", "") else data


def wait_ready(port, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = get(port, "/readyz")
        if status == 200:
            return body
        assert not any(state == "failed" for state in body["models"].values()), body
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout} s: {body}")


def start(models, **settings):
    """A ServerThread on a free port of 127.0.0.1, started."""
    return ServerThread(create_app(models, **settings)).start()


def predict(server, name, instances):
    """The predictions of a request that must succeed."""
    status, _, body = post(server.port, f"/v1/models/{name}/predict", {"instances": instances})
    assert status == 200, body
    assert body["model"] == name and len(body["predictions"]) == len(instances)
    return body["predictions"]


def png_b64(pixels, mode):
    """A uint8 array as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def sse_events(stream):
    """[(event name, data)] of a text/event-stream body."""
    events = []
    for block in stream.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events
