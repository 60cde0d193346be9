//! What one rate-limit check costs: the single upsert of `store::rate_limits::hit`
//! (three counters, as a send checks), against a real PostgreSQL.
//!
//!   DATABASE_URL=postgres://…/sesame_bench cargo run --release --example bench_limiter -- [checks] [concurrency]
//!
//! Applies the migrations, then runs `checks` checks (default 20000) from
//! `concurrency` tasks (default 16) over 1000 subjects, and prints throughput
//! and latency percentiles. Loopback only; bounded by the count.

use std::time::{Duration, Instant};

use sesame::store::rate_limits::{Hit, hit};
use sqlx::postgres::PgPoolOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let checks: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let url = std::env::var("DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(&url)
        .await?;
    sesame::MIGRATOR.run(&pool).await?;
    sqlx::query("TRUNCATE rate_limits").execute(&pool).await?;

    let per_task = checks / concurrency;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let subject = |kind: u8| {
                    let mut s = [kind; 32];
                    s[..8].copy_from_slice(&(((t * per_task + i) % 1000) as u64).to_le_bytes());
                    s
                };
                let hits = [
                    Hit {
                        bucket: "send_per_address_interval",
                        subject: subject(1),
                        window: time::Duration::minutes(1),
                    },
                    Hit {
                        bucket: "send_per_address_hour",
                        subject: subject(2),
                        window: time::Duration::hours(1),
                    },
                    Hit {
                        bucket: "send_per_ip_hour",
                        subject: subject(3),
                        window: time::Duration::hours(1),
                    },
                ];
                let one = Instant::now();
                let mut conn = pool.acquire().await?;
                hit(&mut conn, &hits, time::OffsetDateTime::now_utc()).await?;
                latencies.push(one.elapsed());
            }
            Ok::<_, sqlx::Error>(latencies)
        });
    }
    let mut all: Vec<Duration> = Vec::with_capacity(checks);
    for result in tasks.join_all().await {
        all.extend(result?);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{} checks, concurrency {concurrency}: {:.0} checks/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}
