#!/usr/bin/env python3
"""A tiny TCP load balancer on 127.0.0.1 — the e2e suite's stand-in for the webhook Service.

    tcp-proxy.py LISTEN_PORT BACKEND [BACKEND...]

A BACKEND is PORT (on 127.0.0.1) or HOST:PORT with HOST in 127.0.0.0/8 (the node scenario's
host-network pods listen on their node's loopback address, 127.0.0.1 or 127.0.0.2).

The API server calls the ValidatingWebhookConfiguration's `clientConfig.url`
(https://127.0.0.1:LISTEN_PORT/...) and this forwards each connection, bytes only (TLS passes
through untouched), to the next backend operator replica that accepts a connection — as a
Service with two ready endpoints would. When a replica is killed, connections go to the other.
"""
import asyncio
import itertools
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main(listen, backends):
    rr = itertools.cycle(range(len(backends)))

    async def handle(client_r, client_w):
        start = next(rr)
        for i in range(len(backends)):
            host, port = backends[(start + i) % len(backends)]
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, asyncio.TimeoutError):
                continue
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
            return
        client_w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print(f"tcp-proxy 127.0.0.1:{listen} -> {backends}", flush=True)
    async with server:
        await server.serve_forever()


def backend(arg):
    host, _, port = arg.rpartition(":")
    host = host or "127.0.0.1"
    if not host.startswith("127."):
        sys.exit(f"tcp-proxy: backend {arg!r} is not on 127.0.0.0/8")
    return host, int(port)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), [backend(a) for a in sys.argv[2:]]))
