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
"""

import json

import schemathesis
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
