"""A real server on 127.0.0.1 (uvicorn in a thread, a free port), started by the tests and
stopped after: predictions against the models run in-process, dynamic batching seen in the
batcher's counts, streamed generation, the model list, /metrics and the README's requests."""

import hashlib
import json
import os
import socket
import threading
import time
from datetime import datetime

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from layerwise.autograd import Tensor, no_grad
from layerwise.data.catalog import shipped_tables
from layerwise.data.tables import read_table
from layerwise.train.finished import load_finished_run
from layerwise.train.recipes.language import generate_text, load_trained
from tests.serve.client import (
    IMAGE,
    TIMEOUT_S,
    call,
    get,
    png_b64,
    post,
    predict,
    sse_events,
)

CONCURRENT = 12
TOLERANCE = 1e-5  # float32 logits of a batch of one against a batch of many


def softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def in_process(run_dir, x):
    """Probabilities of the run's model on x, loaded apart from the server's copy."""
    model = load_finished_run(run_dir).model
    with no_grad():
        return softmax(model(Tensor(np.asarray(x, dtype=np.float32))).data)


def probabilities(prediction):
    return list(prediction["probabilities"].values())


# --- predictions ------------------------------------------------------------------------------


def test_image_predictions_equal_the_model_run_in_process(server, runs):
    images = np.random.default_rng(1).uniform(0, 1, (5, 1, 28, 28)).astype(np.float32)
    predictions = predict(server, "digits", images.tolist())
    expected = in_process(runs["image"], images)
    got = np.array([probabilities(p) for p in predictions])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    assert [p["label"] for p in predictions] == [str(k) for k in expected.argmax(axis=1)]
    assert list(predictions[0]["probabilities"]) == [str(d) for d in range(10)]
    # (H, W) for a one-channel model is the same image
    assert probabilities(predict(server, "digits", [images[0, 0].tolist()])[0]) == \
        pytest.approx(expected[0].tolist(), abs=TOLERANCE)


def test_a_base64_png_is_converted_and_resized_to_the_models_input(server, runs):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    colour = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    # what the model must see: the pixels / 255, the colour image made grey and 28 x 28 by
    # Pillow's bilinear filter, as an image folder's training images are
    small = Image.fromarray(colour, "RGB").convert("L").resize((28, 28),
                                                                Image.Resampling.BILINEAR)
    expected = in_process(runs["image"], np.stack([grey[None] / 255,
                                                   np.asarray(small)[None] / 255]))
    predictions = predict(server, "digits", [{"b64": png_b64(grey, "L")},
                                             {"b64": "data:image/png;base64," +
                                              png_b64(colour, "RGB")}])
    got = np.array([probabilities(p) for p in predictions])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)


def test_table_rows_as_the_file_holds_them_equal_the_models_test_split(server, runs):
    run = load_finished_run(runs["table"])
    table = read_table(shipped_tables()["breast_cancer"]["path"])
    row_at_line = {line: i for i, line in enumerate(table.lines)}
    test_lines = run.splits.lines["test"][:6]
    rows = []
    for line in test_lines:
        i = row_at_line[line]
        # numbers as JSON numbers; the target column, not a feature, may stay in the row
        rows.append({name: (cells[i] if name == "diagnosis" else float(cells[i]))
                     for name, cells in table.cells.items()})
    predictions = predict(server, "cancer", rows)
    features = run.splits["test"].tensors[0].data[:6]
    np.testing.assert_allclose([probabilities(p) for p in predictions],
                               in_process(runs["table"], features), atol=TOLERANCE)
    assert set(predictions[0]["probabilities"]) == {"benign", "malignant"}


def _hand_encoded(info, color, size, weight):
    """The feature vector of one row, built from the statistics the run recorded."""
    columns, out = info["columns"], []
    for name in info["feature_names"]:
        if name == "weight":
            out.append((weight - columns["weight"]["mean"]) / columns["weight"]["std"])
        elif name == "size":
            value = columns["size"]["median"] if size is None else size
            out.append((value - columns["size"]["mean"]) / columns["size"]["std"])
        elif name == "size:missing":
            out.append(1.0 if size is None else 0.0)
        else:
            slot = name.split("=", 1)[1]
            known = color in columns["color"]["categories"]
            wanted = "<missing>" if color is None else (color if known else "<other>")
            out.append(1.0 if slot == wanted else 0.0)
    return out


