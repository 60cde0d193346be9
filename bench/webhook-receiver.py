#!/usr/bin/env python3
"""A webhook receiver for bench/webhooks.sh: answers 204 to every POST and appends one
JSON line per request to OUT: the arrival time (the receiver's clock, in ns since the
epoch, taken once the body is read), the payload's `type` and `timestamp` (the audit
event's time), and the `webhook-id` header. Loopback only.

    bench/webhook-receiver.py PORT OUT
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, out_path = int(sys.argv[1]), sys.argv[2]
out = open(out_path, "a", buffering=1)


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        arrived = time.time_ns()
        try:
            payload = json.loads(body)
            line = {"arrivedNs": arrived, "type": payload.get("type"),
                    "timestamp": payload.get("timestamp"), "id": self.headers.get("webhook-id")}
        except ValueError:
            line = {"arrivedNs": arrived, "type": None, "timestamp": None, "id": None}
        out.write(json.dumps(line) + "\n")
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), Hook).serve_forever()
