"""Peer name resolution through the operator's hosts file (clusters without cluster DNS)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web

from consortium_node.server import hosts
from consortium_node.server.hosts import HostsFile, parse_hosts
from tests.support.clock import FakeClock


def _write(path: Path, names: dict[str, str]) -> None:
    path.write_text(json.dumps({"names": names}))


# ---------------------------------------------------------------------------- parse_hosts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  \n", {}),
        ('{"names": {}}', {}),
        ('{"names": {"a.example": "10.0.0.1"}}', {"a.example": "10.0.0.1"}),
        ('{"names": {"A.Example.": "10.0.0.1"}}', {"a.example": "10.0.0.1"}),
        ('{"names": {"v6.example": "fd00::1"}}', {"v6.example": "fd00::1"}),
        ('{"names": {"lo6": "::1", "lo": "127.0.0.1"}}', {"lo6": "::1", "lo": "127.0.0.1"}),
        ('{"names": {"x": "1.2.3.4"}, "other": 1}', {"x": "1.2.3.4"}),
    ],
)
def test_parse_hosts_valid(text: str, expected: dict[str, str]) -> None:
    assert parse_hosts(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected"),
        ("null", "expected"),
        ('"names"', "expected"),
        ("{}", "expected"),
        ('{"names": ["a", "1.2.3.4"]}', "expected"),
        ('{"names": null}', "expected"),
        ('{"names": {"a": 5}}', "names.a: expected a string IP"),
        ('{"names": {"a": null}}', "names.a: expected a string IP"),
        ('{"names": {"a": "1.2.3.999"}}', "names.a: '1.2.3.999' is not an IP address"),
        ('{"names": {"a": "example.com"}}', "names.a: 'example.com' is not an IP address"),
        ('{"names": {"a": "1.2.3.4:80"}}', "is not an IP address"),
        ('{"names": {"a": "fd00:::1"}}', "is not an IP address"),
        ('{"names": {"a": ""}}', "is not an IP address"),
        ("{not json", "Expecting"),
    ],
)
def test_parse_hosts_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hosts(text)


# ---------------------------------------------------------------------------- HostsFile


@pytest.mark.parametrize(
    "query", ["demo-0.demo-nodes.ns.svc.cluster.local", "DEMO-0.Demo-Nodes.ns.svc.cluster.local."]
)
def test_lookup_folds_case_and_trailing_dot(tmp_path: Path, query: str) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"demo-0.demo-nodes.ns.svc.cluster.local": "10.0.0.1"})
    assert HostsFile(path, FakeClock()).lookup(query) == "10.0.0.1"


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert HostsFile(tmp_path / "absent.json", FakeClock()).lookup("a") is None


def test_unknown_name_is_none(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"a": "10.0.0.1"})
    assert HostsFile(path, FakeClock()).lookup("b") is None


def test_rereads_after_change_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"a": "10.0.0.1"})
    clock = FakeClock()
    table = HostsFile(path, clock)
    assert table.lookup("a") == "10.0.0.1"
    _write(path, {"a": "10.0.0.22"})  # a different size
    clock.now += 0.5
    assert table.lookup("a") == "10.0.0.1"  # throttled: not looked at yet
    clock.now += 0.5
    assert table.lookup("a") == "10.0.0.22"


def test_rereads_when_only_mtime_changes(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"a": "10.0.0.1"})
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    clock = FakeClock()
    table = HostsFile(path, clock)
    assert table.lookup("a") == "10.0.0.1"
    _write(path, {"a": "10.0.0.2"})  # same size
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # and same mtime: looks unchanged
    clock.now += 5
    assert table.lookup("a") == "10.0.0.1"
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    clock.now += 5
    assert table.lookup("a") == "10.0.0.2"


def test_file_removed_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"a": "10.0.0.1"})
    clock = FakeClock()
    table = HostsFile(path, clock)
    assert table.lookup("a") == "10.0.0.1"
    path.unlink()
    clock.now += 1
    assert table.lookup("a") is None
    _write(path, {"a": "10.0.0.1"})  # same content as before the removal
    clock.now += 1
    assert table.lookup("a") == "10.0.0.1"


def test_file_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    clock = FakeClock()
    table = HostsFile(path, clock)
    assert table.lookup("a") is None
    _write(path, {"a": "10.0.0.1"})
    clock.now += 1
    assert table.lookup("a") == "10.0.0.1"


def test_invalid_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"a": "10.0.0.1"})
    clock = FakeClock()
    table = HostsFile(path, clock)
    assert table.lookup("a") == "10.0.0.1"
    _write(path, {"a": "not-an-ip"})
    clock.now += 1
    with caplog.at_level(logging.WARNING, logger="consortium_node.hosts"):
        assert table.lookup("a") is None
    assert "ignoring peer hosts file" in caplog.text
    _write(path, {"a": "10.0.0.3"})
    clock.now += 1
    assert table.lookup("a") == "10.0.0.3"


# ---------------------------------------------------------------------------- install


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """A fake system resolver recording its calls; socket.getaddrinfo and hosts._installed are
    restored afterwards (monkeypatch undoes install's replacement as well)."""
    calls: list[tuple[Any, ...]] = []
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((host, port))
        if host in ("127.0.0.1", "10.9.8.7", "fd00::7"):
            return real(host, port, *args, **kwargs)  # numeric: no network
        raise socket.gaierror(socket.EAI_NONAME, "fake resolver: unknown name")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(hosts, "_installed", None)
    yield calls


def test_install_resolves_mapped_names(tmp_path: Path, resolver: list[tuple[Any, ...]]) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"some-name.example": "127.0.0.1"})
    hosts.install(path)
    infos = socket.getaddrinfo("some-name.example", 443, type=socket.SOCK_STREAM)
    assert {info[4][0] for info in infos} == {"127.0.0.1"}
    assert {info[4][1] for info in infos} == {443}
    assert resolver == [("127.0.0.1", 443)]


