//! When a failed delivery is tried again, or given up: a pure decision over the
//! attempt count, the retry window and the clock.

use std::time::Duration;

use time::OffsetDateTime;

/// The wait after the first failed attempt; it doubles with each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between attempts: an endpoint back up is noticed within it.
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// `WEBHOOK_MAX_AGE` has passed since the window opened: failed for good.
    GiveUp,
}

/// After the `attempts`-th failed attempt (1 for the first) at `now`, of a
/// delivery whose retry window opened at `since` and lasts `max_age`.
/// `jitter` in `[0, 1)` spreads the wait over its upper half, so endpoints
/// that failed together are not retried in lockstep. The last retry is at
/// the window's end; a failure at or after it gives up.
pub fn after_failure(
    attempts: i32,
    since: OffsetDateTime,
    now: OffsetDateTime,
    max_age: Duration,
    jitter: f64,
) -> Next {
    let deadline = since + crate::clock::span(max_age);
    if now >= deadline {
        return Next::GiveUp;
    }
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let wait = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    let wait = wait.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
    Next::RetryAt((now + crate::clock::span(wait)).min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid")
    }

    fn wait(attempts: i32, jitter: f64) -> i64 {
        match after_failure(attempts, t0(), t0(), DAY, jitter) {
            Next::RetryAt(at) => (at - t0()).whole_milliseconds() as i64,
            Next::GiveUp => panic!("gave up within the window"),
        }
    }

    #[test]
    fn waits_double_from_five_seconds_up_to_ten_minutes_with_jitter_in_the_upper_half() {
        assert_eq!(wait(1, 0.999_999), 4_999, "just under 5s at most");
        assert_eq!(wait(1, 0.0), 2_500);
        assert_eq!(wait(2, 0.0), 5_000);
        assert_eq!(wait(3, 0.0), 10_000);
        assert_eq!(wait(50, 0.0), 300_000, "capped at 10m (halved by the lowest jitter)");
        assert_eq!(wait(50, 0.999_999), 599_999);
    }

    #[test]
    fn the_last_retry_is_at_the_end_of_the_window_then_it_gives_up() {
        let near_end = t0() + time::Duration::seconds(86_400 - 1);
        assert_eq!(
            after_failure(40, t0(), near_end, DAY, 0.5),
            Next::RetryAt(t0() + time::Duration::days(1))
        );
        assert_eq!(
            after_failure(41, t0(), t0() + time::Duration::days(1), DAY, 0.5),
            Next::GiveUp
        );
    }
}
