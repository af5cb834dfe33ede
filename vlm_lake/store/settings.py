"""Connection settings for an S3-compatible store, shared by boto3 and Lance.

``StoreSettings`` holds the settings once and derives both a boto3 client (for listing and
reading raw uploads) and Lance ``storage_options`` (for datasets), so the two can never
disagree about endpoint, region, addressing style, credentials, retries or timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from vlm_lake.store import redact, uris


@dataclass(frozen=True)
class StoreSettings:
    """Connection settings for an S3-compatible object store.

    Every field is optional: unset credentials fall back to the standard AWS chain
    (environment, profile, instance role), which boto3 and Lance both follow.

    Attributes:
        endpoint_url: Custom endpoint (MinIO, OSS, a test server); None for AWS.
        region: Bucket region, for example ``us-east-1`` or ``cn-hangzhou``.
        access_key_id: Access key id (shown in ``repr``, masked in logs and errors).
        secret_access_key: Secret key; never shown in ``repr``.
        session_token: Temporary session token; never shown in ``repr``.
        virtual_hosted_style: Address buckets as ``bucket.endpoint`` (required by OSS).
        max_attempts: Attempts per request (the first one included), for boto3 and Lance
            alike; throttling, 5xx, dropped connections and timeouts are retried with
            exponential backoff and jitter. At least 1.
        connect_timeout: Seconds to wait for a connection (> 0).
        read_timeout: Seconds to wait for a response: boto3's per-read socket timeout, and
            Lance's whole-request timeout (> 0).
        max_pool_connections: Size of boto3's HTTP connection pool.

    The credentials are registered with :mod:`vlm_lake.store.redact` when the settings are
    created, so they are masked in every log record and in the errors raised here.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    virtual_hosted_style: bool = False
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts!r} must be an integer >= 1")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}={value!r} must be a number of seconds > 0")
        if self.max_pool_connections < 1:
            raise ValueError(f"max_pool_connections={self.max_pool_connections!r} must be >= 1")
        url_password = urlparse(self.endpoint_url).password if self.endpoint_url else None
        secrets = (self.access_key_id, self.secret_access_key, self.session_token, url_password)
        for secret in secrets:
            redact.register_secret(secret)
        if any(secrets):
            redact.install_log_redaction()

    def boto3_client(self, service: str = "s3", endpoint_url: str | None = None) -> Any:
        """Build a boto3 client from these settings (thread-safe, share it).

        ``service`` is ``s3`` (default) or ``sqs`` (the upload-event queue, with the same
        credentials and region; ``endpoint_url`` overrides the store's endpoint for it).

        Retries use botocore's ``standard`` mode: throttling errors (``SlowDown``,
        ``Throttling``, 429), transient errors (500, 502, 503, 504) and connection errors and
        timeouts are retried, ``max_attempts`` attempts in all (botocore's
        ``total_max_attempts``), with truncated exponential
        backoff and full jitter (1 s base for throttling, 50 ms otherwise, at most 20 s),
        honouring ``x-amz-retry-after``. ``adaptive`` mode is not used: it adds a client-side
        token bucket that makes every thread sharing the client wait after any throttle
        response, and botocore documents it as experimental; the download pool is bounded
        anyway, and standard mode's retry quota already stops retry storms.
        """
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            # total_max_attempts counts the first attempt (like AWS_MAX_ATTEMPTS); botocore's
            # "max_attempts" key would count retries only, one attempt more than asked.
            retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
            s3={"addressing_style": "virtual" if self.virtual_hosted_style else "path"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            # OSS and older MinIO reject the CRC trailers newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.session.Session().client(
            service,
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            config=config,
        )

    def lance_storage_options(self, uri: str | None = None) -> dict[str, str]:
        """Lance/object_store options equivalent to :meth:`boto3_client`.

        Args:
            uri: The dataset URI. With virtual-hosted-style addressing and a custom endpoint,
                Lance expects the bucket inside the endpoint (``https://bucket.host``), so the
                bucket is taken from this URI.

        Returns:
            A dict for ``lance.dataset(..., storage_options=...)``; empty for local paths.

        Retry and timeout keys (names as Lance 14 reads them, from ``lance-io``):
        ``client_max_retries`` (object_store's ``RetryConfig.max_retries``: retries after
        the first attempt, so ``max_attempts - 1``; object_store retries 5xx, 429, connection
        errors and timeouts with exponential backoff from 100 ms, base 2, at most 15 s, with
        jitter), ``download_retry_count`` (re-reads of a response body cut short, also
        ``max_attempts - 1``), ``connect_timeout`` and ``timeout`` (object_store's
        whole-request timeout) as durations (``30s``, ``5500ms``). ``client_retry_timeout``
        (180 s) is left at Lance's default. Lance also retries a request whose retries ran
        out a few more times in its rate-limiting (AIMD) layer, which also slows down its
        request rate after throttling; that layer keeps Lance's defaults.
        """
        if uri is not None and not uris.is_remote(uri):
            return {}
        opts: dict[str, str] = {}
        if self.endpoint_url:
            endpoint = self.endpoint_url.rstrip("/")
            if self.virtual_hosted_style and uri is not None:
                bucket, _ = uris.split_bucket_key(uri)
                parsed = urlparse(endpoint)
                if not parsed.netloc.startswith(f"{bucket}."):
                    endpoint = f"{parsed.scheme}://{bucket}.{parsed.netloc}{parsed.path}"
            opts["aws_endpoint"] = endpoint
            if endpoint.startswith("http://"):
                opts["allow_http"] = "true"
        if self.region:
            opts["aws_region"] = self.region
        if self.access_key_id:
            opts["aws_access_key_id"] = self.access_key_id
        if self.secret_access_key:
            opts["aws_secret_access_key"] = self.secret_access_key
        if self.session_token:
            opts["aws_session_token"] = self.session_token
        opts["virtual_hosted_style_request"] = "true" if self.virtual_hosted_style else "false"
        opts["client_max_retries"] = str(self.max_attempts - 1)
        opts["download_retry_count"] = str(self.max_attempts - 1)
        opts["connect_timeout"] = _duration(self.connect_timeout)
        opts["timeout"] = _duration(self.read_timeout)
        return opts

    @classmethod
    def from_lance_options(cls, options: dict[str, str], uri: str) -> StoreSettings:
        """The settings that :meth:`lance_storage_options` turns into ``options``.

        For code that is handed Lance storage options and must also read raw objects
        with boto3 (the loader's fragment cache). Keys it does not know are left to the
        defaults (the standard AWS chain for credentials).

        Args:
            options: Lance storage options.
            uri: The dataset URI (its bucket is taken out of a virtual-hosted endpoint).
        """
        endpoint = options.get("aws_endpoint") or options.get("aws_endpoint_url")
        virtual = options.get("virtual_hosted_style_request", "false").lower() == "true"
        if endpoint and virtual and uris.is_remote(uri):
            bucket, _ = uris.split_bucket_key(uri)
            parsed = urlparse(endpoint)
            if parsed.netloc.startswith(f"{bucket}."):
                host = parsed.netloc[len(bucket) + 1 :]
                endpoint = f"{parsed.scheme}://{host}{parsed.path}"
        retries = options.get("client_max_retries")
        return cls(
            endpoint_url=endpoint,
            region=options.get("aws_region") or options.get("region"),
            access_key_id=options.get("aws_access_key_id"),
            secret_access_key=options.get("aws_secret_access_key"),
            session_token=options.get("aws_session_token"),
            virtual_hosted_style=virtual,
            max_attempts=int(retries) + 1 if retries is not None else 5,
        )


def _duration(seconds: float) -> str:
    """Seconds as an object_store duration: ``30s``, or ``5500ms`` when not whole seconds."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"
