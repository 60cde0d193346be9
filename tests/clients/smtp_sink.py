#!/usr/bin/env python3
"""A tiny SMTP sink for tests: accepts every message and stores it, delivers nothing.

    smtp_sink.py --dir MAILDIR [--host 127.0.0.1] [--port 0] [--port-file FILE]

Speaks just enough SMTP for a real client (sesame's lettre transport): a 220 greeting,
EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. STARTTLS and AUTH are not offered. Each
message's raw DATA (dot-stuffing undone, CRLF line ends kept) is written to
MAILDIR/NNNNNN.eml, atomically (a temporary name, then a rename), before the final 250
is sent, so a client that got its 250 can read the file at once. With --port 0 the OS
picks the port; it is written to --port-file (atomically) and printed on stdout.
Only the standard library is used. Stops on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import itertools
import os
import signal
import sys

MAX_MESSAGE = 10 * 1024 * 1024


class Sink:
    def __init__(self, maildir: str) -> None:
        self.maildir = maildir
        self.counter = itertools.count(1)
        self.open: dict[asyncio.Task, asyncio.StreamWriter] = {}

    def store(self, data: bytes) -> str:
        n = next(self.counter)
        final = os.path.join(self.maildir, f"{n:06d}.eml")
        tmp = os.path.join(self.maildir, f".{n:06d}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
        return final

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode("ascii") + b"\r\n")
            await writer.drain()

        task = asyncio.current_task()
        self.open[task] = writer
        try:
            await reply("220 127.0.0.1 ESMTP sesame-test-sink")
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    # Multi-line 250; no STARTTLS, no AUTH.
                    await reply("250-127.0.0.1 greets you")
                    await reply("250-8BITMIME")
                    await reply("250-SMTPUTF8")
                    await reply(f"250 SIZE {MAX_MESSAGE}")
                elif verb == "HELO":
                    await reply("250 127.0.0.1")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    await reply("250 OK")
                elif verb == "DATA":
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    lines = []
                    size = 0
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return  # the client went away mid-message
                        if chunk in (b".\r\n", b".\n"):
                            break
                        if chunk.startswith(b"."):
                            chunk = chunk[1:]  # undo dot-stuffing (RFC 5321 4.5.2)
                        size += len(chunk)
                        if size > MAX_MESSAGE:
                            await reply("552 Message too large")
                            return
                        lines.append(chunk)
                    path = self.store(b"".join(lines))
                    await reply(f"250 OK stored as {os.path.basename(path)}")
                elif verb == "QUIT":
                    await reply("221 Bye")
                    break
                else:
                    await reply("502 Command not implemented")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open.pop(task, None)
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:
                pass


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder to store messages in (created if missing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    sink = Sink(args.dir)
    server = await asyncio.start_server(sink.handle, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"smtp sink listening on {args.host}:{port}, storing in {args.dir}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        server.close()
        # Close the connections a client keeps open (lettre pools them), so that each
        # handler ends by itself instead of being cancelled at loop shutdown.
        for w in list(sink.open.values()):
            w.close()
        if sink.open:
            await asyncio.wait(list(sink.open), timeout=2)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
