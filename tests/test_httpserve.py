"""The small HTTP server under the status page and the control socket, over real sockets:
what a browser, curl, Prometheus or a confused client sends, and what it gets back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from agent.httpserve import HttpError, HttpServer, Request, Response


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
