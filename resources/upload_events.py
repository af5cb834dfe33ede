"""The upload-event queue and the sweep's budget of ``new_uploads_sensor``."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from vlm_lake.ingest.upload_events import EventQueue
from vlm_lake.store.settings import StoreSettings


class UploadEventsResource(ConfigurableResource):
    """Where the sensor hears of uploads, and how much one tick may do.

    Without ``queue_url`` every tick sweeps the sources (a slice of their listing, at most
    ``max_list_pages_per_tick`` LIST calls each). With it, ticks read the queue and a
    sweep runs only every ``sweep_interval_seconds``, to catch what the queue missed.
    """

    queue_url: str | None = Field(
        default=None,
        description="SQS queue receiving the bucket's S3 event notifications "
        "(UPLOAD_EVENTS_QUEUE_URL). Unset: change detection by listing only.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="SQS endpoint, when it is not the object store's (UPLOAD_EVENTS_ENDPOINT_URL).",
    )
    sweep_interval_seconds: int = Field(
        default=600,
        ge=0,
        description="With a queue: seconds between two sweep slices "
        "(UPLOAD_SWEEP_INTERVAL_SECONDS).",
    )
    tick_budget_seconds: float = Field(
        default=20.0, gt=0, description="Time after which a tick stops listing and receiving."
    )
    max_list_pages_per_tick: int = Field(
        default=100, ge=1, description="LIST calls per source per tick (1,000 keys each)."
    )
    max_messages_per_tick: int = Field(
        default=1000, ge=1, description="Queue messages read per tick."
    )

    def queue(self, settings: StoreSettings) -> EventQueue | None:
        """The queue to read, or None when none is configured."""
        if not self.queue_url:
            return None
        return EventQueue(self.queue_url, settings, self.endpoint_url or None)
