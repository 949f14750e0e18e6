"""Turn Settings into a Store. The only place that imports the AWS SDK, and only when called.

botocore's own session, not boto3's: boto3's wrapper adds its resource models and handlers, which a client does not
use, at about 50 ms of every synchronous command's start (the same credential chain, profiles and configuration).
"""

from __future__ import annotations

from walbucket.core.settings import Settings
from walbucket.store.protocol import Store

__all__ = ["credential_source", "open_store"]


def open_store(settings: Settings) -> Store:
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    from walbucket.core.errors import ConfigError

    from .s3 import S3Store

    config = Config(
        region_name=settings.region,
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        # total_max_attempts: botocore's max_attempts counts retries, so 1 would hide one retry from the budget
        retries={"total_max_attempts": 1, "mode": "standard"},  # walbucket's own policy retries, within its budget
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        max_pool_connections=32,
        user_agent_extra="walbucket",
        # walbucket sends its own SHA-256 with every upload. botocore's default would add a CRC32 of its own, over
        # https in an aws-chunked trailer, which stores without trailer support (Ceph RGW 16.2) refuse with
        # 411 MissingContentLength.
        request_checksum_calculation="when_required",
    )
    try:
        session = botocore.session.Session(profile=settings.profile)
        client = session.create_client(
            "s3",
            endpoint_url=settings.endpoint_url,
            verify=_verify(settings),
            config=config,
        )
    except BotoCoreError as exc:
        raise ConfigError(f"cannot create the S3 client: {exc}") from None
    return S3Store(
        client,
        settings.bucket,
        retry_budget=settings.retry_budget,
        storage_class=settings.storage_class,
        sse=settings.sse,
        sse_kms_key_id=settings.sse_kms_key_id,
        multipart_threshold=settings.multipart_threshold,
        multipart_chunk_size=settings.multipart_chunk_size,
    )


def _verify(settings: Settings) -> str | bool | None:
    """TLS verification: ``ca_bundle`` first, then botocore's own chain (AWS_CA_BUNDLE, ``ca_bundle`` in ~/.aws/config,
    the system's certificates): None lets botocore choose. ``verify_tls = false`` switches verification off."""
    if settings.ca_bundle:
        return settings.ca_bundle
    return None if settings.verify_tls else False


def credential_source(settings: Settings) -> str | None:
    """Name where botocore's chain finds credentials for these settings ('env', 'shared-credentials-file', ...).

    None when it finds none; ConfigError when the profile does not exist. No request is made.
    """
    import botocore.session
    from botocore.exceptions import BotoCoreError

    from walbucket.core.errors import ConfigError

    try:
        credentials = botocore.session.Session(profile=settings.profile).get_credentials()
    except BotoCoreError as exc:
        raise ConfigError(f"cannot load AWS credentials: {exc}") from None
    return None if credentials is None else str(credentials.method)
