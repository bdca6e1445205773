"""Which object-storage library tiered storage uses: obstore against fsspec (+ s3fs), measured.

For each library and each store (``file://`` in a temp dir, and moto's S3 API
server on 127.0.0.1, an ephemeral port, in its own process so that it does not
share the benchmark's GIL), it measures:

- a multipart upload of one ``--object-mib`` object (64 MiB), in MB/s;
- ranged reads of 1 MiB and of 64 KiB at random positions of that object, in
  MB/s and reads/s (``--reads-file`` of each on file://, ``--reads-s3`` on moto,
  which is slow by itself: tens of ms per request);
- whether a put and a ranged get work inside a Ray actor (a fresh worker
  process; ray.init on 127.0.0.1, a temp dir, no dashboard);
- whether a ranged get works in a fork()ed child after the parent used the
  library (each child has ``--fork-wait-s`` to answer, else it counts as hung
  and is killed).

Prints one table. Nothing here is Plinth code: this is how the library was
chosen (README, "Tiered storage").

    python loadtest/tier_store_bench.py
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
KiB = 1024
BUCKET = "bench"
KEY = "bench/object-64m"
REGION = "us-east-1"

MOTO_SERVER = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no line per request
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()   # until the benchmark closes our stdin
server.stop()
"""


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 in a child process; returns it and its endpoint URL."""
    proc = subprocess.Popen([sys.executable, "-c", MOTO_SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                       "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"})
    import boto3
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=BUCKET)
    return proc, endpoint


# --- The two libraries, behind the same four calls ------------------------------

class ObstoreClient:
    name = "obstore"

    def __init__(self, url: str):
        from obstore.store import from_url
        options = {"client_options": {"allow_http": True}} if url.startswith("s3://") else {}
        self.store = from_url(url, **options)

    def put_file(self, key: str, path: Path) -> None:
        import obstore
        obstore.put(self.store, key, path, use_multipart=True, chunk_size=10 * MiB,
                    max_concurrency=4)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        import obstore
        return obstore.get_range(self.store, key, start=start, length=length)

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore
        obstore.put(self.store, key, data)


class FsspecClient:
    name = "fsspec"

    def __init__(self, url: str):
        import fsspec
        if url.startswith("s3://"):
            self.fs = fsspec.filesystem("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                                        key="bench", secret="bench",
                                        client_kwargs={"region_name": REGION})
            self.root = url[len("s3://"):]
        else:
            self.fs = fsspec.filesystem("file")
            self.root = url[len("file://"):]

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put_file(self, key: str, path: Path) -> None:
        # s3fs uploads a file larger than its block size (50 MiB) in parts.
        self.fs.put_file(str(path), self._path(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.fs.cat_file(self._path(key), start=start, end=start + length)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)


CLIENTS = {"obstore": ObstoreClient, "fsspec": FsspecClient}


# --- Measurements -------------------------------------------------------------------

def measure_upload(client, source: Path) -> float:
    started = time.perf_counter()
    client.put_file(KEY, source)
    return source.stat().st_size / MiB / (time.perf_counter() - started)


def measure_ranged_reads(client, object_bytes: int, length: int, reads: int) -> tuple[float, float]:
    """(MB/s, reads/s) of ``reads`` random ranged gets of ``length`` bytes."""
    rng = random.Random(length)
    starts = [rng.randrange(0, object_bytes - length) for _ in range(reads)]
    started = time.perf_counter()
    for start in starts:
        data = client.get_range(KEY, start, length)
        if len(data) != length:
            raise AssertionError(f"{client.name}: a {length}-byte range read {len(data)} bytes")
    elapsed_s = time.perf_counter() - started
    return reads * length / MiB / elapsed_s, reads / elapsed_s


def works_in_ray_actor(library: str, url: str, env: dict[str, str]) -> str:
    import ray

    @ray.remote(num_cpus=0, runtime_env={"env_vars": env})
    class Probe:
        def run(self) -> int:
            client = CLIENTS[library](url)
            client.put_bytes("bench/ray-probe", b"x" * 100_000)
            return len(client.get_range("bench/ray-probe", 1000, 5000))

    actor = Probe.remote()
    try:
        return "yes" if ray.get(actor.run.remote(), timeout=60) == 5000 else "wrong bytes"
    except Exception as error:   # report, do not stop the benchmark
        return f"no ({type(error).__name__})"
    finally:
        ray.kill(actor)


def works_after_fork(client, wait_s: float) -> str:
    """A ranged get in a fork()ed child of a process that already used ``client``."""
    client.get_range(KEY, 0, 4096)   # the parent has used it (threads, pools started)
    pid = os.fork()
    if pid == 0:
        try:
            ok = len(client.get_range(KEY, 4096, 4096)) == 4096
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid:
            return "yes" if os.waitstatus_to_exitcode(status) == 0 else "error"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)   # our own child
    os.waitpid(pid, 0)
    return f"hung (> {wait_s:g} s)"


def start_ray(temp_dir: str) -> None:
    Path(temp_dir).mkdir()
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._raylet import Config
    Config.initialize("")
    ray.init(_node_ip_address="127.0.0.1", _temp_dir=temp_dir, num_cpus=2,
             include_dashboard=False, namespace="tier-bench")


def bench_one(library: str, store: str, url: str, source: Path, args, env) -> dict:
    client = CLIENTS[library](url)
    reads = args.reads_s3 if store == "s3 (moto)" else args.reads_file
    row = {"library": library, "store": store, "upload_mb_s": measure_upload(client, source)}
    object_bytes = source.stat().st_size
    row["1mib_mb_s"], row["1mib_ops_s"] = measure_ranged_reads(client, object_bytes, MiB, reads)
    row["64kib_mb_s"], row["64kib_ops_s"] = measure_ranged_reads(client, object_bytes, 64 * KiB, reads)
    row["ray_actor"] = works_in_ray_actor(library, url, env)
    row["after_fork"] = works_after_fork(client, args.fork_wait_s)
    return row


def print_table(rows: list[dict], args) -> None:
    print(f"\n{args.object_mib} MiB object; ranged reads: {args.reads_file} of each size on "
          f"file://, {args.reads_s3} on moto\n")
    header = ("library", "store", "upload MB/s", "1 MiB MB/s", "1 MiB reads/s", "64 KiB MB/s",
              "64 KiB reads/s", "Ray actor", "after fork")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['library']} | {row['store']} | {row['upload_mb_s']:.0f} | "
              f"{row['1mib_mb_s']:.0f} | {row['1mib_ops_s']:.0f} | {row['64kib_mb_s']:.1f} | "
              f"{row['64kib_ops_s']:.0f} | {row['ray_actor']} | {row['after_fork']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-mib", type=int, default=64)
    parser.add_argument("--reads-file", type=int, default=400)
    parser.add_argument("--reads-s3", type=int, default=60)
    parser.add_argument("--fork-wait-s", type=float, default=10.0)
    parser.add_argument("--libraries", default="obstore,fsspec")
    args = parser.parse_args()

    temp_dir = tempfile.mkdtemp(prefix="tier-bench-")
    moto_proc = None
    try:
        source = Path(temp_dir) / "source"
        source.write_bytes(os.urandom(args.object_mib * MiB))
        file_root = Path(temp_dir) / "file-store"
        file_root.mkdir()
        (file_root / "bench").mkdir()
        moto_proc, _ = start_moto()
        env = {key: os.environ[key] for key in os.environ if key.startswith("AWS_")}
        start_ray(str(Path(temp_dir) / "ray"))
        stores = [("file://", f"file://{file_root}"), ("s3 (moto)", f"s3://{BUCKET}")]
        rows = []
        for library in args.libraries.split(","):
            for store, url in stores:
                rows.append(bench_one(library, store, url, source, args, env))
                print(rows[-1], flush=True)
        print_table(rows, args)
    finally:
        if moto_proc is not None:
            moto_proc.stdin.close()
            moto_proc.wait(timeout=30)
        try:
            import ray
            ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
