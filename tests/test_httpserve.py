"""The small HTTP server under the status page and the control socket, over real sockets:
what a browser, curl, Prometheus or a confused client sends, and what it gets back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from agent.httpserve import HttpError, HttpServer, Limits, Request, Response


async def _hello(request: Request) -> Response:
    return Response.text(f"hello {request.query.get('name', 'world')}\n")


async def _echo(request: Request) -> Response:
    return Response.json({"got": request.json(), "cookie": request.cookie("c")})


async def _broken(request: Request) -> Response:
    raise RuntimeError("a bug")


async def _refuse(request: Request) -> Response:
    raise HttpError(418, "no\n", headers=[("X-Why", "teapot")])


async def _stream(request: Request) -> Response:
    async def lines() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"{n}\n".encode()
            await asyncio.sleep(0)

    return Response(body=lines(), content_type="application/x-ndjson")


ROUTES = {("GET", "/"): _hello, ("POST", "/echo"): _echo, ("GET", "/broken"): _broken,
          ("GET", "/refuse"): _refuse, ("GET", "/stream"): _stream}


@pytest.fixture
async def served() -> AsyncIterator[str]:
    server = HttpServer(ROUTES)
    port = free_port()
    await server.start_tcp("127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    await server.close()


async def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_routes_methods_and_errors(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as http:
        assert (await http.get("/?name=plant")).text == "hello plant\n"
        echoed = await http.post("/echo", json={"a": 1}, headers={"Cookie": "c=xyz; d=1"})
        assert echoed.json() == {"got": {"a": 1}, "cookie": "xyz"}
        assert echoed.headers["content-type"].startswith("application/json")
        not_json = await http.post("/echo", content=b"{nope")
        assert not_json.status_code == 400
        assert "not JSON" in not_json.text
        assert (await http.get("/missing")).status_code == 404
        wrong = await http.delete("/echo")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        broken = await http.get("/broken")
        assert broken.status_code == 500
        assert "log" in broken.text
        refused = await http.get("/refuse")
        assert (refused.status_code, refused.headers["x-why"]) == (418, "teapot")
        head = await http.head("/")
        assert head.status_code == 200
        assert head.content == b""
        streamed = await http.get("/stream")
        assert streamed.headers.get("transfer-encoding") == "chunked"
        assert streamed.text == "0\n1\n2\n"
        # Everything above went over one kept-alive connection; it still works.
        assert (await http.get("/")).status_code == 200


async def test_garbage_gets_400_and_a_closed_connection(served: str) -> None:
    answer = await _raw(served, b"THIS IS NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_huge_body_is_refused_with_413(served: str) -> None:
    body = b"x" * (2 << 20)
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    answer = await _raw(served, head + body)
    assert answer.startswith(b"HTTP/1.1 413 ")


async def test_http10_client_gets_its_stream_until_close(served: str) -> None:
    answer = await _raw(served, b"GET /stream HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"0\n1\n2\n")


async def test_close_does_not_wait_for_idle_keepalive_peers(tmp_path: Path) -> None:
    server = HttpServer(ROUTES)
    path = str(tmp_path / "s.sock")
    await server.start_unix(path)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"hello world\n")).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(server.close(), 2)  # the peer keeps its connection open
    assert await asyncio.wait_for(reader.read(), 2) == b""  # and is hung up on
    writer.close()


# ---------------------------------------------------------------- what one peer may take

async def _limited(limits: Limits) -> tuple[HttpServer, str, int]:
    server = HttpServer(ROUTES, limits=limits, headers=[("X-Frame-Options", "DENY")])
    port = free_port()
    await server.start_tcp("127.0.0.1", port)
    return server, "127.0.0.1", port


async def test_connections_over_the_cap_are_closed_at_once_and_counted() -> None:
    server, host, port = await _limited(Limits(max_connections=8))
    held = [await asyncio.open_connection(host, port) for _ in range(8)]
    try:
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            answer = await asyncio.wait_for(reader.read(), 2)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # hung up on without a word, not served
        writer.close()
        assert server.refused == 1
        # One of the held connections leaves: a client gets through again.
        held[0][1].close()
        await asyncio.sleep(0.2)
        assert await _raw(f"http://{host}:{port}", b"GET / HTTP/1.0\r\n\r\n") != b""
    finally:
        for _, writer in held[1:]:
            writer.close()
        await server.close()


async def test_a_trickled_request_head_meets_a_total_deadline() -> None:
    """A byte every 0.3 s keeps an idle timer alive for ever; the request deadline is
    counted from the first byte."""
    server, host, port = await _limited(Limits(request_seconds=1.0, idle_seconds=60))
    reader, writer = await asyncio.open_connection(host, port)
    started = asyncio.get_running_loop().time()
    try:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)
            if reader.at_eof():
                break
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                    break
    except ConnectionError:
        pass
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 3, f"the trickling peer was held for {elapsed:.1f} s"
    writer.close()
    await server.close()


async def test_a_peer_that_never_reads_is_dropped_after_the_write_timeout() -> None:
    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0)
        return Response(body=chunks())

    server = HttpServer({("GET", "/"): endless}, limits=Limits(write_seconds=0.5))
    port = free_port()
    await server.start_tcp("127.0.0.1", port)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads a byte
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if not server._connections:
                break
        assert not server._connections, "the server still holds a peer that never reads"
    finally:
        sock.close()
        await server.close()


async def test_content_length_with_transfer_encoding_is_refused_and_closed(served: str) -> None:
    smuggled = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /refuse HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _raw(served, smuggled)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Length and Transfer-Encoding" in answer
    assert b"teapot" not in answer  # the smuggled second request was never served


async def test_headers_given_to_the_server_go_with_every_answer() -> None:
    server, host, port = await _limited(Limits())
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
            for path in ("/", "/missing", "/broken", "/refuse"):
                assert (await http.get(path)).headers["x-frame-options"] == "DENY", path
    finally:
        await server.close()
