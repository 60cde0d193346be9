"""The support flow through a client generated from openapi-admin.yaml (the admin API) by
openapi-python-client, the way a Python team would use it
(generated/python/sesame_admin_client, made by run.sh).

    ADMIN_URL=http://127.0.0.1:ADMIN_PORT ADMIN_TOKEN=... EMAIL=someone@example.com \\
        .venv/bin/python flow_admin.py

EMAIL must have a user (it signed in through flow.py). The flow: find the user by address,
list its sessions, disable, enable, end its sessions, delete; then the user is gone.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated" / "python"))

from sesame_admin_client import AuthenticatedClient  # noqa: E402
from sesame_admin_client.api.users import (  # noqa: E402
    delete_user,
    disable_user,
    enable_user,
    get_user,
    list_users,
    revoke_user_sessions,
)
from sesame_admin_client.models import (  # noqa: E402
    DeleteUserResponse,
    ErrorBody,
    RevokeSessionsResponse,
    UserDetailResponse,
    UserResponse,
    UsersResponse,
)

ADMIN_URL = os.environ["ADMIN_URL"]
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
EMAIL = os.environ["EMAIL"]


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def present(value: object) -> bool:
    """Whether an optional field holds a value (not None, not the generator's UNSET)."""
    return value is not None and type(value).__name__ != "Unset"


def main() -> None:
    admin = AuthenticatedClient(base_url=ADMIN_URL, token=ADMIN_TOKEN, timeout=10.0)

    # 1. find the user by address
    r = list_users.sync_detailed(client=admin, email=EMAIL)
    check(r.status_code == 200 and isinstance(r.parsed, UsersResponse), f"list_users: {r.status_code} {r.content!r}")
    check(len(r.parsed.users) == 1 and r.parsed.users[0].email == EMAIL, f"list_users: {r.parsed!r}")
    user = r.parsed.users[0]
    print(f"  list_users?email: {user.id}, {user.sessions} live sessions")

    # 2. its sessions
    r = get_user.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 200 and isinstance(r.parsed, UserDetailResponse), f"get_user: {r.status_code} {r.content!r}")
    check(r.parsed.user.id == user.id, "get_user: id")
    check(len(r.parsed.sessions) == user.sessions, "get_user: the sessions it counts")

    # 3. disable, 4. enable
    r = disable_user.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 200 and isinstance(r.parsed, UserResponse), f"disable_user: {r.status_code} {r.content!r}")
    check(present(r.parsed.user.disabled_at), "disable_user: disabledAt")
    check(r.parsed.user.sessions == 0, "disable_user: its sessions ended")
    r = enable_user.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 200 and isinstance(r.parsed, UserResponse), f"enable_user: {r.status_code} {r.content!r}")
    check(not present(r.parsed.user.disabled_at), "enable_user: disabledAt")
    print("  disable_user, enable_user: 200")

    # 5. end its sessions
    r = revoke_user_sessions.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 200 and isinstance(r.parsed, RevokeSessionsResponse), f"revoke: {r.status_code} {r.content!r}")
    check(r.parsed.revoked == 0, "revoke_user_sessions: none left after disabling")

    # 6. delete; then it is gone
    r = delete_user.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 200 and isinstance(r.parsed, DeleteUserResponse), f"delete_user: {r.status_code} {r.content!r}")
    check(r.parsed.audit_rows > 0, "delete_user: audit rows pseudonymised")
    r = get_user.sync_detailed(id=user.id, client=admin)
    check(r.status_code == 404 and isinstance(r.parsed, ErrorBody), f"get_user after delete: {r.status_code}")
    check(r.parsed.code == "not_found", f"get_user after delete: {r.parsed.code!r}")
    print("  delete_user: 200; get_user after: 404 not_found")

    # A wrong token is refused with the typed error body.
    wrong = AuthenticatedClient(base_url=ADMIN_URL, token="not-the-admin-token", timeout=10.0)
    r = list_users.sync_detailed(client=wrong)
    check(r.status_code == 401 and isinstance(r.parsed, ErrorBody), f"wrong token: {r.status_code}")
    check(r.parsed.code == "invalid_admin_token", f"wrong token: {r.parsed.code!r}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as the client's
        print("python admin client: FAILED", file=sys.stderr)
        import traceback

        traceback.print_exception(e)
        sys.exit(1)
    print("python admin client: ok")
