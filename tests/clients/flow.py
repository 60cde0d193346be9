"""The sign-in flow through a client generated from openapi.yaml by openapi-python-client,
the way a Python team would use it (generated/python/sesame_client, made by run.sh).

    SESAME_URL=http://127.0.0.1:PORT MAILDIR=/path/to/sink EMAIL=someone@example.com \\
        .venv/bin/python flow.py

MAILDIR is where tests/clients/smtp_sink.py stores each message's raw DATA (NNNNNN.eml).
Every outcome is asserted with explicit checks (not `assert`, which `python -O` drops).
"""

import email
import email.policy
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated" / "python"))

from sesame_client import AuthenticatedClient, Client  # noqa: E402
from sesame_client.api.auth import logout, refresh, send_code, verify_code  # noqa: E402
from sesame_client.api.sessions import get_me  # noqa: E402
from sesame_client.models import (  # noqa: E402
    ErrorBody,
    LogoutRequest,
    MeResponse,
    RefreshRequest,
    SendCodeRequest,
    SendResponse,
    SuccessResponse,
    TokenPair,
    VerifyCodeRequest,
)

BASE_URL = os.environ["SESAME_URL"]
MAILDIR = Path(os.environ["MAILDIR"])
EMAIL = os.environ["EMAIL"]


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def last_message() -> str:
    files = sorted(p.name for p in MAILDIR.glob("*.eml"))
    return files[-1] if files else ""


def read_code(to: str, after: str) -> tuple[str, str]:
    """The code of the newest message to `to` stored after `after`, from its Subject."""
    deadline = time.monotonic() + 10
    while True:
        for path in sorted(MAILDIR.glob("*.eml"), reverse=True):
            if path.name <= after:
                continue
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if to.lower() not in str(msg.get("To", "")).lower():
                continue
            subject = str(msg.get("Subject", ""))
            m = re.fullmatch(r"sesame: Your sign-in code: (\d{6})", subject)
            check(m is not None, f"message {path.name} to {to} has an unexpected Subject: {subject!r}")
            return m.group(1), path.name
        if time.monotonic() > deadline:
            raise Failure(f"no message to {to} arrived in {MAILDIR} within 10 s")
        time.sleep(0.1)


def check_pair(pair: object, what: str) -> TokenPair:
    check(isinstance(pair, TokenPair), f"{what}: expected a TokenPair, got {pair!r}")
    assert isinstance(pair, TokenPair)
    check(pair.success is True, f"{what}: success")
    check(len(pair.token) > 0, f"{what}: empty access token")
    check(pair.token.count(".") == 2, f"{what}: the access token is not a JWT")
    check(len(pair.refresh_token) > 0, f"{what}: empty refresh token")
    check(pair.token_type == "Bearer", f"{what}: tokenType {pair.token_type!r}")
    check(isinstance(pair.expires_in, int) and pair.expires_in > 0, f"{what}: expiresIn {pair.expires_in!r}")
    check(pair.user.email == EMAIL, f"{what}: user.email {pair.user.email!r}")
    return pair


def check_error(resp, status: int, code: str, what: str) -> None:
    check(resp.status_code == status, f"{what}: status {resp.status_code} (wanted {status}): {resp.content!r}")
    body = resp.parsed
    check(isinstance(body, ErrorBody), f"{what}: expected an ErrorBody, got {body!r}")
    check(body.success is False, f"{what}: success")
    check(body.code == code, f"{what}: code {body.code!r} (wanted {code!r})")
    check(len(body.error) > 0, f"{what}: empty error message")


def main() -> None:
    client = Client(base_url=BASE_URL, raise_on_unexpected_status=True, timeout=10.0)

    # 1. send code
    before = last_message()
    r = send_code.sync_detailed(client=client, body=SendCodeRequest(email=EMAIL))
    check(r.status_code == 200, f"send-code: {r.status_code} {r.content!r}")
    check(isinstance(r.parsed, SendResponse) and r.parsed.success is True, f"send-code: {r.parsed!r}")

    # 2. read the code from the sink
    code, file = read_code(EMAIL, before)
    print(f"  send-code: 200, code {code} read from {file}")

    # 3. a wrong code is refused with the typed error body
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = verify_code.sync_detailed(client=client, body=VerifyCodeRequest(email=EMAIL, code=wrong))
    check_error(r, 401, "invalid_code", "verify-code (wrong code)")

    # 4. verify code
    r = verify_code.sync_detailed(client=client, body=VerifyCodeRequest(email=EMAIL, code=code))
    check(r.status_code == 200, f"verify-code: {r.status_code} {r.content!r}")
    pair = check_pair(r.parsed, "verify-code")
    user_id = pair.user.id
    print(f"  verify-code: 200, user {user_id}, expiresIn {pair.expires_in}")

    # 5. me, with the bearer token (AuthenticatedClient sends `Authorization: Bearer …`)
    authed = AuthenticatedClient(base_url=BASE_URL, token=pair.token, raise_on_unexpected_status=True, timeout=10.0)
    r = get_me.sync_detailed(client=authed)
    check(r.status_code == 200, f"me: {r.status_code} {r.content!r}")
    me = r.parsed
    check(isinstance(me, MeResponse) and me.success is True, f"me: {me!r}")
    check(me.user.id == user_id, f"me: user.id {me.user.id} != {user_id}")
    check(me.user.email == EMAIL, f"me: user.email {me.user.email!r}")
    check(me.user.created_at == pair.user.created_at, "me: user.createdAt")
    # ... and with a token that is not one
    bad = AuthenticatedClient(base_url=BASE_URL, token="not-a-jwt", raise_on_unexpected_status=True, timeout=10.0)
    r = get_me.sync_detailed(client=bad)
    check_error(r, 401, "invalid_token", "me with a bad token")
    check(r.headers.get("www-authenticate", "").startswith("Bearer"), "me with a bad token: WWW-Authenticate")
    print("  me: 200, same user; 401 with a bad token")

    # 6. refresh: a new pair, with a NEW refresh token
    old_refresh = pair.refresh_token
    r = refresh.sync_detailed(client=client, body=RefreshRequest(refresh_token=old_refresh))
    check(r.status_code == 200, f"refresh: {r.status_code} {r.content!r}")
    pair = check_pair(r.parsed, "refresh")
    check(pair.refresh_token != old_refresh, "refresh: the refresh token was not rotated")
    check(pair.user.id == user_id, "refresh: user.id")
    r = get_me.sync_detailed(client=AuthenticatedClient(base_url=BASE_URL, token=pair.token, timeout=10.0))
    check(r.status_code == 200 and isinstance(r.parsed, MeResponse) and r.parsed.user.id == user_id,
          f"me with the refreshed access token: {r.status_code} {r.content!r}")
    print("  refresh: 200, new refresh token; its access token works")

    # 7. logout
    r = logout.sync_detailed(client=client, body=LogoutRequest(refresh_token=pair.refresh_token))
    check(r.status_code == 200, f"logout: {r.status_code} {r.content!r}")
    check(isinstance(r.parsed, SuccessResponse) and r.parsed.success is True, f"logout: {r.parsed!r}")

    # 8. the logged-out refresh token no longer works
    r = refresh.sync_detailed(client=client, body=RefreshRequest(refresh_token=pair.refresh_token))
    check_error(r, 401, "invalid_refresh_token", "refresh after logout")
    print("  logout: 200; refresh with the logged-out token: 401 invalid_refresh_token")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as the client's
        print("python client: FAILED", file=sys.stderr)
        import traceback

        traceback.print_exception(e)
        sys.exit(1)
    print("python client: ok")
