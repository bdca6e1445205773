"""plinth/loopback.py: which hosts count as this machine's loopback."""

import pytest

from plinth.loopback import is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "localhost",
                                  "::1", "[::1]", " 127.0.0.1 "])
def test_loopback_addresses_and_localhost_are_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "*", "", "::", "[::]", "10.0.0.5", "192.168.1.1",
                                  "example.com", "localhost.example.com", "128.0.0.1", "::2"])
def test_wildcards_other_addresses_and_names_are_not_loopback(host):
    assert not is_loopback(host)
