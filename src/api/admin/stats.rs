//! `GET /admin/stats`: the audit trail counted in time buckets, what the
//! operators' dashboard draws. Which events count for which number is
//! documented in `docs/API.md` ("Admin API", "Statistics") and decided by the
//! one query of [`store::audit_stats::stats`].

use std::{collections::BTreeMap, time::Duration};

use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use time::OffsetDateTime;

use super::{AdminAuth, AdminTags};
use crate::{
    auth::Reason,
    config::{compact_duration, parse_duration},
    error::{AdminErrors, ApiError, ErrorCode, Errors},
    state::AppState,
    store::{self, audit_stats::StatsRow},
};

/// The longest window: the audit trail's usual retention, and what a chart can show.
const MAX_SINCE: Duration = Duration::from_secs(90 * 86_400);
/// The narrowest bucket: finer than a minute is noise on a chart.
const MIN_BUCKET: Duration = Duration::from_secs(60);
/// The widest bucket.
const MAX_BUCKET: Duration = Duration::from_secs(86_400);
/// The most buckets a window may hold (`since / bucket`, rounded up): more
/// points than a chart at 1280 px can show, and a bounded answer.
pub const MAX_BUCKETS: u64 = 500;
/// The window unless `since` says otherwise.
const DEFAULT_SINCE: Duration = Duration::from_secs(86_400);
/// The bucket unless `bucket` says otherwise.
const DEFAULT_BUCKET: Duration = Duration::from_secs(3600);

/// The login methods, listed in `totals` even when none happened.
const METHODS: [&str; 2] = ["otp", "magic-link"];
/// The reasons a code or link verification fails, listed in `totals` even when none happened.
const REASONS: [Reason; 7] = [
    Reason::NoCode,
    Reason::CodeExpired,
    Reason::AttemptsExhausted,
    Reason::WrongCode,
    Reason::LinkNotFound,
    Reason::LinkUsed,
    Reason::LinkExpired,
];

pub struct StatsApi {
    pub state: AppState,
}

/// The counts of one bucket or of the whole window (`docs/API.md` says which
/// events count for each).
#[derive(Object, Debug, Default, Clone, PartialEq, Eq)]
#[oai(rename_all = "camelCase")]
pub struct StatsCounts {
    /// Code emails delivered (`otp.sent`, success).
    pub codes_sent: i64,
    /// Link emails delivered (`magic_link.sent`, success).
    pub links_sent: i64,
    /// Sessions started (`auth.login`).
    pub logins: i64,
    /// `logins` by `metadata.method` (`otp`, `magic-link`).
    pub logins_by_method: BTreeMap<String, i64>,
    /// Failed code and link verifications (`otp.verification` and
    /// `magic_link.verification`, failure).
    pub verification_failures: i64,
    /// `verificationFailures` by reason (the event's `error`).
    pub verification_failures_by_reason: BTreeMap<String, i64>,
    /// Refresh tokens rotated or answered again (`token.refresh`, success).
    pub refreshes: i64,
    /// Rotated refresh tokens presented again (`token.reuse_detected`).
    pub reuse_detected: i64,
    /// Requests refused by a rate limit (`rate_limit.exceeded`).
    pub rate_limited: i64,
    /// Users created by a first sign-in (`user.created`).
    pub new_users: i64,
}

impl StatsCounts {
    /// Adds one row of the query.
    fn add(&mut self, row: &StatsRow) {
        let n = row.count;
        let detail = || row.detail.clone().unwrap_or_else(|| "unknown".to_owned());
        match row.kind.as_str() {
            "codesSent" => self.codes_sent += n,
            "linksSent" => self.links_sent += n,
            "logins" => {
                self.logins += n;
                *self.logins_by_method.entry(detail()).or_default() += n;
            }
            "verificationFailures" => {
                self.verification_failures += n;
                *self.verification_failures_by_reason.entry(detail()).or_default() += n;
            }
            "refreshes" => self.refreshes += n,
            "reuseDetected" => self.reuse_detected += n,
            "rateLimited" => self.rate_limited += n,
            "newUsers" => self.new_users += n,
            other => tracing::warn!(kind = other, "stats: a kind the handler does not know"),
        }
    }

