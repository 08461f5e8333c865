"""Distributed ingest on Ray: decode, detection and embedding run in Ray actors.

Each actor holds one face pipeline (built once, like a pool worker); the driver keeps every
rule and every write (lawful basis, suppression list, retention, transactions of up to 32
whole images, idempotent by content hash), so a Ray cluster only adds compute. ``address`` is a Ray
cluster address (``ray://head:10001``, ``auto`` for the cluster this machine belongs to) or
``local`` to start a Ray instance on this machine.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from facewarden.adapters.models.registry import build_pipeline
from facewarden.config import Settings
from facewarden.core.errors import ConfigurationError
from facewarden.services.processing import process_image


class _PipelineActor:
    def __init__(self, settings_json: str) -> None:
        settings = Settings.model_validate_json(settings_json)
        self.pipeline = build_pipeline(settings, settings.model_threads or 1, ingest=True)
        self.max_pixels = settings.max_image_pixels

    def process(self, data: bytes) -> Any:
        return process_image(self.pipeline, data, self.max_pixels)


class RayPool:
    """``submit(data) -> Future`` over Ray actors, shaped like the process pool."""

    def __init__(self, address: str, settings: Settings, actors: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:  # an optional extra
            raise ConfigurationError("Ray is not installed: pip install 'facewarden[ray]'") from exc
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address == "local":
                kwargs["num_cpus"] = actors or settings.workers
            else:
                kwargs["address"] = address
            ray.init(**kwargs)
            self._started = True
        count = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor_class = ray.remote(num_cpus=1)(_PipelineActor)
        # Ray types an actor's methods only when decorated with ``@ray.method``, which would
        # import ray with this module (an optional extra): the handles are used untyped.
        self.actors: list[Any] = [
            actor_class.remote(settings.model_dump_json()) for _ in range(count)
        ]
        self._next = 0

    def __len__(self) -> int:
        return len(self.actors)

    def submit(self, data: bytes) -> Future:
        actor = self.actors[self._next % len(self.actors)]
        self._next += 1
        return actor.process.remote(data).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started:
            self.ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
