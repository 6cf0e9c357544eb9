"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own.

Each app has its own ``CollectorRegistry``, so two servers in one process (a test, a
benchmark) count apart. Model labels are the served names only: a request for a name the
server does not have is counted under ``model=""``, so a scan of made-up names cannot grow
the label set without end.
"""

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds from a request's arrival to its answer (for a stream: to its last event).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "layerwise_requests", "HTTP requests answered, by model, endpoint and status code",
            ["model", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "layerwise_request_seconds", "Seconds from a request's arrival to its answer",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "layerwise_batch_size", "Inputs per model call (dynamic batching)", ["model"],
            buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram(
            "layerwise_inference_seconds", "Seconds of one model call on one batch", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_errors = Counter(
            "layerwise_batch_errors", "Model calls that raised an exception", ["model"],
            registry=self.registry)
        self.queue_depth = Gauge(
            "layerwise_queue_depth", "Inputs waiting for a batch", ["model"],
            registry=self.registry)
        self.ready = Gauge(
            "layerwise_model_ready", "1 once the model has loaded and run its warm-up batch",
            ["model"], registry=self.registry)

    def watch(self, name, batcher):
        """Report ``batcher``'s queue depth under ``name`` whenever /metrics is read."""
        self.queue_depth.labels(name).set_function(lambda: batcher.queue_depth)

    def batch_observer(self, name):
        """A Batcher ``on_batch`` callback recording each batch of model ``name``."""
        sizes, seconds = self.batch_size.labels(name), self.inference.labels(name)
        errors = self.batch_errors.labels(name)

        def observe(size, elapsed, error):
            sizes.observe(size)
            seconds.observe(elapsed)
            if error is not None:
                errors.inc()

        return observe

    def observe_request(self, model, endpoint, status, seconds):
        self.requests.labels(model, endpoint, str(status)).inc()
        self.latency.labels(model, endpoint).observe(seconds)

    def render(self):
        """(body, content type) of the text exposition format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
