"""A real S3 API for tests: moto's server on 127.0.0.1, started and stopped by the tests.

``MotoS3`` runs moto's ThreadedMotoServer in this process on an ephemeral
port, creates a bucket, and gives the environment an S3 client needs to reach
it (``env``: credentials, region, endpoint, plain http allowed). Tests that
start brokers pass ``env`` to them; in-process tests use ``store()``, which sets
the environment for the duration of the test (``monkeypatch``) and opens a
RemoteStore on ``s3://<bucket>/<prefix>``. ``stop()`` shuts the server down (a
test of an unavailable store), ``restart()`` brings it back on the same port,
empty (moto keeps its buckets in memory, so the bucket is created again).
"""

from __future__ import annotations

import logging
import secrets

from tests.support import free_port

REGION = "us-east-1"


class MotoS3:
    """One moto S3 server on 127.0.0.1 with one bucket. Test thread only."""

    def __init__(self, bucket: str = "plinth-tier"):
        self.bucket = bucket
        self.port = free_port()
        self._server = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (obstore, boto3) needs to use this server."""
        return {"AWS_ACCESS_KEY_ID": "plinth-test", "AWS_SECRET_ACCESS_KEY": "plinth-test",
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ALLOW_HTTP": "true"}

    def url(self, prefix: str | None = None) -> str:
        """``s3://bucket/prefix``; a fresh random prefix if none is given."""
        return f"s3://{self.bucket}/{prefix or 'p-' + secrets.token_hex(4)}"

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no log line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self._create_bucket()
        return self

    def _create_bucket(self) -> None:
        import boto3
        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                              aws_access_key_id="plinth-test", aws_secret_access_key="plinth-test")
        client.create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def store(self, monkeypatch, prefix: str | None = None, **timeouts):
        """A RemoteStore on this server, the environment set through ``monkeypatch``."""
        from plinth.shards.tier.remote_store import open_remote_store
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return open_remote_store(self.url(prefix), **timeouts)
