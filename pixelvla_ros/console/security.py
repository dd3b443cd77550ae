"""Who may reach the console: loopback by default; any other address only with the access token.

- A console bound to a loopback address serves requests whose Host header names loopback (a web page
  elsewhere that rebinds its own host name to 127.0.0.1 cannot reach it) and needs no token unless one is set.
- A console bound to any other address (0.0.0.0, a LAN address) needs a token: the `token` parameter, or one
  generated at start and printed with the address. A request carries it as `?token=` (the page's address),
  the cookie the console sets when a page is opened with it, or an `Authorization: Bearer` header.
- A WebSocket handshake from a browser must come from the console's own page (its Origin names the Host):
  browsers let any web page open a WebSocket to any address, and a page elsewhere must not press buttons here.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

COOKIE = "pixelvla_console_token"
#: Bind addresses that listen on every interface.
EVERY_ADDRESS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether binding `host` listens on loopback only ("" and 0.0.0.0 / :: mean every address: no)."""
    host = host.strip().strip("[]")
    if host in EVERY_ADDRESS:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: loopback if every address it resolves to is
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def access_token(host: str, token: str) -> str | None:
    """The token requests must carry: the one given, a new one where `host` is not loopback, else None."""
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(18)


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison (the time taken says nothing about how much of a guess was right)."""
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def presented_token(query: dict, cookies: dict, headers: dict) -> list[str]:
    """The tokens a request carries, in the order they are tried."""
    found = [query.get("token"), cookies.get(COOKIE)]
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        found.append(authorization[len("Bearer "):])
    return [t for t in found if t]


def host_header_allowed(host_header: str | None, token_required: bool) -> bool:
    """Without a token, only requests addressed to a loopback name (DNS rebinding gets a foreign name here)."""
    if token_required:
        return True  # any name or address of this machine; the token decides
    if not host_header:
        return False
    hostname = urlsplit(f"//{host_header}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """A browser's WebSocket handshake must come from a page of this console (no Origin: not a browser)."""
    if origin is None:
        return True
    return bool(host_header) and urlsplit(origin).netloc.lower() == host_header.lower()
