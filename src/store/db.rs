//! [`Db`]: the pool, used the way the pooler in front of the database allows.
//!
//! Directly connected (or behind a session-mode pooler), a connection keeps
//! its prepared statements (`DATABASE_STATEMENT_CACHE`, default 100) and a
//! one-statement request runs in autocommit: one round trip.
//!
//! Behind a transaction-mode pooler (PgBouncer `pool_mode=transaction`,
//! Supavisor, RDS Proxy; `DATABASE_STATEMENT_CACHE=0`), the server connection
//! under a client connection changes whenever no transaction is open. sqlx
//! prepares a statement (Parse, Sync) before it binds and runs it (Bind,
//! Execute, Sync): between the two, outside a transaction, the pooler may hand
//! the client another server, one without that statement (or with another
//! client's statement of the same name). So in that mode:
//! - every use of the database is a transaction ([`Db::run`] opens one too,
//!   and commits it), so both halves reach the same server;
//! - no statement is cached, and every transaction begins with
//!   `DEALLOCATE ALL` (in the `BEGIN`'s round trip), which clears what earlier
//!   transactions on that server left prepared, ours or another instance's,
//!   so a statement name is never taken; it also sets `jit = off` for the
//!   transaction, as `store::pool` does for a direct connection's session
//!   (a session-wide setting would stay with whichever server ran it);
//! - what runs outside a transaction (the health ping, the primary check of
//!   `store::pool::in_recovery`) uses the simple query protocol, which
//!   prepares nothing.
//!
//! Nothing else in sesame keeps session state: advisory locks are
//! transaction-scoped (`pg_advisory_xact_lock`), and there is no `SET`,
//! `LISTEN` or temporary table.

use std::ops::{Deref, DerefMut};

use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction, pool::PoolConnection};

/// What a transaction begins with behind a transaction-mode pooler.
const BEGIN_POOLED: &str = "BEGIN; DEALLOCATE ALL; SET LOCAL jit = off";

/// The connection pool and how to use it; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    transaction_pooling: bool,
}

impl Db {
    /// `pool`, used as a transaction-mode pooler requires when
    /// `transaction_pooling` (see the module documentation).
    pub fn new(pool: PgPool, transaction_pooling: bool) -> Self {
        Self {
            pool,
            transaction_pooling,
        }
    }

    /// The pool itself: for closing it and for tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction on a pooled connection.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        if self.transaction_pooling {
            self.pool.begin_with(BEGIN_POOLED).await
        } else {
            self.pool.begin().await
        }
    }

    /// Runs `f` on a connection, for statements that need no transaction of
    /// their own: each commits by itself when connected directly; behind a
    /// transaction-mode pooler they run in one transaction, committed when
    /// `f` succeeds (rolled back when it fails).
    pub async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut conn = self.acquire().await?;
        let out = f(&mut conn).await?;
        conn.done().await?;
        Ok(out)
    }

    /// A connection as [`Db::run`] uses it: a transaction behind a
    /// transaction-mode pooler, which [`Conn::done`] commits (dropped without
    /// it, what it wrote is rolled back).
    async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        if self.transaction_pooling {
            Ok(Conn::Transaction(self.begin().await?))
        } else {
            Ok(Conn::Pooled(self.pool.acquire().await?))
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A transaction on `conn`, a connection of its own (not from the pool),
/// begun as [`Db::begin`] would.
pub async fn begin_on(
    conn: &mut PgConnection,
    transaction_pooling: bool,
) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    if transaction_pooling {
        conn.begin_with(BEGIN_POOLED).await
    } else {
        conn.begin().await
    }
}

/// A connection from [`Db::acquire`].
enum Conn {
    /// Directly connected: statements commit by themselves.
    Pooled(PoolConnection<Postgres>),
    /// Behind a transaction-mode pooler: committed by [`Conn::done`].
    Transaction(Transaction<'static, Postgres>),
}

impl Conn {
    /// Commits what the statements did (behind a transaction-mode pooler;
    /// directly connected they already did) and gives the connection back.
    async fn done(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Pooled(_) => Ok(()),
            Self::Transaction(tx) => tx.commit().await,
        }
    }
}

impl Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Transaction(tx) => tx,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Transaction(tx) => tx,
        }
    }
}
