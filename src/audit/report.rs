//! `sesame audit summary`: the named queries of `docs/audit-queries.sql`, run
//! over a time window. The file is compiled in, so the documentation and the
//! command cannot drift apart.

use std::{fmt, time::Duration};

use sqlx::{Column as _, PgConnection, Row as _, TypeInfo as _, postgres::PgRow};

/// The documented queries, as written for psql (`:'since'` is the window).
pub const QUERIES_SQL: &str = include_str!("../../docs/audit-queries.sql");

/// One query of the file.
#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: String,
    /// The comment lines under the name: what the query answers.
    pub description: String,
    /// The SQL with the window as parameter `$1` (an interval, as text).
    pub sql: String,
}

/// Every `-- name:` query of the file, in order.
pub fn queries() -> Vec<NamedQuery> {
    QUERIES_SQL
        .split("\n-- name:")
        .skip(1)
        .map(|chunk| {
            let mut lines = chunk.lines();
            let name = lines.next().unwrap_or_default().trim().to_owned();
            let mut description = Vec::new();
            let mut sql = Vec::new();
            for line in lines {
                match line.strip_prefix("--") {
                    Some(comment) if sql.is_empty() => description.push(comment.trim()),
                    Some(_) => {}
                    None if line.trim().is_empty() && sql.is_empty() => {}
                    None => sql.push(line),
                }
            }
            NamedQuery {
                name,
                description: description.join(" "),
                sql: sql.join("\n").trim().trim_end_matches(';').replace(":'since'", "$1"),
            }
        })
        .collect()
}

/// A value of a result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("-"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Runs `query` over the last `since`.
pub async fn run(conn: &mut PgConnection, query: &NamedQuery, since: Duration) -> Result<Table, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(query.sql.clone()))
        .bind(format!("{} seconds", since.as_secs()))
        .fetch_all(conn)
        .await?;
    let columns = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect())
        .unwrap_or_default();
    let rows = rows.iter().map(cells).collect::<Result<_, _>>()?;
    Ok(Table { columns, rows })
}

fn cells(row: &PgRow) -> Result<Vec<Cell>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let ty = row.column(i).type_info().name().to_owned();
            Ok(match ty.as_str() {
                "BOOL" => row.try_get::<Option<bool>, _>(i)?.map_or(Cell::Null, Cell::Bool),
                "INT2" => row
                    .try_get::<Option<i16>, _>(i)?
                    .map_or(Cell::Null, |v| Cell::Int(v.into())),
                "INT4" => row
                    .try_get::<Option<i32>, _>(i)?
                    .map_or(Cell::Null, |v| Cell::Int(v.into())),
                "INT8" => row.try_get::<Option<i64>, _>(i)?.map_or(Cell::Null, Cell::Int),
                "FLOAT4" => row
                    .try_get::<Option<f32>, _>(i)?
                    .map_or(Cell::Null, |v| Cell::Float(v.into())),
                "FLOAT8" => row.try_get::<Option<f64>, _>(i)?.map_or(Cell::Null, Cell::Float),
                _ => row.try_get::<Option<String>, _>(i)?.map_or(Cell::Null, Cell::Text),
            })
        })
        .collect()
}

impl fmt::Display for Table {
    /// An aligned text table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return writeln!(f, "  (none)");
        }
        let text: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(ToString::to_string).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                text.iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "  {}", line(&self.columns).trim_end())?;
        for r in &text {
            writeln!(f, "  {}", line(r).trim_end())?;
        }
        Ok(())
    }
}
