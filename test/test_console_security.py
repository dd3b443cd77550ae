"""Who may reach the console: the token, the Host and Origin checks (no server here)."""
import pytest

from pixelvla_ros.console import security


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
])
def test_loopback_addresses(host, loopback):
    assert security.is_loopback(host) is loopback


def test_a_token_is_needed_beyond_loopback():
    assert security.access_token("127.0.0.1", "") is None
    assert security.access_token("127.0.0.1", "given") == "given"  # a token given is always required
    generated = {security.access_token("0.0.0.0", "") for _ in range(3)}
    assert len(generated) == 3 and all(len(t) >= 20 for t in generated)


def test_token_comparison_and_where_a_request_carries_it():
    assert security.token_matches("s3cret", "s3cret")
    assert not security.token_matches("s3cret", "s3cre") and not security.token_matches("s3cret", None)
    found = security.presented_token({"token": "q"}, {security.COOKIE: "c"}, {"Authorization": "Bearer h"})
    assert found == ["q", "c", "h"]
    assert security.presented_token({}, {}, {"Authorization": "Basic x"}) == []


def test_without_a_token_only_loopback_host_names_are_served():
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1"):
        assert security.host_header_allowed(host, token_required=False), host
    for host in ("evil.example:8080", "192.168.1.5:8080", "", None):
        assert not security.host_header_allowed(host, token_required=False), host
    assert security.host_header_allowed("robot.lan:8080", token_required=True)


def test_websockets_only_from_the_consoles_own_page():
    assert security.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not security.origin_allowed("http://evil.example", "127.0.0.1:8080")
    assert not security.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080")
    assert security.origin_allowed(None, "127.0.0.1:8080")  # not a browser (no Origin header)
