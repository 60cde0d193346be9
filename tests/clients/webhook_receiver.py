"""A webhook receiver for the client suite: every POST is verified with the `standardwebhooks`
package (the reference Python library of the Standard Webhooks specification), as a team's app
would verify sesame's webhooks, and its outcome is appended to a JSON Lines file.

    .venv/bin/python webhook_receiver.py serve --secret whsec_... --port-file F --out FILE
    .venv/bin/python webhook_receiver.py check --out FILE EMAIL...

`check` waits (up to 15 s) until a verified `user.created` arrived for every EMAIL, and fails
if any request did not verify.
"""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def serve(secret: str, port_file: Path, out: Path) -> None:
    hook = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k: v for k, v in self.headers.items()}
            try:
                event = hook.verify(body, headers)
                record = {
                    "verified": True,
                    "id": headers.get("webhook-id") or headers.get("Webhook-Id"),
                    "type": event["type"],
                    "email": event["data"].get("email"),
                }
                status = 204
            except (WebhookVerificationError, ValueError, KeyError) as e:
                record = {"verified": False, "error": repr(e)}
                status = 400
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


def check(out: Path, emails: list[str]) -> int:
    deadline = time.monotonic() + 15
    while True:
        lines = out.read_text().splitlines() if out.exists() else []
        records = [json.loads(line) for line in lines]
        forged = [r for r in records if not r["verified"]]
        if forged:
            print(f"webhooks: {len(forged)} request(s) did not verify: {forged}", file=sys.stderr)
            return 1
        got = {r["email"] for r in records if r["type"] == "user.created"}
        if all(e in got for e in emails):
            print(f"webhooks: {len(records)} verified with standardwebhooks, user.created for {', '.join(emails)}")
            return 0
        if time.monotonic() > deadline:
            print(f"webhooks: no verified user.created for {sorted(set(emails) - got)} in {records}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--secret", required=True)
    s.add_argument("--port-file", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("emails", nargs="+")
    args = p.parse_args()
    if args.command == "serve":
        serve(args.secret, args.port_file, args.out)
        return 0
    return check(args.out, args.emails)


if __name__ == "__main__":
    sys.exit(main())
