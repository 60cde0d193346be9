"""Schemathesis hooks for scripts/fuzz.sh.

`positive_data_acceptance` (ST202) expects every schema-valid request to be
accepted. A few of sesame's answers are documented business refusals of
schema-valid values that no schema can express, and this check, which
replaces the built-in one, lets exactly those through (the status must be 400
and the error body must name the refusal); every other rejection fails as
with the built-in check:

- 400 `invalid_redirect`: `redirectTo` is an absolute http(s) URL, but its
  origin is not on `REDIRECT_ALLOW_LIST` (a setting, empty by default).
- 400 `invalid_request`, "invalid parameter `cursor`: not a cursor ...": the
  admin lists' `cursor` is opaque; only a `nextCursor` the server issued names
  a position.
- 400 `invalid_request` from `GET /admin/stats`: `since` and `bucket` are
  durations by the schema, but their range and their ratio (at most 1 000
  buckets) are limits of the operation, listed in its description.

`negative_data_rejection` (ST201) expects every schema-violating request to be
refused. The address fields declare `format: email` for generated clients, but
their rule is the pattern and the lengths (validators disagree on the format's
edges, and the server trims whitespace around an address): the replacement
lets through a 2xx to a request whose only broken part is that format, and
fails on everything else as the built-in check does.

With FUZZ_SIGN_IN_URL set (the public document's run), the bearer token is a
real sign-in (of a new address each time), made again whenever an answer is 401: fuzzed operations such as
`logout_all` and `delete_session` end the session, and a fixed token would
leave every later bearer operation at 401. The code is read from the server's
log (FUZZ_SERVER_LOG), where the console transport prints each message.
"""

import json
import os
import re
import time
import urllib.error
import urllib.request

import schemathesis
from schemathesis.specs.openapi.checks import negative_data_rejection as builtin_negative
from schemathesis.specs.openapi.checks import positive_data_acceptance as builtin

STATS_LIMITS = (
    "invalid parameter `since`: from ",
    "invalid parameter `bucket`: from ",
    "too many buckets:",
)


def _business_refusal(response, case) -> bool:
    if response.status_code != 400:
        return False
    try:
        body = json.loads(response.text)
    except ValueError:
        return False
    code, error = body.get("code"), str(body.get("error", ""))
    if code == "invalid_redirect":
        return True
    if code != "invalid_request":
        return False
    if error.startswith("invalid parameter `cursor`: not a cursor"):
        return True
    return case.operation.path == "/admin/stats" and error.startswith(STATS_LIMITS)


@schemathesis.check
def positive_data_acceptance_but_business_refusals(ctx, response, case):
    if _business_refusal(response, case):
        return None
    return builtin(ctx, response, case)


def _only_email_format_broken(case) -> bool:
    phase = getattr(getattr(case, "meta", None), "phase", None)
    description = getattr(getattr(phase, "data", None), "description", None) or ""
    return description.endswith("Value not matching the 'email' format")


@schemathesis.check
def negative_data_rejection_but_email_format(ctx, response, case):
    # `format: email` annotates the address fields; their pattern and lengths
    # are the rule the server enforces (docs/API.md). A value generated to break
    # only the format still fits the pattern (e.g. whitespace around it, which
    # the server trims, or a doubled dot), and the server may accept it.
    if _only_email_format_broken(case) and response.status_code < 300:
        return None
    return builtin_negative(ctx, response, case)


# Each sign-in is a new address: the fuzzer reuses addresses it saw in answers
# (`/auth/me`) with random codes, which spends an address's wrong tries.
_sign_ins = iter(range(1, 1_000_000))


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"signing in: {url} answered {e.code}: {e.read()[:300]!r}") from e


def _codes(log: str, email: str) -> list[str]:
    with open(log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    pattern = r"To: " + re.escape(email) + r"\nSubject: [^\n]*sign-in code: ([0-9]+)"
    return re.findall(pattern, text)


def sign_in(base: str, log: str) -> str:
    """A fresh access token for a new address, signed in as a person would."""
    email = f"fuzz-{next(_sign_ins)}@example.com"
    _post(f"{base}/auth/send-code", {"email": email})
    for _ in range(100):
        codes = _codes(log, email)
        if codes:
            return _post(f"{base}/auth/verify-code", {"email": email, "code": codes[-1]})["token"]
        time.sleep(0.05)
    raise RuntimeError("no sign-in code in the server log")


if os.environ.get("FUZZ_SIGN_IN_URL"):

    @schemathesis.auth(refresh_interval=3600)
    class SignedIn:
        def get(self, case, ctx):
            return sign_in(os.environ["FUZZ_SIGN_IN_URL"], os.environ["FUZZ_SERVER_LOG"])

        def set(self, case, data, ctx):
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"
