"""plinth/server.py's ServeOptions: which internal hop a server takes, and its
tiered-storage options (checked before anything starts); and RouterOptions' --tier-url,
checked against the broker's store."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth import limits
from plinth.cli import main
from plinth.errors import InvalidConfigError, StorageError
from plinth.server import RouterOptions, ServeOptions, check_tier_store
from plinth.shards.shard_handle import TierOptions


@pytest.mark.parametrize("internal_hop, ray_address, taken", [
    ("auto", None, "ipc"),                  # embedded: every hop stays on this machine
    ("auto", "127.0.0.1:6379", "curve"),    # a Ray cluster: hops may cross nodes
    ("curve", None, "curve"),
    ("ipc", None, "ipc"),
])
def test_auto_takes_ipc_with_the_embedded_ray_and_curve_in_a_ray_cluster(internal_hop, ray_address,
                                                                          taken):
    options = ServeOptions(data_dir=Path("d"), internal_hop=internal_hop, ray_address=ray_address)
    assert options.resolved_internal_hop() == taken


# --- Tiered storage's server options (issue 14) ------------------------------------------

def test_without_a_tier_url_the_shards_get_no_tiered_storage_and_the_default_cache():
    tier = ServeOptions(data_dir=Path("d")).tier_options()
    assert not tier.enabled and tier.url is None
    assert tier.cache_bytes == limits.TIER_CACHE_BYTES_DEFAULT


def test_take_over_without_a_tier_url_is_refused_naming_both_options():
    with pytest.raises(InvalidConfigError, match="--tier-store-take-over .* give --tier-url"):
        ServeOptions(data_dir=Path("d"), tier_store_take_over=True).tier_options()


def test_plinth_serve_passes_take_over_on(monkeypatch, tmp_path):
    taken = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: taken.append(options) or 0)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--tier-url", f"file://{tmp_path}",
                                       "--tier-store-take-over"])
    assert result.exit_code == 0, result.output
    assert taken[0].tier_store_take_over


def test_a_file_tier_url_and_a_cache_size_reach_the_shards_options(tmp_path):
    (tmp_path / "tier").mkdir()
    url = f"file://{tmp_path}/tier"
    tier = ServeOptions(data_dir=Path("d"), tier_url=url,
                        tier_cache_bytes=limits.TIER_CACHE_BYTES_MIN).tier_options()
    assert tier.enabled and tier.url == url and tier.cache_bytes == limits.TIER_CACHE_BYTES_MIN
    tier.check()


def test_a_file_tier_url_whose_directory_does_not_exist_is_refused_and_not_created(tmp_path):
    # Given --tier-url of a directory that is not there (a share not mounted: its
    # segments would land on the disk under the mount point)
    url = f"file://{tmp_path}/share/plinth"
    # Then the start is refused, naming the option and the directory, which stays absent
    with pytest.raises(InvalidConfigError, match=(
            f"--tier-url '{url}' cannot be used: .*the directory {tmp_path}/share/plinth "
            f"does not exist")):
        ServeOptions(data_dir=Path("d"), tier_url=url).tier_options()
    assert not (tmp_path / "share").exists()


@pytest.mark.parametrize("url, shown", [
    ("ftp://host/x", "'ftp://host/x' cannot be used: .*scheme 'ftp' is not one of"),
    ("file://relative/path", "'file://relative/path' cannot be used"),
    ("s3://", "'s3://' cannot be used"),
    ("", "'' is 0 bytes; it must be 1 to 2048"),
    ("s3://b/" + "x" * 2048, r"'s3://b/x+' is 2055 bytes; it must be 1 to 2048"),
])
def test_a_tier_url_the_store_cannot_use_is_refused_naming_the_option_and_the_url(url, shown):
    with pytest.raises(InvalidConfigError, match=f"--tier-url {shown}"):
        ServeOptions(data_dir=Path("d"), tier_url=url).tier_options()


@pytest.mark.parametrize("url", ["memory://", "memory:///prefix", "MEMORY://"])
def test_a_memory_tier_url_is_refused_outside_tests_saying_why_and_what_to_use(url):
    # Given the in-process store the unit tests use
    # When plinth serve's options are checked with it
    with pytest.raises(InvalidConfigError) as raised:
        ServeOptions(data_dir=Path("d"), tier_url=url).tier_options()
    # Then it is refused, naming the option and the URL, why, and what to use instead
    message = str(raised.value)
    assert message.startswith(f"--tier-url {url!r}: memory:// is an in-process store")
    assert "loses every segment at exit" in message and "file:///path" in message


def test_a_refused_tier_url_never_shows_its_password_or_query():
    # Given a URL with credentials in it that the store layer refuses (no Azure account)
    url = "az://user:s3cr3t@container/prefix?sig=s3cr3t"
    # When the server checks it / Then the message names it with its secrets masked
    with pytest.raises(InvalidConfigError) as raised:
        ServeOptions(data_dir=Path("d"), tier_url=url).tier_options()
    assert "--tier-url 'az://***@container/prefix?***'" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    # And neither the options' nor the shards' options' repr shows the URL at all
    assert "s3cr3t" not in repr(ServeOptions(data_dir=Path("d"), tier_url=url))
    assert "s3cr3t" not in repr(TierOptions(url))


@pytest.mark.parametrize("cache_bytes", [limits.TIER_CACHE_BYTES_MIN - 1,
                                         limits.TIER_CACHE_BYTES_MAX + 1, 0, -1])
def test_a_tier_cache_outside_its_limits_is_refused_naming_the_option_and_the_limits(cache_bytes):
    with pytest.raises(InvalidConfigError,
                       match=f"--tier-cache-bytes {cache_bytes} is outside "
                             f"{limits.TIER_CACHE_BYTES_MIN}..{limits.TIER_CACHE_BYTES_MAX}"):
        ServeOptions(data_dir=Path("d"), tier_cache_bytes=cache_bytes).tier_options()


@pytest.fixture(autouse=True)
def no_root_log_handler(monkeypatch):
    """plinth serve configures the root logger; here it would log to CliRunner's
    stream, closed once the command returns."""
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)


def test_plinth_serve_passes_the_tier_options_on(monkeypatch, tmp_path):
    # Given plinth serve with both options (the broker itself replaced: no Ray here)
    taken = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: taken.append(options) or 0)
    url = f"file://{tmp_path}/tier"
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--tier-url", url, "--tier-cache-bytes", "67108864"])
    # Then they reach the server's options as given
    assert result.exit_code == 0, result.output
    assert (taken[0].tier_url, taken[0].tier_cache_bytes) == (url, 67_108_864)


def test_plinth_serve_without_tier_options_takes_the_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("PLINTH_TIER_URL", raising=False)
    monkeypatch.delenv("PLINTH_TIER_CACHE_BYTES", raising=False)
    taken = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: taken.append(options) or 0)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (taken[0].tier_url, taken[0].tier_cache_bytes) == \
        (None, limits.TIER_CACHE_BYTES_DEFAULT)


def test_plinth_serve_refuses_a_tier_cache_below_its_minimum_before_starting(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--tier-cache-bytes", "1024"])
    assert result.exit_code == 2
    assert "--tier-cache-bytes" in result.output and "1024" in result.output


def test_plinth_serve_fails_at_once_on_a_bad_tier_url_naming_the_option_and_the_url(tmp_path):
    # Given a URL with a scheme no store has / When plinth serve starts with it
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--tier-url", "ftp://user:pw@host/x"])
    # Then it fails before starting anything (no data dir made, no Ray), naming both
    assert result.exit_code == 1
    assert "error: InvalidConfigError: --tier-url 'ftp://***@host/x' cannot be used" in \
        result.output
    assert "pw" not in result.output.replace("plinth", "")
    assert not (tmp_path / "d").exists()


def test_plinth_serve_takes_the_tier_options_from_the_environment(monkeypatch, tmp_path):
    # Given the deploy configs' way: PLINTH_TIER_URL and PLINTH_TIER_CACHE_BYTES (a URL
    # with a token stays out of the command line)
    url = f"file://{tmp_path}/tier"
    monkeypatch.setenv("PLINTH_TIER_URL", url)
    monkeypatch.setenv("PLINTH_TIER_CACHE_BYTES", "67108864")
    taken = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: taken.append(options) or 0)
    # When plinth serve starts without the options / Then it takes them from there
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (taken[0].tier_url, taken[0].tier_cache_bytes) == (url, 67_108_864)


@pytest.mark.parametrize("args, env, expected", [
    (["--tier-url", "s3://bucket/p"], None, "s3://bucket/p"),
    ([], "s3://bucket/from-env", "s3://bucket/from-env"),
    ([], None, None),
])
def test_plinth_router_passes_its_tier_url_on_from_the_option_or_the_environment(
        monkeypatch, args, env, expected):
    monkeypatch.delenv("PLINTH_TIER_URL", raising=False)
    if env is not None:
        monkeypatch.setenv("PLINTH_TIER_URL", env)
    taken = []
    monkeypatch.setattr("plinth.server.run_router",
                        lambda options, ready: taken.append(options) or 0)
    result = CliRunner().invoke(main, ["router", "--ray-address", "auto", "--cluster-name", "c",
                                       *args])
    assert result.exit_code == 0, result.output
    assert taken[0].tier_url == expected


def test_a_routers_tier_url_is_its_store_and_is_checked_as_plinth_serve_checks_it():
    assert RouterOptions("auto", "c").tier_store() is None
    assert RouterOptions("auto", "c", tier_url="s3://u:s3cr3t@bucket/p/?x=1").tier_store() == \
        "s3://bucket/p"
    with pytest.raises(InvalidConfigError, match="memory:// is an in-process store"):
        RouterOptions("auto", "c", tier_url="memory://").tier_store()
    with pytest.raises(InvalidConfigError, match="--tier-url 'ftp://h/x' cannot be used"):
        RouterOptions("auto", "c", tier_url="ftp://h/x").tier_store()


def test_a_router_given_the_brokers_store_or_none_joins_it():
    check_tier_store("s3://bucket/p", "s3://bucket/p", "plinth")
    check_tier_store(None, "s3://bucket/p", "plinth")
    check_tier_store(None, None, "plinth")


def test_a_router_given_another_store_than_the_brokers_is_refused_naming_both():
    with pytest.raises(InvalidConfigError, match=r"--tier-url names s3://bucket/b, but the "
                       r"broker 'plinth' tiers to s3://bucket/a: give the router and the "
                       r"server the same store"):
        check_tier_store("s3://bucket/b", "s3://bucket/a", "plinth")


def test_a_router_given_a_store_for_a_broker_without_tiered_storage_is_refused():
    with pytest.raises(InvalidConfigError, match=r"--tier-url names s3://bucket/a, but the "
                       r"broker 'plinth' has no tiered storage \(its plinth serve was given "
                       r"no --tier-url\)"):
        check_tier_store("s3://bucket/a", None, "plinth")


# --- The embedded Ray's auth token -------------------------------------------------------

def test_plinth_serve_refuses_a_ray_token_others_may_read_before_starting_ray(tmp_path):
    # Given a data dir whose Ray token file someone could have planted (mode 0644)
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "ray.auth_token").write_text("0" * 64)
    (data_dir / "ray.auth_token").chmod(0o644)
    # When plinth serve starts on it
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir),
                                       "--listen", "tcp://127.0.0.1:1"])
    # Then it refuses in one line naming the file and why, and Ray never started
    assert result.exit_code == 1, result.output
    assert (f"error: InvalidConfigError: Ray's auth token {data_dir / 'ray.auth_token'} has "
            f"mode 644: others may read or change it") in result.stderr
    assert not (data_dir / "ray").exists()


def test_plinth_serve_on_damaged_metadata_fails_in_one_line_naming_the_file_before_ray(tmp_path):
    # Given a data dir whose metadata.json was cut short
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "metadata.json").write_text('{"version": 1, "topics": {"orders": {"partit')
    # When plinth serve starts on it
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir),
                                       "--console-listen", "off"])
    # Then it fails naming the file, before Ray started (which would leave its session)
    assert result.exit_code == 1
    assert f"error: CorruptDataError: {data_dir / 'metadata.json'}: not broker metadata" in \
        result.output
    assert "Traceback" not in result.output and not (data_dir / "ray").exists()


def test_plinth_serve_on_a_full_file_system_says_so_before_ray(tmp_path, monkeypatch):
    # Given a data dir whose file system has 4 KiB free (disk_usage is the kernel's
    # answer; a real full file system needs a mount, which a test may not make)
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30, 4096))
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--console-listen", "off"])
    assert result.exit_code == 1
    assert (f"error: StorageError: --data-dir {tmp_path / 'd'}: its file system has 4096 bytes "
            f"free, under the {limits.DATA_DIR_FREE_BYTES_MIN}") in result.output
    assert not (tmp_path / "d" / "ray").exists()


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1:99999"])
def test_a_console_listen_that_is_not_host_port_is_refused_naming_the_option(listen):
    # Given a --console-listen the console cannot bind
    # When serve checks it, Then the error names the option, the value, and off
    with pytest.raises(InvalidConfigError,
                       match=f"^--console-listen '{listen}': listen address .* is not HOST:PORT"
                             f".*; or off for no console$"):
        ServeOptions(data_dir=Path("d"), console_listen=listen).check_console_listen()


def test_a_full_file_system_error_names_what_holds_no_record_and_how_to_start_anyway(
        tmp_path, monkeypatch):
    # Given a data dir holding old Ray sessions, a rotated log, a copy recovery cut and a
    # log set aside, on a file system with 4 KiB free
    import shutil
    from collections import namedtuple

    from plinth.server import check_free_space

    data_dir = tmp_path / "d"
    for session in ("session_2026-12-01_1", "session_2026-12-02_2"):
        (data_dir / "ray" / session).mkdir(parents=True)
        (data_dir / "ray" / session / "log").write_bytes(b"x" * 100)
    (data_dir / "logs").mkdir()
    (data_dir / "logs" / "shard-0.log.1").write_bytes(b"x" * 30)
    partition = data_dir / "shards" / "shard-0" / "t-0"
    partition.mkdir(parents=True)
    (partition / "00000000000000000000.log.cut-1").write_bytes(b"x" * 7)
    (data_dir / "shards" / "shard-0" / "t-1.123-orphan").mkdir()
    (data_dir / "shards" / "shard-0" / "t-1.123-orphan" / "0.log").write_bytes(b"x" * 5)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30, 4096))
    # When a start checks it / Then the error names each, with its bytes (the newest Ray
    # session is not spare), and the way to start anyway
    with pytest.raises(StorageError) as err:
        check_free_space(data_dir, limits.DATA_DIR_FREE_BYTES_MIN)
    assert ("old Ray sessions (100 bytes), rotated logs (30 bytes), copies recovery cut "
            "(*.cut-*) (7 bytes), logs set aside (*-orphan) (5 bytes) hold no record; or "
            "start with a lower --data-dir-free-bytes-min") in str(err.value)
    # And a lower minimum lets the start go on
    check_free_space(data_dir, 4096)


def test_the_free_space_minimum_is_an_option_of_serve(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: seen.append(options) or 0)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--console-listen",
                                       "off", "--data-dir-free-bytes-min", "0"])
    assert result.exit_code == 0, result.output
    assert seen[0].data_dir_free_bytes_min == 0


@pytest.mark.parametrize("given, taken", [([], 2 * limits.DATA_DIR_FREE_BYTES_MIN),
                                          (["--produce-free-bytes-min", "0"], 0),
                                          (["--produce-free-bytes-min", "1073741824"], 1 << 30)])
def test_the_produce_reserve_is_an_option_of_serve_twice_the_start_minimum_unless_given(
        tmp_path, monkeypatch, given, taken):
    seen = []
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: seen.append(options) or 0)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--console-listen",
                                       "off", *given])
    assert result.exit_code == 0, result.output
    assert seen[0].produce_free_bytes_min == taken


@pytest.mark.parametrize("value, why", [
    ("-1", "-1 is not in the range 0<=x<=1125899906842624"),
    (str((1 << 50) + 1), "1125899906842625 is not in the range 0<=x<=1125899906842624"),
    ("16MiB", "'16MiB' is not a valid integer")])
def test_a_produce_reserve_out_of_range_is_refused_naming_the_option(tmp_path, value, why):
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--console-listen",
                                       "off", "--produce-free-bytes-min", value])
    assert result.exit_code == 2
    assert f"Invalid value for '--produce-free-bytes-min': {why}" in result.output


def test_a_router_of_another_build_than_its_server_is_refused_naming_both_versions():
    from plinth.server import check_router_build
    from plinth.version import VERSION

    check_router_build(VERSION, "cluster orders")   # the same build joins
    with pytest.raises(InvalidConfigError,
                       match=rf"this plinth router is Plinth {VERSION}, and the server of the "
                             rf"broker \(cluster orders\) is a Plinth before 0\.2\.0: a router "
                             rf"joins only a server of its own build"):
        check_router_build(None, "cluster orders")
    with pytest.raises(InvalidConfigError, match=r"the server of the broker \(x\) is Plinth 9\.9"):
        check_router_build("9.9", "x")
