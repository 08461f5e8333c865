"""Prometheus metrics: request counts and latency per route, searches, and gallery size.

No personal data: labels are route templates, methods, status codes and outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facewarden.services.app import Facewarden


class Metrics:
    def __init__(self, fw: Facewarden) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facewarden_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "facewarden_http_request_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.searches = Counter(
            "facewarden_searches",
            "Searches by outcome (ok, refused, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(GalleryCollector(fw))


class GalleryCollector(Collector):
    """Gallery and index sizes, read from the database at scrape time."""

    def __init__(self, fw: Facewarden) -> None:
        self.fw = fw

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.fw.stats()
        for key, help_text in (
            ("faces", "Faces held."),
            ("searchable_faces", "Faces searchable now (not expired, not restricted)."),
            ("index_size", "Vectors in the derived index."),
            ("media", "Media records held."),
        ):
            count = stats[key]
            value = float(count) if isinstance(count, int | float) else None
            yield GaugeMetricFamily(f"facewarden_{key}", help_text, value=value)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