    /// Zero counts with every known method and reason listed.
    fn listing_every_key() -> Self {
        Self {
            logins_by_method: METHODS.iter().map(|m| ((*m).to_owned(), 0)).collect(),
            verification_failures_by_reason: REASONS.iter().map(|r| (r.as_str().to_owned(), 0)).collect(),
            ..Self::default()
        }
    }
}

/// One time bucket: `[start, start + bucket)`, clipped to the window.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct StatsBucket {
    /// The bucket's start; buckets are aligned on the Unix epoch (a `1d`
    /// bucket starts at midnight UTC).
    pub start: OffsetDateTime,
    #[oai(flatten)]
    pub counts: StatsCounts,
}

/// The window's buckets, oldest first, and its totals.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct StatsResponse {
    /// Always `true`.
    pub success: bool,
    /// The window's start (now minus `since`), inclusive.
    pub from: OffsetDateTime,
    /// The window's end (now), inclusive.
    pub until: OffsetDateTime,
    /// The bucket width, e.g. `1h`.
    pub bucket: String,
    /// Every bucket the window touches, oldest first, empty ones included;
    /// the first and last may be partly outside the window (only events
    /// inside it count).
    pub buckets: Vec<StatsBucket>,
    /// The counts over the whole window (the sums of the buckets). The
    /// breakdowns list every known method and reason, with 0 when none.
    pub totals: StatsCounts,
}

/// A window and bucket width checked against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Duration,
    pub bucket: Duration,
}

impl Window {
    /// Parses `since` and `bucket` (`24h`, `15m`, `7d`, or seconds), within the limits.
    pub fn parse(since: Option<&str>, bucket: Option<&str>) -> Result<Self, String> {
        let since = duration_param("since", since, DEFAULT_SINCE)?;
        let bucket = duration_param("bucket", bucket, DEFAULT_BUCKET)?;
        if since.is_zero() || since > MAX_SINCE {
            return Err(format!(
                "invalid parameter `since`: from 1s to {}",
                compact_duration(MAX_SINCE)
            ));
        }
        if bucket < MIN_BUCKET || bucket > MAX_BUCKET {
            return Err(format!(
                "invalid parameter `bucket`: from {} to {}",
                compact_duration(MIN_BUCKET),
                compact_duration(MAX_BUCKET)
            ));
        }
        let buckets = since.as_secs().div_ceil(bucket.as_secs());
        if buckets > MAX_BUCKETS {
            return Err(format!(
                "too many buckets: `since` / `bucket` is {buckets}, at most {MAX_BUCKETS}; choose a wider bucket"
            ));
        }
        Ok(Self { since, bucket })
    }
}

/// A duration parameter in whole seconds, or `default` when absent.
fn duration_param(name: &str, value: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(value) = value else { return Ok(default) };
    match parse_duration(value) {
        Some(d) if d.subsec_nanos() == 0 => Ok(d),
        _ => Err(format!(
            "invalid parameter `{name}`: not a duration in whole seconds such as `24h`, `15m` or `7d`"
        )),
    }
}

/// The start of the epoch-aligned bucket of `bucket_secs` holding `t`.
fn bin(t: OffsetDateTime, bucket_secs: i64) -> i64 {
    t.unix_timestamp().div_euclid(bucket_secs) * bucket_secs
}

/// The buckets from `from` to `until` filled with `rows`, and their totals.
fn fill(
    rows: &[StatsRow],
    from: OffsetDateTime,
    until: OffsetDateTime,
    bucket_secs: i64,
) -> (Vec<StatsBucket>, StatsCounts) {
    let (first, last) = (bin(from, bucket_secs), bin(until, bucket_secs));
    let mut buckets: Vec<StatsBucket> = (first..=last)
        .step_by(usize::try_from(bucket_secs).unwrap_or(1))
        .map(|s| StatsBucket {
            start: OffsetDateTime::from_unix_timestamp(s).unwrap_or(from),
            counts: StatsCounts::default(),
        })
        .collect();
    let mut totals = StatsCounts::listing_every_key();
    for row in rows {
        let index = usize::try_from((row.bucket.unix_timestamp() - first) / bucket_secs).ok();
        if let Some(b) = index.and_then(|i| buckets.get_mut(i)) {
            b.counts.add(row);
        }
        totals.add(row);
    }
    (buckets, totals)
}