def test_install_falls_through_for_other_names(
    tmp_path: Path, resolver: list[tuple[Any, ...]]
) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"some-name.example": "127.0.0.1"})
    hosts.install(path)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("other.example", 443)
    assert resolver == [("other.example", 443)]


def test_install_passes_bytes_hosts_through(
    tmp_path: Path, resolver: list[tuple[Any, ...]]
) -> None:
    path = tmp_path / "hosts.json"
    _write(path, {"some-name.example": "127.0.0.1"})
    hosts.install(path)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(b"some-name.example", 443)
    assert resolver == [(b"some-name.example", 443)]


def test_install_twice_wraps_once_and_uses_the_latest_file(
    tmp_path: Path, resolver: list[tuple[Any, ...]]
) -> None:
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    _write(first, {"peer.example": "127.0.0.1"})
    _write(second, {"peer.example": "10.9.8.7"})
    returned = hosts.install(first)
    assert hosts._installed is returned
    wrapper = socket.getaddrinfo
    hosts.install(second)
    assert socket.getaddrinfo is wrapper
    infos = socket.getaddrinfo("peer.example", 8443, type=socket.SOCK_STREAM)
    assert {info[4][0] for info in infos} == {"10.9.8.7"}
    assert resolver == [("10.9.8.7", 8443)]


# ---------------------------------------------------------------------------- PeerResolver

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def _get_through_peer_resolver(url: str) -> tuple[int, str]:
    """GET ``url`` with the peer client's connector set-up; (status, body)."""

    async def peer(_request: web.Request) -> web.Response:
        return web.Response(text="peer")

    app = web.Application()
    app.router.add_get("/", peer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        connector = aiohttp.TCPConnector(resolver=hosts.PeerResolver())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url.format(port=port)) as response,
        ):
            return response.status, await response.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_peer_client_reaches_a_name_of_the_file_on_every_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """uvloop resolves in libuv, past the socket.getaddrinfo wrapper: the peer client's own
    resolver must still map the recorded name (this broke every pod-to-pod connection)."""
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
    monkeypatch.setattr(hosts, "_installed", None)
    path = tmp_path / "hosts.json"
    _write(path, {"node-1.peers.test": "127.0.0.1"})
    hosts.install(path)
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        got = runner.run(_get_through_peer_resolver("http://node-1.peers.test:{port}/"))
    assert got == (200, "peer")


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_peer_resolver_keeps_the_name_and_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
    monkeypatch.setattr(hosts, "_installed", None)
    path = tmp_path / "hosts.json"
    _write(path, {"node-1.peers.test": "10.9.8.7"})
    hosts.install(path)

    async def resolve() -> tuple[list[Any], list[Any]]:
        resolver = hosts.PeerResolver()
        try:
            mapped = await resolver.resolve("node-1.peers.test", 8443)
            other = await resolver.resolve("127.0.0.1", 8443)
        finally:
            await resolver.close()
        return mapped, other

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        mapped, other = runner.run(resolve())
    assert [(r["hostname"], r["host"], r["port"]) for r in mapped] == [
        ("node-1.peers.test", "10.9.8.7", 8443)
    ]
    assert [(r["hostname"], r["host"]) for r in other] == [("127.0.0.1", "127.0.0.1")]
