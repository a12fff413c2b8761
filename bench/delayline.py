"""A userspace delay line: a TCP relay on loopback that adds a network round trip, for benchmarks.

    python bench/delayline.py --port 18500 --to-port 18443 --rtt-ms 40 --control-port 18501

The kernel here has no netem, so the round trip is emulated in user space: every byte is passed
on RTT/2 after it was read, in each direction, in order; and a new connection's first bytes
towards the upstream wait one more RTT, which is what the TCP handshake of a real connection
costs before a client can send anything (the relay's own connects are on loopback and take no
time). TLS passes through untouched, end to end, so a TLS handshake costs its real round trips
(TLS 1.3: one). A connect to the control port reads the number of connections relayed so far
("<n>\\n"): with a TLS upstream behind it, the number of upstream TLS handshakes.

Only 127.0.0.1 is used; the relay exits by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

HOST = "127.0.0.1"


class Line:
    def __init__(self, to_port: int, rtt: float) -> None:
        self.to_port = to_port
        self.half = rtt / 2
        self.rtt = rtt
        self.connections = 0

    async def serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.to_port)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, up_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Towards the upstream nothing arrives before the emulated TCP handshake is over.
        await asyncio.gather(
            self.pump(client_reader, up_writer, not_before=opened + self.rtt + self.half),
            self.pump(up_reader, client_writer, not_before=0.0),
        )

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, not_before: float) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        try:
            while data := await reader.read(1 << 16):
                due = max(loop.time() + self.half, not_before, last + 1e-6)  # strictly increasing: in order
                last = due
                loop.call_at(due, _write, writer, data)
        except (ConnectionError, OSError):
            pass
        due = max(loop.time() + self.half, last + 1e-6)
        loop.call_at(due, _finish, writer)


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


def _finish(writer: asyncio.StreamWriter) -> None:
    if writer.is_closing():
        return
    try:
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
    except (ConnectionError, OSError):
        writer.close()


async def main(args: argparse.Namespace) -> None:
    line = Line(args.to_port, args.rtt_ms / 1000)
    server = await asyncio.start_server(line.serve, HOST, args.port, backlog=1024)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{line.connections}\n".encode())
        await writer.drain()
        writer.close()

    control_server = await asyncio.start_server(control, HOST, args.control_port)
    print(f"delay line {HOST}:{args.port} → {HOST}:{args.to_port}, RTT {args.rtt_ms} ms", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        print("delay line: --max-seconds reached, exiting", file=sys.stderr)
    server.close()
    control_server.close()


def connections(control_port: int) -> int:
    """The number of connections a delay line has relayed (from another process)."""
    import socket

    with socket.create_connection((HOST, control_port), timeout=5) as s:
        return int(s.makefile().readline())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    asyncio.run(main(parser.parse_args()))
