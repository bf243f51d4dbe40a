"""The deploy switch: owns a project's leased port and forwards each connection to the live release's own port.

Usage: python3 switch_proxy.py PORT UPSTREAM_FILE

deploy.yml's ``blue_green`` strategy starts each release on a port of its own (127.0.0.1, chosen on the target),
proves it there, and only then writes that port into UPSTREAM_FILE (a temporary file renamed over it, so a reader
sees the old port or the new one, never half of either). This process listens on PORT, reads UPSTREAM_FILE for every
new connection and copies bytes both ways between the client and 127.0.0.1:<upstream>: the switch of traffic is
the rename, connections already open stay on the release they started with until they close, and the previous
release is stopped after a drain delay (deploy.yml). It works at the TCP level, so it carries any protocol the
service speaks on its port (HTTP/1.1 keep-alive, WebSocket, server-sent events) without parsing it.

Why a script of its own rather than nginx or HAProxy: the switch must run on every target with nothing installed
but the python3 deploy.yml already needs, as the unprivileged service user, one per project, and be proven the same
way the service is (its pid is its session, see files/port_owner.py); a TCP splice in asyncio (the standard
library's streams, https://docs.python.org/3/library/asyncio-stream.html) is all it takes.

A connection that arrives while UPSTREAM_FILE is missing or names a port nothing listens on is closed at once (the
client sees a reset, never another service's answer). Errors go to stderr (the project's service log), one line each.
Exits 2 when PORT cannot be listened on (another process holds it), naming the reason.
"""

from __future__ import annotations

import asyncio
import os
import sys

CHUNK = 64 * 1024
"""Bytes read per copy step: large enough that bulk transfers take few loop turns."""


def upstream_port(path: str) -> int | None:
    """The port UPSTREAM_FILE names now, or None when it is missing or holds something else."""
    try:
        with open(path) as fh:
            port = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until end of stream, then half-close ``writer`` (or close it when it cannot)."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, OSError):
        writer.close()


def log(line: str) -> None:
    """One line on stderr (the service log), prefixed so it reads apart from the service's own lines."""
    print(f"[switch] {line}", file=sys.stderr, flush=True)


def handler(upstream_file: str):  # noqa: ANN201 - the callback type asyncio.start_server takes
    """The per-connection callback: connect to the live release and splice the two streams."""

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        port = upstream_port(upstream_file)
        if port is None:
            log(f"no release to forward to ({upstream_file} is missing or not a port)")
            client_writer.close()
            return
        try:
            release_reader, release_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            log(f"release on port {port} refused the connection: {os.strerror(exc.errno or 0)}")
            client_writer.close()
            return
        try:
            await asyncio.gather(pipe(client_reader, release_writer), pipe(release_reader, client_writer))
        finally:
            for writer in (release_writer, client_writer):
                writer.close()

    return handle


async def serve(port: int, upstream_file: str) -> int:
    """Listen on ``port`` (every IPv4 interface) until terminated; 2 when the port cannot be listened on."""
    try:
        server = await asyncio.start_server(handler(upstream_file), "0.0.0.0", port, backlog=512)
    except OSError as exc:
        log(f"cannot listen on port {port}: {os.strerror(exc.errno or 0)}")
        return 2
    log(f"listening on port {port}, forwarding to the port in {upstream_file}")
    async with server:
        await server.serve_forever()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        print("usage: switch_proxy.py PORT UPSTREAM_FILE", file=sys.stderr)
        sys.exit(64)
    sys.exit(asyncio.run(serve(int(sys.argv[1]), sys.argv[2])))
