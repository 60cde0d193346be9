// The support flow through a client generated from openapi-admin.yaml (the admin API) the
// way a TypeScript team would make it: `openapi-typescript` for the types
// (generated/ts/admin.d.ts, made by run.sh) and `openapi-fetch` for the calls.
//
//   ADMIN_URL=http://127.0.0.1:ADMIN_PORT ADMIN_TOKEN=… EMAIL=someone@example.com node build/flow_admin.js
//
// EMAIL must have a user (it signed in through flow.ts). The flow: find the user by address,
// list its sessions, disable, enable, end its sessions, delete; then the user is gone.
import { strict as assert } from "node:assert";
import createClient from "openapi-fetch";
import type { paths } from "./generated/ts/admin.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const baseUrl = env("ADMIN_URL");
const email = env("EMAIL");
const admin = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${env("ADMIN_TOKEN")}` } });

async function main(): Promise<void> {
  // 1. find the user by address
  const found = await admin.GET("/admin/users", { params: { query: { email } } });
  assert.equal(found.response.status, 200, "list_users");
  assert.ok(found.data, "list_users: no body");
  assert.equal(found.data.users.length, 1, "list_users: one user");
  const user = found.data.users[0]!;
  assert.equal(user.email, email, "list_users: email");
  const id = user.id;
  console.log(`  list_users?email: ${id}, ${user.sessions} live sessions`);

  // 2. its sessions
  const shown = await admin.GET("/admin/users/{id}", { params: { path: { id } } });
  assert.ok(shown.data, `get_user: ${shown.response.status}`);
  assert.equal(shown.data.user.id, id, "get_user: id");
  assert.equal(shown.data.sessions.length, user.sessions, "get_user: the sessions it counts");
  console.log(`  get_user: ${shown.data.sessions.length} sessions`);

  // 3. disable, 4. enable
  const disabled = await admin.POST("/admin/users/{id}/disable", { params: { path: { id } } });
  assert.ok(disabled.data, `disable_user: ${disabled.response.status}`);
  assert.ok(disabled.data.user.disabledAt, "disable_user: disabledAt");
  assert.equal(disabled.data.user.sessions, 0, "disable_user: its sessions ended");
  const enabled = await admin.POST("/admin/users/{id}/enable", { params: { path: { id } } });
  assert.ok(enabled.data, `enable_user: ${enabled.response.status}`);
  assert.ok(enabled.data.user.disabledAt == null, "enable_user: disabledAt");
  console.log("  disable_user, enable_user: 200");

  // 5. end its sessions
  const revoked = await admin.DELETE("/admin/users/{id}/sessions", { params: { path: { id } } });
  assert.ok(revoked.data, `revoke_user_sessions: ${revoked.response.status}`);
  assert.equal(revoked.data.revoked, 0, "revoke_user_sessions: none left after disabling");

  // 6. delete; then it is gone
  const deleted = await admin.DELETE("/admin/users/{id}", { params: { path: { id } } });
  assert.ok(deleted.data, `delete_user: ${deleted.response.status}`);
  assert.ok(deleted.data.auditRows > 0, "delete_user: audit rows pseudonymised");
  const gone = await admin.GET("/admin/users/{id}", { params: { path: { id } } });
  assert.equal(gone.response.status, 404, "get_user after delete");
  assert.equal(gone.error?.code, "not_found", "get_user after delete: code");
  console.log("  delete_user: 200; get_user after: 404 not_found");

  // A wrong token is refused with the typed error body.
  const wrong = createClient<paths>({ baseUrl, headers: { Authorization: "Bearer not-the-admin-token" } });
  const refused = await wrong.GET("/admin/users", {});
  assert.equal(refused.response.status, 401, "wrong token");
  assert.equal(refused.error?.code, "invalid_admin_token", "wrong token: code");
}

main().then(
  () => console.log("typescript admin client: ok"),
  (e: unknown) => {
    console.error("typescript admin client: FAILED");
    console.error(e);
    process.exit(1);
  },
);