def test_an_unseen_category_takes_the_other_slot_and_null_the_missing_one(server, runs):
    info = load_finished_run(runs["colors"]).splits.info
    assert "color=<other>" in info["feature_names"] and "size:missing" in info["feature_names"]
    rows = [("purple", 0.3, 10), (None, None, 20), ("red", 0.9, 30), ("  green ", "NA", 40)]
    predictions = predict(server, "colors",
                          [{"color": c, "size": s, "weight": w} for c, s, w in rows])
    expected = in_process(runs["colors"], [
        _hand_encoded(info, "purple", 0.3, 10), _hand_encoded(info, None, None, 20),
        _hand_encoded(info, "red", 0.9, 30), _hand_encoded(info, "green", None, 40)])
    np.testing.assert_allclose([probabilities(p) for p in predictions], expected,
                               atol=TOLERANCE)


def test_concurrent_requests_are_served_in_fewer_model_calls(server):
    batcher = server.server.config.app.state.deployments.by_name["digits"].batcher
    before = batcher.stats()
    image = np.zeros((1, 28, 28)).tolist()
    barrier = threading.Barrier(CONCURRENT)
    statuses = []

    def client():
        barrier.wait(TIMEOUT_S)
        statuses.append(post(server.port, "/v1/models/digits/predict",
                             {"instances": [image]})[0])

    threads = [threading.Thread(target=client) for _ in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    after = batcher.stats()
    assert statuses == [200] * CONCURRENT
    assert after.items - before.items == CONCURRENT
    assert after.batches - before.batches < CONCURRENT


def test_the_connections_send_small_answers_without_waiting_for_an_ack(server):
    """TCP_NODELAY on the server's side: with Nagle on, every small answer waits 40 ms for
    the client's delayed ACK."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
    try:
        connection.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        open_connections = list(server.server.server_state.connections)
        assert open_connections
        for protocol in open_connections:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        connection.close()


# --- language models --------------------------------------------------------------------------


def test_generate_returns_the_text_that_layerwise_generate_writes(server, runs):
    trained = load_trained(runs["gpt"])
    request = {"prompt": "The ", "max_new_tokens": 12, "temperature": 0.9, "top_k": 5,
               "seed": 7}
    status, _, body = post(server.port, "/v1/models/gpt/generate", request)
    expected = generate_text(trained.model, trained.tokenizer, "The ", 12, temperature=0.9,
                             top_k=5, seed=7)
    assert status == 200 and body == {"model": "gpt", "text": expected, "seed": 7}
    assert len(expected) == 12  # char tokens: one character each


def test_generate_streams_server_sent_events_piece_by_piece(server, runs):
    trained = load_trained(runs["gpt"])
    expected = generate_text(trained.model, trained.tokenizer, "The ", 10, temperature=0,
                             seed=0)
    status, headers, stream = call(server.port, "POST", "/v1/models/gpt/generate",
                                   json.dumps({"prompt": "The ", "max_new_tokens": 10,
                                               "temperature": 0, "seed": 0,
                                               "stream": True}).encode())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(stream)
    pieces = [data["text"] for name, data in events if name == "message"]
    assert len(pieces) == 10 and "".join(pieces) == expected
    assert events[-1] == ("done", {"text": expected, "seed": 0})


def test_a_request_without_a_seed_is_told_the_seed_that_repeats_it(server):
    first = post(server.port, "/v1/models/gpt/generate", {"prompt": "a", "max_new_tokens": 8})
    again = post(server.port, "/v1/models/gpt/generate",
                 {"prompt": "a", "max_new_tokens": 8, "seed": first[2]["seed"]})
    assert first[0] == again[0] == 200 and first[2]["text"] == again[2]["text"]


def test_a_client_that_leaves_a_stream_stops_its_generation(server):
    deployment = server.server.config.app.state.deployments.by_name["gpt"]
    counting = _CountingTokens(deployment.model.model)
    deployment.model.model = counting
    before = deployment.batcher.stats().items
    try:
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
        body = json.dumps({"prompt": "The ", "max_new_tokens": 512, "stream": True}).encode()
        connection.sendall(b"POST /v1/models/gpt/generate HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b"data: " not in received:  # the headers, then the first piece: then leave
            chunk = connection.recv(4096)
            assert chunk, received
            received += chunk
        connection.close()
        deadline = time.monotonic() + TIMEOUT_S
        while deployment.batcher.stats().items == before and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        deployment.model.model = counting.model
    assert deployment.batcher.stats().items == before + 1
    assert 1 <= counting.tokens < 512


class _CountingTokens:
    """A language model whose stream counts the tokens it yields."""

    def __init__(self, model):
        self.model, self.tokens = model, 0

    def stream(self, *args, **kwargs):
        for token in self.model.stream(*args, **kwargs):
            self.tokens += 1
            yield token


def test_a_bert_run_embeds_texts_as_its_encoder_does(server, runs):
    from layerwise.train.search import Encoder

    texts = ["The file is opened.", "a second, longer sentence about modules"]
    predictions = predict(server, "bert", texts)
    expected = Encoder.from_run(runs["bert"]).encode(texts)
    got = np.array([p["embedding"] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


# --- model list, metrics ----------------------------------------------------------------------


def test_the_model_list_gives_each_models_version(server, runs):
    status, body = get(server.port, "/v1/models")
    assert status == 200
    models = {m["name"]: m for m in body["models"]}
    assert list(models) == ["digits", "cancer", "colors", "gpt", "bert"]
    for name, run_key, recipe, kind in (("digits", "image", "tiny", "image"),
                                        ("cancer", "table", "tabular-tiny", "table"),
                                        ("gpt", "gpt", "gpt-tiny", "text-generation")):
        model = models[name]
        version = model["version"]
        assert model["state"] == "ready" and model["kind"] == kind
        assert version["run"] == os.path.basename(runs[run_key])
        assert version["recipe"] == recipe and version["layerwise"] == "0.1.0"
        datetime.fromisoformat(version["created"])
        with open(os.path.join(runs[run_key], "model.safetensors"), "rb") as f:
            weights = f.read()
        assert version["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert models["digits"]["input"]["shape"] == [1, 28, 28]
    assert models["cancer"]["input"]["classes"] == ["benign", "malignant"]
    assert models["colors"]["input"]["columns"] == {"color": "text", "size": "number",
                                                    "weight": "number"}
    assert get(server.port, "/v1/models/gpt")[1]["endpoint"] == "generate"


def test_metrics_parse_with_prometheus_clients_parser(server):
    predict(server, "digits", [IMAGE, IMAGE])
    post(server.port, "/v1/models/digits/predict", {"instances": []})
    post(server.port, "/v1/models/made-up-name/predict", {"instances": []})
    status, text = get(server.port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("layerwise_requests_total", model="digits", endpoint="predict",
                 status="200") >= 1
    assert value("layerwise_requests_total", model="digits", endpoint="predict",
                 status="422") >= 1
    # a made-up name is counted, but not as a label of its own
    assert value("layerwise_requests_total", model="", endpoint="predict", status="404") >= 1
    assert not any("made-up-name" in str(key) for key in samples)
    assert value("layerwise_request_seconds_count", model="digits", endpoint="predict") >= 2
    assert value("layerwise_batch_size_count", model="digits") >= 1
    assert value("layerwise_batch_size_sum", model="digits") >= 2
    assert value("layerwise_queue_depth", model="digits") == 0
    assert value("layerwise_model_ready", model="gpt") == 1


# --- the README's serving section ---------------------------------------------------------------

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _serving_block():
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Serving a model"):]
    return section[section.index("```text\n") + 8:section.index("```", section.index(
        "```text\n") + 8)].splitlines()


def test_the_readmes_serving_commands_are_what_the_server_takes(server):
    """The README shows them as text (a server runs until stopped, so its test cannot run
    them as it runs the bash blocks); here the command parses with the options' defaults and
    each curl body, sent to this server, is answered."""
    import shlex

    from layerwise.cli.main import build_parser

    serve_line, *curls = _serving_block()
    argv = shlex.split(serve_line)
    assert argv[:3] == ["uv", "run", "layerwise"]
    args = build_parser().parse_args(argv[3:])
    defaults = build_parser().parse_args(["serve", "x"])
    for option in ("port", "max_batch", "max_wait_ms", "queue"):
        assert getattr(args, option) == getattr(defaults, option), option
    served_as = {"mlp-<time>": "digits", "gpt-<time>": "gpt"}
    digit = png_b64(np.zeros((28, 28), dtype=np.uint8), "L")
    assert len(curls) == 2
    for line in curls:
        # the shell's quoting: '...{"b64": "'"$(base64 ...)"'"}...' is one word
        words = shlex.split(line.replace('\'"$(base64 -w0 digit.png)"\'', digit))
        url, body = words[2], words[words.index("-d") + 1]
        model, endpoint = url.split("/v1/models/")[1].split("/")
        status, _, answer = call(server.port, "POST",
                                 f"/v1/models/{served_as[model]}/{endpoint}", body.encode())
        assert status == 200, answer
        if endpoint == "generate":
            assert sse_events(answer)[-1][0] == "done"


