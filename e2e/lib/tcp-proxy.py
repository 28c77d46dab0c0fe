#!/usr/bin/env python3
"""A tiny TCP load balancer on 127.0.0.1 — the e2e suite's stand-in for the webhook Service.

    tcp-proxy.py LISTEN_PORT BACKEND_PORT [BACKEND_PORT...]

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
            port = backends[(start + i) % len(backends)]
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            except (OSError, asyncio.TimeoutError):
                continue
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
            return
        client_w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print(f"tcp-proxy 127.0.0.1:{listen} -> {backends}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), [int(p) for p in sys.argv[2:]]))