#[OpenApi]
impl StatsApi {
    /// Count the audit trail in time buckets.
    ///
    /// What the dashboard (`GET /dashboard`) draws: for the window from now
    /// minus `since` to now, per bucket and in total, codes and links sent,
    /// sign-ins (by method), failed verifications (by reason), refreshes,
    /// refresh-token reuse, rate-limit refusals and new users. `since` is at
    /// most `90d`, `bucket` from `1m` to `1d`, and `since / bucket` at most
    /// 500; otherwise 400 `invalid_request`. One query over the table.
    #[oai(
        path = "/admin/stats",
        method = "get",
        operation_id = "get_stats",
        tag = "AdminTags::Audit"
    )]
    async fn get_stats(
        &self,
        _auth: AdminAuth,
        /// How far back the window reaches, e.g. `1h`, `24h`, `7d` (default `24h`, at most `90d`).
        #[oai(validator(min_length = 1, max_length = 11, pattern = r"^[0-9]{1,10}[smhd]?$"))]
        since: Query<Option<String>>,
        /// The width of a bucket, e.g. `1m`, `1h`, `1d` (default `1h`).
        #[oai(validator(min_length = 1, max_length = 11, pattern = r"^[0-9]{1,10}[smhd]?$"))]
        bucket: Query<Option<String>>,
    ) -> Result<Json<StatsResponse>, Errors<AdminErrors>> {
        let window = Window::parse(since.0.as_deref(), bucket.0.as_deref())
            .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
        let until = self.state.clock.now();
        let from = until - crate::clock::span(window.since);
        let bucket_secs = i64::try_from(window.bucket.as_secs()).unwrap_or(86_400);
        let rows = self
            .state
            .db
            .run(async |conn| store::audit_stats::stats(conn, from, until, bucket_secs).await)
            .await?;
        let (buckets, totals) = fill(&rows, from, until, bucket_secs);
        Ok(Json(StatsResponse {
            success: true,
            from,
            until,
            bucket: compact_duration(window.bucket),
            buckets,
            totals,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_within_the_limits() {
        let ok = |s, b| Window::parse(s, b).unwrap_or_else(|e| panic!("{s:?} {b:?}: {e}"));
        assert_eq!(
            ok(None, None),
            Window {
                since: DEFAULT_SINCE,
                bucket: DEFAULT_BUCKET
            }
        );
        assert_eq!(ok(Some("90d"), Some("1d")).since, MAX_SINCE);
        assert_eq!(ok(Some("500m"), Some("1m")).bucket, MIN_BUCKET);
        assert_eq!(ok(Some("30d"), Some("2h")).bucket, Duration::from_secs(7200));
        for (s, b) in [
            (Some("501m"), Some("1m")),
            (Some("7d"), Some("1m")),
            (Some("91d"), Some("1d")),
            (Some("0s"), None),
            (Some("1h"), Some("59s")),
            (Some("2d"), Some("25h")),
            (Some("1.5s"), None),
            (Some("soon"), None),
            (None, Some("")),
        ] {
            assert!(Window::parse(s, b).is_err(), "{s:?} {b:?} is refused");
        }
    }

    #[test]
    fn buckets_cover_the_window_and_rows_land_in_theirs() {
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let row = |bucket, kind: &str, detail: Option<&str>, count| StatsRow {
            bucket: at(bucket),
            kind: kind.to_owned(),
            detail: detail.map(str::to_owned),
            count,
        };
        let rows = [
            row(3600, "logins", Some("otp"), 2),
            row(7200, "logins", Some("magic-link"), 1),
            row(7200, "verificationFailures", Some("OTP expired"), 3),
        ];
        // 01:30 to 02:30 with 1h buckets: 01:00 and 02:00.
        let (buckets, totals) = fill(&rows, at(5400), at(9000), 3600);
        let starts: Vec<i64> = buckets.iter().map(|b| b.start.unix_timestamp()).collect();
        assert_eq!(starts, [3600, 7200]);
        assert_eq!((buckets[0].counts.logins, buckets[1].counts.logins), (2, 1));
        assert_eq!(buckets[1].counts.verification_failures_by_reason["OTP expired"], 3);
        assert_eq!(totals.logins, 3);
        assert_eq!(totals.logins_by_method["otp"], 2);
        assert_eq!(totals.verification_failures, 3);
        assert_eq!(totals.verification_failures_by_reason["Invalid code"], 0);
    }
}
