"""plinth/cli.py's options: a value the user got wrong is refused before anything
connects or starts, with click's usage error naming the option and the value (exit
status 2), or one ``error:`` line (exit status 1) for what is found only while the
command runs; never a Python traceback.

Commands that would reach a broker are given one nobody listens at, with a short
request timeout: an option that is not refused fails these tests by timing out
there (exit 1, "no reply"), not by hanging."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from plinth.cli import main
from tests.support import free_port


@pytest.fixture
def nobody():
    """``--broker`` and ``--request-timeout-ms`` options naming a port nobody listens at."""
    return ["--broker", f"tcp://127.0.0.1:{free_port()}", "--request-timeout-ms", "500"]


@pytest.fixture(autouse=True)
def no_root_log_handler(monkeypatch):
    """plinth serve configures the root logger; here it would log to CliRunner's
    stream, closed once the command returns."""
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)


@pytest.fixture
def no_server(monkeypatch):
    """plinth serve and plinth router replaced: an option they should refuse must not
    start Ray here."""
    monkeypatch.setattr("plinth.server.serve", lambda options, ready: 0)
    monkeypatch.setattr("plinth.server.run_router", lambda options, ready: 0)


def refused(args: list[str], stdin: str = "") -> str:
    """The usage error of ``plinth ARGS``, asserting it is one (status 2, no traceback)."""
    result = CliRunner().invoke(main, args, input=stdin)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)   # not an exception of the command
    return result.stderr


@pytest.mark.parametrize("broker, why", [
    ("nonsense", "broker 'tcp://nonsense' is not tcp://HOST:PORT"),
    ("tcp://127.0.0.1", "broker 'tcp://127.0.0.1' is not tcp://HOST:PORT"),
    ("http://127.0.0.1:7400", "broker 'http://127.0.0.1:7400' is not tcp://HOST:PORT"),
    ("tcp://127.0.0.1:-1", "broker 'tcp://127.0.0.1:-1' is not tcp://HOST:PORT"),
    ("a,,b", "broker 'a,,b': address 'tcp://a' is not tcp://HOST:PORT"),
    ("127.0.0.1:7400,,127.0.0.1:7401", "address 'tcp://' is not tcp://HOST:PORT"),
    ("tcp://127.0.0.1:99999", "has port 99999: a port must be 1..65535"),
    ("tcp://127.0.0.1:0", "has port 0: a port must be 1..65535"),
    ("", "broker '' names no router"),
])
def test_a_broker_address_that_is_not_one_is_refused_naming_the_option_and_why(broker, why):
    shown = refused(["--broker", broker, "--request-timeout-ms", "500", "topic", "list"])
    assert "Invalid value for '--broker'" in shown and why in shown


def test_a_broker_address_from_the_environment_is_refused_naming_the_variable_and_its_value(
        monkeypatch):
    # Given PLINTH_BROKER set to what is no address, and no --broker
    monkeypatch.setenv("PLINTH_BROKER", "garbage")
    # When a client command runs / Then the usage error names the variable and the value
    # as it was set (not --broker, not 'tcp://garbage' alone)
    shown = refused(["--request-timeout-ms", "500", "topic", "list"])
    assert "Invalid value for PLINTH_BROKER (environment variable): 'garbage': " in shown
    assert "--broker" not in shown


def test_the_help_names_the_broker_variable_and_that_several_routers_may_be_given():
    shown = CliRunner().invoke(main, ["--help"]).output
    assert "PLINTH_BROKER" in shown and "comma-separated" in shown


@pytest.mark.timeout(60)
def test_a_broker_host_that_does_not_resolve_is_said_so_not_blamed_on_the_broker():
    # When a client command is given a host name no resolver knows (.invalid: RFC 2606)
    result = CliRunner().invoke(main, ["--broker", "tcp://nosuchhost.invalid:23400",
                                       "--request-timeout-ms", "500", "topic", "list"])
    # Then one line names the option, the address and the host, not a timeout
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "error: InvalidConfigError: --broker tcp://nosuchhost.invalid:23400: host "
        "'nosuchhost.invalid' does not resolve (")


@pytest.mark.parametrize("command", [
    ["serve", "--data-dir", "d"],
    ["router", "--ray-address", "auto", "--cluster-name", "c"],
])
@pytest.mark.parametrize("listen, why", [
    ("tcp://127.0.0.1:99999", "'tcp://127.0.0.1:99999' has port 99999: a port must be 1..65535"),
    ("tcp://127.0.0.1:65536", "has port 65536: a port must be 1..65535"),
    ("garbage", "address 'tcp://garbage' is not tcp://HOST:PORT"),
    ("127.0.0.1:0", "has port 0: a port must be 1..65535"),
])
def test_a_listen_address_that_is_not_one_is_refused_before_anything_starts(
        no_server, command, listen, why):
    # (--allow-insecure: else "refusing to listen on garbage without CurveZMQ keys" would
    # be said first, about an address that is no address)
    shown = refused(command + ["--listen", listen, "--allow-insecure"])
    assert "Invalid value for '--listen'" in shown and why in shown


def options_seen(monkeypatch, tmp_path, command: list[str], run: str, args: list[str]):
    """The options ``plinth COMMAND ARGS`` would start its server with (not started);
    asserts the command took them (exit status 0)."""
    seen = []
    monkeypatch.setattr(run, lambda options, ready: seen.append(options) or 0)
    result = CliRunner().invoke(main, command + ["--data-dir", str(tmp_path), *args]
                                + (["--console-listen", "off"] if command == ["serve"] else []))
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize("command, run", [(["serve"], "plinth.server.serve"),
                                          (["router"], "plinth.server.run_router")])
def test_a_listen_address_without_tcp_is_taken_as_tcp_as_the_broker_option_takes_it(
        monkeypatch, tmp_path, command, run):
    options = options_seen(monkeypatch, tmp_path, command, run, ["--listen", "127.0.0.1:7455"])
    assert options.listen == "tcp://127.0.0.1:7455"


def test_a_listen_address_on_every_interface_or_a_named_host_is_taken(no_server, tmp_path):
    for listen in ("tcp://*:7400", "tcp://localhost:65535", "tcp://[::1]:1"):
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), "--listen",
                                           listen])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command, run", [(["serve"], "plinth.server.serve"),
                                          (["router"], "plinth.server.run_router")])
def test_off_turns_the_kafka_listener_off_as_it_does_the_console(
        monkeypatch, tmp_path, command, run):
    # When a listener is given as "off", as a templated command line writes the default
    # Then it is off, not refused as an address
    options = options_seen(monkeypatch, tmp_path, command, run, ["--kafka-listen", "off"])
    assert options.kafka_listen is None
    assert getattr(options, "console_listen", None) is None


@pytest.mark.parametrize("args, option, why", [
    (["consume", "t", "--partition", "-1"], "--partition", "-1 is not in the range 0<=x<=4095"),
    (["produce", "t", "--partition", "4096"], "--partition", "4096 is not in the range"),
    (["topic", "delete-records", "t", "--partition", "-1", "--before-offset", "1"],
     "--partition", "-1 is not in the range"),
    (["topic", "delete-records", "t", "--partition", "0", "--before-offset",
      "99999999999999999999"], "--before-offset", "99999999999999999999 is not in the range"),
    (["topic", "delete-records", "t", "--partition", "0", "--before-offset", "-2"],
     "--before-offset", "-2 is not in the range -1<=x<=9223372036854775807"),
    (["group", "reset", "g", "--topic", "t", "--to-offset", "99999999999999999999"],
     "--to-offset", "99999999999999999999 is not in the range 0<=x<=9223372036854775807"),
    (["produce", "t", "--key-separator", ""], "--key-separator", "must not be empty"),
    (["produce", "t", "--linger-ms", "-5"], "--linger-ms",
     "-5.0 is not in the range 0<=x<=2143883647"),
    # beyond the Producer's bound (less the longest request timeout: the delivery timeout
    # is their sum), the Producer refused it with a traceback
    (["produce", "t", "--linger-ms", "1e12"], "--linger-ms",
     "1000000000000.0 is not in the range 0<=x<=2143883647"),
    (["bench", "produce", "--linger-ms", "1e12"], "--linger-ms",
     "1000000000000.0 is not in the range 0<=x<=2143883647"),
    (["consume", "t", "--timeout-ms", "10000000000000"], "--timeout-ms",
     "10000000000000 is not in the range 0<=x<=2147483647"),
    (["bench", "produce", "--partitions", "4097"], "--partitions",
     "4097 is not in the range 1<=x<=4096"),
    (["topic", "elect-leaders", "t", "--partition", "4096"], "--partition",
     "4096 is not in the range 0<=x<=4095"),
    # 0 was taken, silently, as the default
    (["serve", "--offsets-replication-factor", "0"], "--offsets-replication-factor",
     "0 is not in the range 1<=x<=5"),
    # nan passed click's range (every comparison with nan is false), then the Producer
    # refused it with a traceback
    (["produce", "t", "--linger-ms", "nan"], "--linger-ms", "'nan' is not a finite number"),
    (["produce", "t", "--linger-ms", "inf"], "--linger-ms",
     "inf is not in the range 0<=x<=2143883647"),
    (["bench", "produce", "--duration-s", "inf"], "--duration-s", "'inf' is not a finite number"),
    (["bench", "produce", "--rate", "nan"], "--rate", "'nan' is not a finite number"),
    (["serve", "--leader-imbalance-check-interval-s", "nan"],
     "--leader-imbalance-check-interval-s", "'nan' is not a finite number"),
    # consume (defect 8): 0 printed one record, -1 waited for ever, a negative offset
    # read from the end without a word
    (["consume", "t", "--timeout-ms", "500", "--max-messages", "0"], "--max-messages",
     "0 is not in the range x>=1"),
    (["consume", "t", "--timeout-ms", "500", "--max-messages", "-1"], "--max-messages",
     "-1 is not in the range x>=1"),
    (["consume", "t", "--timeout-ms", "-1"], "--timeout-ms",
     "-1 is not in the range 0<=x<=2147483647"),
    (["consume", "t", "--timeout-ms", "500", "--partition", "0", "--offset", "-1"], "--offset",
     "-1 is not in the range 0<=x<=9223372036854775807"),
    (["consume", "t", "--timeout-ms", "500", "--partition", "0", "--offset", "-5"], "--offset",
     "-5 is not in the range"),
    # lists (defect 9): a negative limit printed nothing, 0 the whole list
    (["topic", "list", "--limit", "-3"], "--limit", "-3 is not in the range 1<=x<=200"),
    (["topic", "list", "--limit", "0"], "--limit", "0 is not in the range 1<=x<=200"),
    (["topic", "list", "--limit", "201"], "--limit", "201 is not in the range 1<=x<=200"),
    (["group", "list", "--limit", "-1"], "--limit", "-1 is not in the range 1<=x<=200"),
    (["group", "list", "--limit", "0"], "--limit", "0 is not in the range 1<=x<=200"),
])
@pytest.mark.timeout(60)   # a consume not refused waits for records from nobody
def test_a_number_or_separator_out_of_range_is_refused_naming_the_option_and_the_range(
        nobody, args, option, why):
    shown = refused(nobody + args, stdin="k:v\n")
    assert f"Invalid value for '{option}'" in shown and why in shown


@pytest.mark.parametrize("topic_id", [
    "ABC", "0123456789abcdef0123456789abcdeg", "ASNFZ4mrze8BI0VniavN7w==",   # Kafka's base64
])
def test_a_malformed_topic_id_is_refused_naming_the_option_not_with_a_traceback(
        nobody, topic_id):
    shown = refused(nobody + ["topic", "delete", "t", "--topic-id", topic_id])
    assert (f"Invalid value for '--topic-id': {topic_id!r} is not a topic id: 32 hex digits"
            in shown)


@pytest.mark.parametrize("kind", ["an existing file", "an impossible path"])
def test_a_data_dir_that_cannot_be_made_is_one_error_line_naming_the_option(tmp_path, kind):
    # Given a data dir that is a file, or under /proc (where nothing can be made)
    data_dir = tmp_path / "file" if kind == "an existing file" else "/proc/plinth-nope"
    if kind == "an existing file":
        data_dir.write_text("")
    # When plinth serve is started on it (the real one: it fails before Ray would start)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir),
                                       "--console-listen", "off"])
    # Then it exits 1 with one line naming the option, the path and the system's reason
    assert result.exit_code == 1, result.output
    why = (f"{data_dir} is a file, not a directory" if kind == "an existing file"
           else "No such file or directory")
    assert result.stderr == f"error: InvalidConfigError: --data-dir {data_dir}: {why}\n"


def test_a_users_file_in_a_missing_directory_is_one_error_line_naming_it(tmp_path):
    users_file = tmp_path / "nodir" / "users.txt"
    result = CliRunner().invoke(main, ["kafka-user", "add", str(users_file), "bob",
                                       "--password-stdin"], input="pw\n")
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"error: InvalidConfigError: SASL users file {users_file}: its "
                             f"directory {users_file.parent} does not exist; create it first\n")
    assert not users_file.parent.exists()


def test_a_serve_refused_before_it_starts_leaves_the_processs_ray_alone(ray_cluster, tmp_path):
    # Given this process's Ray (the test session's), and a data dir that is a file
    import ray

    data_dir = tmp_path / "file"
    data_dir.write_text("")
    # When plinth serve is refused in this process, before it started anything
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data_dir), "--ray-address",
                                       ray_cluster, "--console-listen", "off"])
    assert result.exit_code == 1, result.output
    # Then it stopped nothing it did not start: Ray still runs (a stop would shut it down)
    assert ray.is_initialized()


@pytest.mark.parametrize("command", ["add", "remove"])
@pytest.mark.parametrize("count", ["-1", "0"])
def test_a_shard_count_below_one_is_refused_naming_the_range_not_as_an_unknown_option(
        nobody, command, count):
    shown = refused(nobody + ["shards", command, count])
    assert f"Invalid value for 'COUNT': {count} is not in the range 1<=x<=256" in shown


@pytest.mark.parametrize("command", [["console-auth", "user", "dave"],
                                     ["kafka-user", "add", "users.txt", "dave"]])
def test_a_password_prompt_without_a_terminal_is_one_line_naming_the_stdin_option(
        monkeypatch, tmp_path, command):
    # Given no terminal to prompt at (stdin from /dev/null, no controlling terminal)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("plinth.cli._has_terminal", lambda: False, raising=False)
    # When a password is asked for / Then one line says why and what to pass instead,
    # with no getpass warning and no "Aborted!"
    result = CliRunner().invoke(main, command, input="")
    assert result.exit_code == 1, result.output
    assert result.stderr == ("error: a password prompt needs a terminal, and there is none; "
                             "pass --password-stdin to read the password from stdin's "
                             "first line\n")
    assert not (tmp_path / "users.txt").exists()


@pytest.mark.parametrize("args", [
    ["topic", "list", "--broker", "tcp://127.0.0.1:99999"],
    ["topic", "list", "--broker=tcp://127.0.0.1:99999"],
    ["--broker", "tcp://127.0.0.1:7400", "topic", "list", "--broker", "tcp://127.0.0.1:99999"],
])
def test_the_broker_option_after_the_command_is_plinths_own_and_the_last_one_given_counts(args):
    # (a port out of range: refused naming the option before anything connects)
    shown = refused(args)
    assert "Invalid value for '--broker'" in shown and "has port 99999" in shown


def test_the_request_timeout_after_the_command_bounds_the_command(nobody):
    # Given a broker nobody listens at, and the timeout given after the command
    result = CliRunner().invoke(main, ["topic", "list", *nobody])
    # Then the command gives up after it, naming the broker, as when given before
    assert result.exit_code == 1, result.output
    assert "error:" in result.stderr and "500" in result.stderr


def test_an_option_after_a_double_dash_stays_where_it_is():
    from plinth.cli import global_options_first
    assert global_options_first(["produce", "t", "--", "--broker", "x"]) == \
        ["produce", "t", "--", "--broker", "x"]
    assert global_options_first(["console", "--broker", "x"]) == ["console", "--broker", "x"]
    assert global_options_first(["--broker", "a", "status", "--request-timeout-ms", "9"]) == \
        ["--broker", "a", "--request-timeout-ms", "9", "status"]
