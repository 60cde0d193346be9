// The sign-in flow through a client generated from openapi.yaml the way a TypeScript team
// would make it: `openapi-typescript` for the types (generated/ts/schema.d.ts, made by
// run.sh) and `openapi-fetch` for the calls. Every request and response below is
// type-checked against the spec by `tsc --noEmit`; at run time each outcome is asserted.
//
//   SESAME_URL=http://127.0.0.1:PORT MAILDIR=/path/to/sink EMAIL=someone@example.com node build/flow.js
//
// MAILDIR is where tests/clients/smtp_sink.py stores each message's raw DATA (NNNNNN.eml).
import { strict as assert } from "node:assert";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/ts/schema.js";

type TokenPair = components["schemas"]["TokenPair"];
type ErrorBody = components["schemas"]["ErrorBody"];

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const baseUrl = env("SESAME_URL");
const maildir = env("MAILDIR");
const email = env("EMAIL");

const client = createClient<paths>({ baseUrl });

/** The headers of a raw RFC 5322 message, unfolded, names lower-cased. */
function headersOf(raw: string): Map<string, string> {
  const head = raw.split(/\r?\n\r?\n/, 1)[0] ?? "";
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ");
  const out = new Map<string, string>();
  for (const line of unfolded.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) out.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return out;
}

/** The code of the newest message to `to` whose id is above `after`, from its Subject. */
async function readCode(to: string, after: string): Promise<{ code: string; file: string }> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const files = readdirSync(maildir)
      .filter((f) => f.endsWith(".eml") && f > after)
      .sort()
      .reverse();
    for (const f of files) {
      const h = headersOf(readFileSync(join(maildir, f), "utf8"));
      if (!(h.get("to") ?? "").toLowerCase().includes(to.toLowerCase())) continue;
      const subject = h.get("subject") ?? "";
      const m = /^sesame: Your sign-in code: (\d{6})$/.exec(subject);
      assert.ok(m, `message ${f} to ${to} has an unexpected Subject: ${JSON.stringify(subject)}`);
      return { code: m[1]!, file: f };
    }
    if (Date.now() > deadline) throw new Error(`no message to ${to} arrived in ${maildir} within 10 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function lastMessage(): string {
  return readdirSync(maildir).filter((f) => f.endsWith(".eml")).sort().at(-1) ?? "";
}

function checkPair(pair: TokenPair, what: string): void {
  assert.equal(pair.success, true, `${what}: success`);
  assert.ok(pair.token.length > 0, `${what}: empty access token`);
  assert.equal(pair.token.split(".").length, 3, `${what}: the access token is not a JWT`);
  assert.ok(pair.refreshToken.length > 0, `${what}: empty refresh token`);
  assert.equal(pair.tokenType, "Bearer", `${what}: tokenType`);
  assert.ok(Number.isInteger(pair.expiresIn) && pair.expiresIn > 0, `${what}: expiresIn ${pair.expiresIn}`);
  assert.equal(pair.user.email, email, `${what}: user.email`);
}

function checkError(error: ErrorBody | undefined, status: number, expectStatus: number, code: string, what: string): void {
  assert.equal(status, expectStatus, `${what}: status`);
  assert.ok(error, `${what}: no error body`);
  assert.equal(error.success, false, `${what}: success`);
  assert.equal(error.code, code, `${what}: code`);
  assert.ok(error.error.length > 0, `${what}: empty error message`);
}

async function main(): Promise<void> {
  // 1. send code
  const before = lastMessage();
  {
    const { data, error, response } = await client.POST("/auth/send-code", { body: { email } });
    assert.equal(response.status, 200, `send-code: ${response.status} ${JSON.stringify(error)}`);
    assert.ok(data);
    assert.equal(data.success, true);
    assert.ok(data.message.length > 0);
  }

  // 2. read the code from the sink
  const { code, file } = await readCode(email, before);
  console.log(`  send-code: 200, code ${code} read from ${file}`);

  // 3. a wrong code is refused with the typed error body
  {
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, "0");
    const { data, error, response } = await client.POST("/auth/verify-code", { body: { email, code: wrong } });
    assert.equal(data, undefined);
    checkError(error, response.status, 401, "invalid_code", "verify-code (wrong code)");
  }

  // 4. verify code
  let pair: TokenPair;
  {
    const { data, error, response } = await client.POST("/auth/verify-code", { body: { email, code } });
    assert.equal(response.status, 200, `verify-code: ${response.status} ${JSON.stringify(error)}`);
    assert.ok(data);
    checkPair(data, "verify-code");
    pair = data;
  }
  const userId = pair.user.id;
  console.log(`  verify-code: 200, user ${userId}, expiresIn ${pair.expiresIn}`);

  // 5. me, with the bearer token
  {
    const { data, error, response } = await client.GET("/auth/me", {
      headers: { Authorization: `Bearer ${pair.token}` },
    });
    assert.equal(response.status, 200, `me: ${response.status} ${JSON.stringify(error)}`);
    assert.ok(data);
    assert.equal(data.success, true);
    assert.equal(data.user.id, userId, "me: user.id");
    assert.equal(data.user.email, email, "me: user.email");
    assert.equal(data.user.createdAt, pair.user.createdAt, "me: user.createdAt");
  }
  // ... and without it
  {
    const { error, response } = await client.GET("/auth/me");
    assert.equal(response.headers.get("www-authenticate")?.startsWith("Bearer"), true, "me without token: WWW-Authenticate");
    checkError(error, response.status, 401, "invalid_token", "me without token");
  }
  console.log("  me: 200, same user; 401 without a token");

  // 6. refresh: a new pair, with a NEW refresh token
  const oldRefresh = pair.refreshToken;
  {
    const { data, error, response } = await client.POST("/auth/refresh", { body: { refreshToken: oldRefresh } });
    assert.equal(response.status, 200, `refresh: ${response.status} ${JSON.stringify(error)}`);
    assert.ok(data);
    checkPair(data, "refresh");
    assert.notEqual(data.refreshToken, oldRefresh, "refresh: the refresh token was not rotated");
    assert.equal(data.user.id, userId, "refresh: user.id");
    pair = data;
  }
  {
    const { data, response } = await client.GET("/auth/me", {
      headers: { Authorization: `Bearer ${pair.token}` },
    });
    assert.equal(response.status, 200, "me with the refreshed access token");
    assert.equal(data?.user.id, userId);
  }
  console.log("  refresh: 200, new refresh token; its access token works");

  // 7. logout
  {
    const { data, error, response } = await client.POST("/auth/logout", { body: { refreshToken: pair.refreshToken } });
    assert.equal(response.status, 200, `logout: ${response.status} ${JSON.stringify(error)}`);
    assert.ok(data);
    assert.equal(data.success, true);
  }

  // 8. the logged-out refresh token no longer works
  {
    const { data, error, response } = await client.POST("/auth/refresh", { body: { refreshToken: pair.refreshToken } });
    assert.equal(data, undefined);
    checkError(error, response.status, 401, "invalid_refresh_token", "refresh after logout");
  }
  console.log("  logout: 200; refresh with the logged-out token: 401 invalid_refresh_token");
}

main().then(
  () => console.log("typescript client: ok"),
  (e: unknown) => {
    console.error("typescript client: FAILED");
    console.error(e);
    process.exit(1);
  },
);
