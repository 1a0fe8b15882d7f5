#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one GET on each, reads the
answer, then holds them idle and touches READY_FILE until killed. For the memory figure
of benches/load/run."""
import asyncio
import resource
import sys


async def one(port, held):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        held.append(writer)
    except Exception:
        pass


async def main(port, n, ready):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []
    for start in range(0, n, 500):
        await asyncio.gather(*(one(port, held) for _ in range(start, min(n, start + 500))))
    with open(ready, "w") as f:
        f.write(str(len(held)))
    if len(held) < n:
        print(f"only {len(held)} of {n} connections opened", file=sys.stderr)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
