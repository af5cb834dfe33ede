"""The object-store resource: S3, Aliyun OSS, MinIO or a local folder, one set of settings."""

from __future__ import annotations

from typing import Any

from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from vlm_lake.store.object_store import ObjectStore, StoreSettings
from vlm_lake.store.redact import mask_fields

_CREDENTIAL_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


class ObjectStoreResource(S3Resource):
    """dagster-aws's ``S3Resource`` plus virtual-hosted addressing and Lance options.

    The same fields configure boto3 (listing and reading raw uploads, via :meth:`store`)
    and Lance (``storage_options``), so both always talk to the same endpoint with the same
    credentials. Local paths need none of it: they work with every field unset.

    For Aliyun OSS set ``endpoint_url`` to the regional endpoint (for example
    ``https://oss-cn-hangzhou.aliyuncs.com``), ``region_name`` to the region and
    ``virtual_hosted_style=True``.
    """

    virtual_hosted_style: bool = Field(
        default=False,
        description="Address buckets as bucket.endpoint (required by Aliyun OSS).",
    )
    download_workers: int = Field(
        default=16, description="Parallel object downloads during ingest."
    )
    _store: ObjectStore | None = PrivateAttr(default=None)

    def settings(self) -> StoreSettings:
        """The core connection settings derived from this resource's fields."""
        return StoreSettings(
            endpoint_url=self.endpoint_url or None,
            region=self.region_name or None,
            access_key_id=self.aws_access_key_id or None,
            secret_access_key=self.aws_secret_access_key or None,
            session_token=self.aws_session_token or None,
            virtual_hosted_style=self.virtual_hosted_style,
            max_attempts=self.max_attempts,
            max_pool_connections=max(10, 2 * self.download_workers),
        )

    def __repr_args__(self) -> Any:
        """Fields for ``repr()`` / ``str()``, with the credentials masked."""
        return mask_fields(super().__repr_args__(), _CREDENTIAL_FIELDS)

    def get_object_to_set_on_execution_context(self) -> Any:
        """Hand Dagster the resource itself, not a fresh boto3 client.

        ``S3Resource`` builds a client whenever the resource is initialised (each run,
        each sensor tick), which costs about a second; :meth:`store` builds one lazily.
        """
        return self

    def store(self) -> ObjectStore:
        """The core :class:`~vlm_lake.store.object_store.ObjectStore`, built once per resource."""
        if self._store is None:
            self._store = ObjectStore(self.settings())
        return self._store

    def storage_options(self, uri: str) -> dict[str, str]:
        """Lance storage options for ``uri`` (empty for local paths)."""
        return self.store().storage_options(uri)
