//! The connection pool, and failover between the hosts of a multi-host
//! `DATABASE_URL`.
//!
//! sqlx connects to one host. With several (a primary and its standbys), the
//! pool is pointed at the one that is not in recovery, the primary, and a
//! watcher task keeps it there: once a second it asks its own connection
//! whether that host is still the primary; when the host stops answering or
//! is a standby, it tries every host in `DATABASE_URL`'s order (every 250 ms
//! until one answers as a primary) and points the pool at the first primary
//! it finds. Until then requests answer 503
//! `database_unavailable` (a refused connection, or a standby, fails the
//! pool's connect, which retries until `DATABASE_ACQUIRE_TIMEOUT`). A new
//! connection is checked before use, so none to a standby is handed out, and
//! a connection opened before a switch is dropped rather than reused.
//! Promoting the standby is left to the operator or to Patroni.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{
    ConnectOptions as _, Connection as _, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{ConfigError, DatabaseSettings};

/// How often the watcher checks that the pool's host is still the primary: a
/// bound on how long a failure goes unnoticed between requests, at the cost of
/// one round trip a second.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often it tries the hosts while none is a reachable primary: a bound on
/// how long a promoted standby waits to be used (a refused connection costs
/// nothing; a standby, one connection per try).
const SEARCH_INTERVAL: Duration = Duration::from_millis(250);

/// A pool for `settings` that connects lazily, so the server starts and
/// answers (503) while the database is down. With several hosts it also
/// starts the watcher, which needs a Tokio runtime.
pub fn connect_lazy(settings: &DatabaseSettings) -> Result<PgPool, ConfigError> {
    let mut hosts = settings.hosts()?;
    let options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // No ping before every checkout: it doubled the round trips of a
        // one-query request. A dead connection fails its query instead
        // (503 for that request) and is discarded.
        .test_before_acquire(false);
    if hosts.len() == 1 {
        return Ok(options
            .after_connect(|conn, _| Box::pin(without_jit(conn)))
            .connect_lazy_with(hosts.remove(0)));
    }
    let switched = Arc::new(LastSwitch::default());
    let seen = switched.clone();
    let pool = options
        .after_connect(|conn, _| {
            Box::pin(async move {
                if in_recovery(conn).await? {
                    return Err(sqlx::Error::Protocol(
                        "the server is a standby (in recovery); waiting for the primary".to_owned(),
                    ));
                }
                without_jit(conn).await
            })
        })
        .before_acquire(move |_, meta| {
            let current = seen.opened_since(meta.age);
            Box::pin(async move { Ok(current) })
        })
        .connect_lazy_with(hosts[0].clone());
    tokio::spawn(watch(pool.clone(), hosts, switched, settings.acquire_timeout));
    Ok(pool)
}

/// A connection to the first host of `hosts` that is a primary, trying each
/// for up to `timeout`: for the commands that need one connection (`migrate`).
pub async fn connect_primary(hosts: &[PgConnectOptions], timeout: Duration) -> Result<PgConnection, sqlx::Error> {
    let mut last = None;
    for (i, host) in hosts.iter().enumerate() {
        match connect_if_primary(host, timeout).await {
            Ok(Some(conn)) => return Ok(conn),
            Ok(None) => {
                last = Some(sqlx::Error::Protocol(format!(
                    "host {} of DATABASE_URL is a standby",
                    i + 1
                )))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(sqlx::Error::PoolClosed))
}

/// Turns PostgreSQL's JIT compilation off for the connection's session.
///
/// sesame's statements are short, and JIT never pays for itself on them; but
/// on a year of audit rows the planner's estimates for the statistics and the
/// hourly counts (whose time bounds are known only at run time) passed
/// `jit_above_cost`, and compiling took 1 s of statements that run in 25 to
/// 90 ms (docs/BENCHMARKS.md). In the simple query protocol, as
/// [`in_recovery`]. Behind a transaction-mode pooler this lands on whichever
/// server connection ran it, so there every transaction also sets it for
/// itself (`store::db`).
async fn without_jit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    conn.execute("SET jit = off").await.map(drop)
}

/// Whether the server is in recovery, i.e. a standby that refuses writes.
///
/// In the simple query protocol: it runs outside any transaction (on a new
/// connection, before `migrate`'s), where a prepared statement behind a
/// transaction-mode pooler could take a name another client left prepared on
/// that server connection (see `store::db`).
pub async fn in_recovery(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Executor as _, Row as _};
    conn.fetch_one("SELECT pg_is_in_recovery()").await?.try_get(0)
}

/// When the pool last moved to another host.
#[derive(Default)]
struct LastSwitch(Mutex<Option<Instant>>);

impl LastSwitch {
    fn now(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether a connection of this age was opened after the last switch.
    fn opened_since(&self, age: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| age < at.elapsed())
    }
}

/// A connection to `host` if it answers within `timeout` and is a primary.
async fn connect_if_primary(host: &PgConnectOptions, timeout: Duration) -> Result<Option<PgConnection>, sqlx::Error> {
    let attempt = async {
        let mut conn = host.connect().await?;
        if in_recovery(&mut conn).await? {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(conn))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Keeps `pool` on the primary among `hosts` until the pool is closed.
async fn watch(pool: PgPool, hosts: Vec<PgConnectOptions>, switched: Arc<LastSwitch>, timeout: Duration) {
    let mut current = 0;
    let mut probe: Option<PgConnection> = None;
    let mut lost = false;
    while !pool.is_closed() {
        let still_primary = match probe.as_mut() {
            Some(conn) => matches!(tokio::time::timeout(timeout, in_recovery(conn)).await, Ok(Ok(false))),
            None => false,
        };
        if !still_primary {
            probe = None;
            for (i, host) in hosts.iter().enumerate() {
                if let Ok(Some(conn)) = connect_if_primary(host, timeout).await {
                    probe = Some(conn);
                    if i != current {
                        pool.set_connect_options(host.clone());
                        switched.now();
                        current = i;
                        tracing::warn!(host = i + 1, "database: the pool moved to a new primary");
                    } else if lost {
                        tracing::info!(host = i + 1, "database: the primary is back");
                    }
                    break;
                }
            }
            if probe.is_none() && !lost {
                tracing::warn!(
                    hosts = hosts.len(),
                    "database: no host of DATABASE_URL is a reachable primary; trying again every 250 ms"
                );
            }
            lost = probe.is_none();
        }
        tokio::time::sleep(if lost { SEARCH_INTERVAL } else { CHECK_INTERVAL }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_opened_before_the_last_switch_is_not_reused() {
        let switched = LastSwitch::default();
        assert!(
            switched.opened_since(Duration::from_secs(3600)),
            "no switch yet: any age is fine"
        );
        switched.now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !switched.opened_since(Duration::from_secs(3600)),
            "opened an hour ago, before the switch"
        );
        assert!(
            switched.opened_since(Duration::from_millis(1)),
            "opened after the switch"
        );
    }
}
