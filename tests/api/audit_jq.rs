//! The TypeScript design's `jq` recipes for `logs/metrics.jsonl`, and sesame's
//! own, run with the real `jq` on a file sesame wrote after known sign-ins and
//! failures: each answers what was driven. The recipes are part of the
//! documented contract: `docs/API.md` holds each one as written here.

use std::{collections::BTreeMap, path::Path, process::Command};

use sesame::config::MetricsFormat;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, rt, smtp_config, temp_dir},
    mailbox::{SmtpSink, token_of},
};

/// The design's "Count failed OTP attempts".
const FAILED_OTP_ATTEMPTS: &str = r#"cat logs/metrics.jsonl | grep "otp.verification.detail" | grep "false" | wc -l"#;

/// The design's "Count OTP Failures by Reason".
const OTP_FAILURES_BY_REASON: &str = r#"cat logs/metrics.jsonl \
  | jq -r 'select(.event == "otp.verification.detail" and .success == false) | .error' \
  | sort | uniq -c"#;

/// The design's "Track Login Success Rate" (`auth.login` records successes only).
const LOGIN_SUCCESS_RATE: &str = r#"cat logs/metrics.jsonl \
  | jq -r 'select(.event == "auth.login") | .success' \
  | awk '{if($1=="true") s++; else f++} END {print "Success:", s, "Failed:", f}'"#;

/// The design's "Token Refresh Rate".
const TOKEN_REFRESHES: &str = r#"cat logs/metrics.jsonl \
  | jq -r 'select(.event == "token.refresh") | .timestamp' \
  | wc -l"#;

/// The design's "View All Metrics", without `-f` so that it ends.
const VIEW_ALL: &str = "tail logs/metrics.jsonl | jq";

/// sesame's: the sign-in success rate, over the verifications.
const SIGN_IN_SUCCESS_RATE: &str = r#"cat logs/metrics.jsonl \
  | jq -r 'select(.event == "otp.verification" or .event == "magic_link.verification") | .success' \
  | awk '{if($1=="true") s++; else f++} END {print "Success:", s, "Failed:", f}'"#;

/// sesame's: events by type, most frequent first.
const EVENTS_BY_TYPE: &str = "jq -r '.event' logs/metrics.jsonl | sort | uniq -c | sort -rn";

/// sesame's: the latest events.
const LATEST_EVENTS: &str = "tail -n 3 logs/metrics.jsonl | jq -c '{timestamp, event, success, error}'";

/// Runs `recipe` with bash in `dir` (where `logs/metrics.jsonl` is); its stdout.
fn run(dir: &Path, recipe: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{recipe}")])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("bash cannot run: {e}"));
    assert!(
        out.status.success(),
        "{recipe}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `uniq -c` output as value → count.
fn counted(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .map(|l| {
            let (n, value) = l.trim_start().split_once(' ').unwrap();
            (value.to_owned(), n.parse().unwrap())
        })
        .collect()
}

#[sqlx::test]
async fn the_designs_jq_recipes_answer_what_was_driven(_: PgPoolOptions, db: PgConnectOptions) {
    let jq = Command::new("jq").arg("--version").output();
    assert!(
        jq.as_ref().is_ok_and(|o| o.status.success()),
        "jq is needed to check the documented jq recipes (apt-get install jq): {jq:?}"
    );
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    for recipe in [
        FAILED_OTP_ATTEMPTS,
        OTP_FAILURES_BY_REASON,
        LOGIN_SUCCESS_RATE,
        TOKEN_REFRESHES,
        VIEW_ALL,
        SIGN_IN_SUCCESS_RATE,
        EVENTS_BY_TYPE,
        LATEST_EVENTS,
    ] {
        assert!(docs.contains(recipe), "docs/API.md lists the recipe:\n{recipe}");
    }

    let dir = temp_dir("jq");
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.audit.metrics_format = MetricsFormat::File;
    config.audit.metrics_file_path = dir.join("logs/metrics.jsonl");
    let app = TestApp::spawn_with(config).await;

    // Ada signs in with a code; Bob after two wrong codes; Carol tries with
    // no code sent; Dave signs in with a link.
    let ada = app.sign_in(&sink, "ada@example.com").await;
    assert_eq!(app.send_code("bob@example.com").await.status, 200);
    let code = sink.last_to("bob@example.com").code();
    for shift in [1, 2] {
        let wrong: String = code
            .bytes()
            .map(|b| char::from(b'0' + (b - b'0' + shift) % 10))
            .collect();
        assert_eq!(app.verify_code("bob@example.com", &wrong).await.status, 401);
    }
    assert_eq!(app.verify_code("bob@example.com", &code).await.status, 200);
    assert_eq!(app.verify_code("carol@example.com", "123456").await.status, 401);
    assert_eq!(app.send_magic_link("dave@example.com", None).await.status, 200);
    let link = token_of(&sink.last_to("dave@example.com").link());
    assert_eq!(app.verify_magic_link(&link).await.status, 200);
    // Two rotations of Ada's session, then an unknown refresh token.
    let once = app.refresh(rt(&ada)).await;
    assert_eq!(once.status, 200, "{}", once.text);
    assert_eq!(app.refresh(rt(&once.json)).await.status, 200);
    assert_eq!(app.refresh(&"U".repeat(43)).await.status, 401);
    app.stop().await; // drains the file

    assert_eq!(run(&dir, FAILED_OTP_ATTEMPTS).trim(), "3");
    assert_eq!(
        counted(&run(&dir, OTP_FAILURES_BY_REASON)),
        BTreeMap::from([("Invalid code".to_owned(), 2), ("No OTP found for email".to_owned(), 1)])
    );
    // Ada, Bob and Dave; sesame records `auth.login` only when a session starts.
    assert_eq!(run(&dir, LOGIN_SUCCESS_RATE), "Success: 3 Failed: \n");
    assert_eq!(run(&dir, TOKEN_REFRESHES).trim(), "3");
    let all = run(&dir, VIEW_ALL);
    assert_eq!(
        all.matches("\n  \"event\": ").count(),
        10,
        "the last ten, pretty-printed"
    );

    // Code: Ada, Bob ×3, Carol; link: Dave.
    assert_eq!(run(&dir, SIGN_IN_SUCCESS_RATE), "Success: 3 Failed: 3\n");
    let by_type = counted(&run(&dir, EVENTS_BY_TYPE));
    let expected: BTreeMap<String, u32> = [
        ("otp.generated", 2),
        ("otp.sent", 2),
        ("otp.verification", 5),
        ("otp.verification.detail", 3),
        ("magic_link.generated", 1),
        ("magic_link.sent", 1),
        ("magic_link.verification", 1),
        // Each of the three sign-ins is its address's first.
        ("user.created", 3),
        ("auth.login", 3),
        // Two per sign-in (3) and per rotation (2).
        ("token.generated", 10),
        ("token.refresh", 3),
    ]
    .into_iter()
    .map(|(e, n)| (e.to_owned(), n))
    .collect();
    assert_eq!(by_type, expected);
    let latest: Vec<serde_json::Value> = run(&dir, LATEST_EVENTS)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, bool, Option<&str>)> = latest
        .iter()
        .map(|e| {
            assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
            (
                e["event"].as_str().unwrap(),
                e["success"].as_bool().unwrap(),
                e["error"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("token.generated", true, None),
            ("token.generated", true, None),
            ("token.refresh", false, Some("Unknown refresh token")),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}
