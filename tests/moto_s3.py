"""A real S3 API for tests: moto's server on 127.0.0.1, started and stopped by the tests.

``MotoS3`` runs moto's ThreadedMotoServer in this process on an ephemeral
port, creates a bucket, and gives the environment an S3 client needs to reach
it (``env``: credentials, region, endpoint, plain http allowed). Tests that
start brokers pass ``env`` to them; in-process tests use ``store()``, which sets
the environment for the duration of the test (``monkeypatch``) and opens a
RemoteStore on ``s3://<bucket>/<prefix>``. ``stop()`` shuts the server down (a
test of an unavailable store), ``start()`` brings it back on the same port
with its objects (moto keeps them in this process's memory).

The session's server has a port fixed before Ray starts (``SESSION_PORT``), and
tests/conftest.py puts ``env_for(SESSION_PORT)`` into the environment of the
test process first, so Ray's workers (shard actors of every broker the tests
start) and ``plinth`` subprocesses inherit it and reach this server, never a
real cloud.
"""

from __future__ import annotations

import logging
import secrets

from tests.support import free_port

REGION = "us-east-1"
SESSION_PORT = free_port()


def env_for(port: int) -> dict[str, str]:
    """What an S3 client (obstore, boto3) needs to use a moto server on ``port``."""
    return {"AWS_ACCESS_KEY_ID": "plinth-test", "AWS_SECRET_ACCESS_KEY": "plinth-test",
            "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}


class MotoS3:
    """One moto S3 server on 127.0.0.1 with one bucket. Test thread only."""

    def __init__(self, bucket: str = "plinth-tier", port: int | None = None):
        self.bucket = bucket
        self.port = port or free_port()
        self._server = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (obstore, boto3) needs to use this server."""
        return env_for(self.port)

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

    def store(self, monkeypatch, prefix: str | None = None, **timeouts):
        """A RemoteStore on this server, the environment set through ``monkeypatch``."""
        from plinth.shards.tier.remote_store import open_remote_store
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return open_remote_store(self.url(prefix), **timeouts)
