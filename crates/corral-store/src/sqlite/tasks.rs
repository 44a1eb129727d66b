//! The task operations of [`SqliteStore`](super::SqliteStore), one function per [`Store`](crate::Store) method.
//!
//! Writes that read before they write (submit, the claims) run in a `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock first: no other connection (another store on the file, another process) can change
//! the task between the read and the write, so the "exactly one" guarantees hold across connections, not only
//! behind the store's mutex. The other writes are one conditional `UPDATE` or `DELETE`, atomic by itself.
//!
//! Statements with `RETURNING` always run inside an explicit transaction: in autocommit mode their implicit
//! commit happens when the statement is reset, where rusqlite drops the error; `COMMIT` reports it.
//!
//! Values from callers are always bound parameters; only placeholders, column lists and numbers are
//! formatted into the SQL text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::LazyLock;

use rusqlite::types::{FromSql, ToSql};
use rusqlite::{named_params, params, params_from_iter, Connection, Params, Row, Transaction, TransactionBehavior};

use super::{get_column, placeholders, table_decode_error, to_json};
use crate::error::{sql, StoreError};
use crate::task::{NewTask, Submitted, TaskEnd, TaskFilter, TaskRecord, TaskStatus};

/// The columns of `task` that make a [`TaskRecord`], in the order [`decode_task`] reads them. Unqualified,
/// so that `RETURNING` can use them too.
const TASK_COLUMNS: &str = "id, task_type, params, status, attempt, result, error, progress, claimed_by, \
     lease_expires_at, submitted_at, started_at, completed_at, updated_at";

const QUEUED: &str = TaskStatus::Queued.as_str();
const RUNNING: &str = TaskStatus::Running.as_str();
const CANCELLED: &str = TaskStatus::Cancelled.as_str();
const TERMINAL: [&str; 3] = [
    TaskStatus::TERMINAL[0].as_str(),
    TaskStatus::TERMINAL[1].as_str(),
    TaskStatus::TERMINAL[2].as_str(),
];

/// What a claim writes. Named parameters: `:running`, `:node`, `:lease_until`, `:now`.
const CLAIM_SET: &str =
    "status = :running, attempt = attempt + 1, claimed_by = :node, lease_expires_at = :lease_until, \
     started_at = :now, updated_at = :now, progress = NULL";

/// Which tasks a claim may take: queued ones, and running ones whose lease expired. Named parameters:
/// `:queued`, `:running`, `:now`.
const CLAIMABLE: &str = "(status = :queued OR (status = :running AND lease_expires_at < :now))";

/// The claim of the task that `target` selects (`id = :id` or `seq = :seq`), if it is claimable.
fn claim_query(target: &str) -> String {
    format!("UPDATE task SET {CLAIM_SET} WHERE {target} AND {CLAIMABLE} RETURNING {TASK_COLUMNS}")
}

/// The running task whose lease expired first, of any type, or of `types` types (`?2…`). `?1`: now. Walks
/// the partial index `task_lease` (schema v3), named with `INDEXED BY`: without statistics the planner
/// prefers `task_claim` and a sort; with it, a statement that cannot use the index fails instead of
/// quietly scanning.
fn expired_claim_query(types: usize) -> String {
    let mut sql_text =
        format!("SELECT seq FROM task INDEXED BY task_lease WHERE status = '{RUNNING}' AND lease_expires_at < ?1");
    if types > 0 {
        // Writing to a String cannot fail.
        let _ = write!(sql_text, " AND task_type IN ({})", placeholders(2, types));
    }
    sql_text.push_str(" ORDER BY lease_expires_at, seq LIMIT 1");
    sql_text
}

/// The head of the queue, any type: the first entry of the partial index `task_queue` (`INDEXED BY`, as
/// above).
static OLDEST_QUEUED: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT seq FROM task INDEXED BY task_queue WHERE status = '{QUEUED}' ORDER BY submitted_at, seq LIMIT 1")
});

/// The head of the queue of one type. `?1`: queued, `?2`: the type.
const OLDEST_QUEUED_OF_TYPE: &str = "SELECT submitted_at, seq FROM task WHERE status = ?1 AND task_type = ?2 \
     ORDER BY submitted_at, seq LIMIT 1";

/// `?1`: the node, `?2`: now.
fn recover_query() -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM task WHERE status = '{RUNNING}' AND (claimed_by = ?1 OR lease_expires_at < ?2) \
         ORDER BY submitted_at, seq"
    )
}

/// `?1`: the limit. Walks the partial index `task_queue` (`INDEXED BY`, as above).
fn queued_query() -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM task INDEXED BY task_queue WHERE status = '{QUEUED}' \
         ORDER BY submitted_at, seq LIMIT ?1"
    )
}

/// Walks `task_claim` (covering), already in group order.
const COUNT: &str = "SELECT status, task_type, count(*) FROM task GROUP BY status, task_type";

/// A new task, unless the id is taken (then no row). Named parameters: `:id`, `:task_type`, `:params`,
/// `:status`, `:attempt`, `:node`, `:lease_until`, `:started_at`, `:now`.
static INSERT_NEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO task (id, task_type, params, status, attempt, claimed_by, lease_expires_at, started_at, \
         submitted_at, updated_at) VALUES (:id, :task_type, :params, :status, :attempt, :node, :lease_until, \
         :started_at, :now, :now) ON CONFLICT (id) DO NOTHING RETURNING {TASK_COLUMNS}"
    )
});

/// `?1`: the id.
static SELECT_BY_ID: LazyLock<String> = LazyLock::new(|| format!("SELECT {TASK_COLUMNS} FROM task WHERE id = ?1"));

/// A failed task submitted again: queued (or claimed, `:claims` = 1) afresh; its attempt count goes on.
/// Named parameters: `:id`, `:status`, `:claims`, `:node`, `:lease_until`, `:started_at`, `:now`.
static RESUBMIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE task SET status = :status, attempt = attempt + :claims, claimed_by = :node, \
         lease_expires_at = :lease_until, progress = NULL, result = NULL, error = NULL, started_at = :started_at, \
         completed_at = NULL, updated_at = :now WHERE id = :id RETURNING {TASK_COLUMNS}"
    )
});

/// `?1`–`?3`: the terminal statuses, `?4`: the cutoff, `?5`: how many of the newest to keep. Both parts walk
/// `task_completed`: the old ones from the oldest end, and the subquery from the newest end, skipping the `?5`
/// newest. `+status` keeps the planner off the status indexes, which would visit every terminal task. A
/// terminal task always has `completed_at` (every write of a terminal status sets it).
const DELETE_FINISHED: &str = "DELETE FROM task WHERE +status IN (?1, ?2, ?3) AND (completed_at < ?4 OR seq IN (\
     SELECT seq FROM task WHERE completed_at IS NOT NULL AND +status IN (?1, ?2, ?3) \
     ORDER BY completed_at DESC, seq DESC LIMIT -1 OFFSET ?5))";

pub(super) fn submit(conn: &mut Connection, new: &NewTask) -> Result<Submitted, StoreError> {
    submit_with(conn, "submit task", new, None)
}

/// [`submit`], and a task this submit creates or queues again is claimed for `node` in the same transaction.
pub(super) fn submit_claimed(
    conn: &mut Connection,
    new: &NewTask,
    node: &str,
    lease_until: i64,
) -> Result<Submitted, StoreError> {
    const OP: &str = "submit claimed task";
    check_claim(node, lease_until, new.submitted_at)?;
    submit_with(conn, OP, new, Some((node, lease_until)))
}

/// A new id is inserted (`INSERT … ON CONFLICT DO NOTHING`: one statement in the common case); a known one
/// is read, and queued again if it failed. With `claim`, what is inserted or queued again is `running`
/// instead, claimed as [`CLAIM_SET`] would leave it, with `started_at` = `submitted_at`.
fn submit_with(
    conn: &mut Connection,
    op: &'static str,
    new: &NewTask,
    claim: Option<(&str, i64)>,
) -> Result<Submitted, StoreError> {
    not_empty("id", &new.id)?;
    not_empty("task_type", &new.task_type)?;
    let params = to_json("params", &new.params)?;
    let (status, attempt, node, lease_until, started_at) = match claim {
        Some((node, lease_until)) => (RUNNING, 1, Some(node), Some(lease_until), Some(new.submitted_at)),
        None => (QUEUED, 0, None, None, None),
    };
    let tx = begin(conn, op)?;
    let inserted = query_one(
        &tx,
        op,
        &INSERT_NEW,
        named_params! {
            ":id": new.id,
            ":task_type": new.task_type,
            ":params": params,
            ":status": status,
            ":attempt": attempt,
            ":node": node,
            ":lease_until": lease_until,
            ":started_at": started_at,
            ":now": new.submitted_at,
        },
    )?;
    let submitted = match inserted {
        Some(record) => Submitted::Created(record),
        None => match query_one(&tx, op, &SELECT_BY_ID, [&new.id])? {
            Some(existing) if existing.status == TaskStatus::Failed => Submitted::Requeued(query_required(
                &tx,
                op,
                &RESUBMIT,
                named_params! {
                    ":id": new.id,
                    ":status": status,
                    ":claims": i64::from(claim.is_some()),
                    ":node": node,
                    ":lease_until": lease_until,
                    ":started_at": started_at,
                    ":now": new.submitted_at,
                },
            )?),
            Some(existing) => Submitted::Existing(existing),
            // Not inserted, yet not there: only if it was deleted in between, which the write lock excludes.
            None => return Err(StoreError::from_sqlite(op, rusqlite::Error::QueryReturnedNoRows)),
        },
    };
    tx.commit().map_err(sql(op))?;
    Ok(submitted)
}

pub(super) fn claim(
    conn: &mut Connection,
    id: &str,
    node: &str,
    lease_until: i64,
    now: i64,
) -> Result<Option<TaskRecord>, StoreError> {
    const OP: &str = "claim task";
    check_claim(node, lease_until, now)?;
    let tx = begin(conn, OP)?;
    let claimed = query_one(
        &tx,
        OP,
        &claim_query("id = :id"),
        named_params! {
            ":id": id,
            ":node": node,
            ":lease_until": lease_until,
            ":now": now,
            ":queued": QUEUED,
            ":running": RUNNING,
        },
    )?;
    tx.commit().map_err(sql(OP))?;
    Ok(claimed)
}

pub(super) fn claim_next(
    conn: &mut Connection,
    task_types: &[String],
    node: &str,
    lease_until: i64,
    now: i64,
) -> Result<Option<TaskRecord>, StoreError> {
    const OP: &str = "claim next task";
    check_claim(node, lease_until, now)?;
    let types: BTreeSet<&str> = task_types.iter().map(String::as_str).collect();
    let tx = begin(conn, OP)?;
    let seq = match expired_claim(&tx, &types, now)? {
        Some(seq) => Some(seq),
        None => oldest_queued(&tx, &types)?,
    };
    let Some(seq) = seq else {
        return Ok(None);
    };
    let claimed = query_one(
        &tx,
        OP,
        &claim_query("seq = :seq"),
        named_params! {
            ":seq": seq,
            ":node": node,
            ":lease_until": lease_until,
            ":now": now,
            ":queued": QUEUED,
            ":running": RUNNING,
        },
    )?;
    tx.commit().map_err(sql(OP))?;
    Ok(claimed)
}

/// The running task (of one of `types`; empty: any) whose lease expired first, if any. Walks `task_lease`
/// over the expired claims only.
fn expired_claim(tx: &Transaction<'_>, types: &BTreeSet<&str>, now: i64) -> Result<Option<i64>, StoreError> {
    const OP: &str = "claim next task";
    let mut stmt = tx.prepare_cached(&expired_claim_query(types.len())).map_err(sql(OP))?;
    let mut values: Vec<&dyn ToSql> = vec![&now];
    values.extend(types.iter().map(|task_type| task_type as &dyn ToSql));
    let mut rows = stmt.query(params_from_iter(values)).map_err(sql(OP))?;
    match rows.next().map_err(sql(OP))? {
        Some(row) => col(row, 0, "seq").map(Some),
        None => Ok(None),
    }
}

/// The oldest queued task (of one of `types`; empty: any), if any: the first entry of `task_queue`, or of
/// `task_claim` for each type (one index lookup per type, then the oldest of those).
fn oldest_queued(tx: &Transaction<'_>, types: &BTreeSet<&str>) -> Result<Option<i64>, StoreError> {
    const OP: &str = "claim next task";
    if types.is_empty() {
        let mut stmt = tx.prepare_cached(&OLDEST_QUEUED).map_err(sql(OP))?;
        let mut rows = stmt.query([]).map_err(sql(OP))?;
        return match rows.next().map_err(sql(OP))? {
            Some(row) => col(row, 0, "seq").map(Some),
            None => Ok(None),
        };
    }
    let mut stmt = tx.prepare_cached(OLDEST_QUEUED_OF_TYPE).map_err(sql(OP))?;
    let mut oldest: Option<(i64, i64)> = None;
    for task_type in types {
        let mut rows = stmt.query([QUEUED, task_type]).map_err(sql(OP))?;
        if let Some(row) = rows.next().map_err(sql(OP))? {
            let head: (i64, i64) = (col(row, 0, "submitted_at")?, col(row, 1, "seq")?);
            if oldest.is_none_or(|current| head < current) {
                oldest = Some(head);
            }
        }
    }
    Ok(oldest.map(|(_, seq)| seq))
}

pub(super) fn renew_lease(conn: &Connection, id: &str, node: &str, lease_until: i64) -> Result<bool, StoreError> {
    const OP: &str = "renew task lease";
    not_empty("node", node)?;
    execute(
        conn,
        OP,
        "UPDATE task SET lease_expires_at = ?3 WHERE id = ?1 AND status = ?4 AND claimed_by = ?2",
        params![id, node, lease_until, RUNNING],
    )
}

pub(super) fn set_progress(
    conn: &Connection,
    id: &str,
    node: &str,
    progress: &serde_json::Value,
    now: i64,
) -> Result<bool, StoreError> {
    const OP: &str = "set task progress";
    not_empty("node", node)?;
    let progress = to_json("progress", progress)?;
    execute(
        conn,
        OP,
        "UPDATE task SET progress = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?5 AND claimed_by = ?2",
        params![id, node, progress, now, RUNNING],
    )
}

pub(super) fn finish(conn: &Connection, id: &str, node: &str, end: &TaskEnd) -> Result<bool, StoreError> {
    const OP: &str = "finish task";
    not_empty("node", node)?;
    if !end.status.is_terminal() {
        return Err(StoreError::InvalidInput {
            field: "status",
            reason: format!("{} is not terminal", end.status),
        });
    }
    let result = end
        .result
        .as_ref()
        .map(|result| to_json("result", result))
        .transpose()?;
    // One conditional UPDATE: of racing finishers exactly one applies, and only the node holding the claim.
    execute(
        conn,
        OP,
        "UPDATE task SET status = ?3, result = ?4, error = ?5, completed_at = ?6, updated_at = ?6, \
         lease_expires_at = NULL WHERE id = ?1 AND status = ?7 AND claimed_by = ?2",
        params![
            id,
            node,
            end.status.as_str(),
            result,
            end.error,
            end.completed_at,
            RUNNING
        ],
    )
}

pub(super) fn requeue(conn: &Connection, id: &str, node: &str, now: i64) -> Result<bool, StoreError> {
    const OP: &str = "requeue task";
    not_empty("node", node)?;
    execute(
        conn,
        OP,
        "UPDATE task SET status = ?3, claimed_by = NULL, lease_expires_at = NULL, started_at = NULL, \
         progress = NULL, updated_at = ?4 WHERE id = ?1 AND status = ?5 AND claimed_by = ?2",
        params![id, node, QUEUED, now, RUNNING],
    )
}

pub(super) fn cancel(conn: &Connection, id: &str, now: i64) -> Result<bool, StoreError> {
    const OP: &str = "cancel task";
    execute(
        conn,
        OP,
        "UPDATE task SET status = ?2, completed_at = ?3, updated_at = ?3, lease_expires_at = NULL \
         WHERE id = ?1 AND status IN (?4, ?5)",
        params![id, CANCELLED, now, QUEUED, RUNNING],
    )
}

pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    execute(conn, "delete task", "DELETE FROM task WHERE id = ?1", [id])
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<TaskRecord>, StoreError> {
    query_one(conn, "get task", &SELECT_BY_ID, [id])
}

pub(super) fn list(conn: &Connection, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
    let (sql_text, values) = list_query(filter);
    query_all(conn, "list tasks", &sql_text, params_from_iter(values))
}

/// The SQL and its parameters for a [`TaskFilter`].
pub(super) fn list_query(filter: &TaskFilter) -> (String, Vec<&str>) {
    let (filter_text, values) = list_filter(filter);
    let sql_text = match list_page(filter) {
        // Two steps: the page's `seq`s from an index alone, then those rows (see `list_page`).
        Some(page) => format!("SELECT {TASK_COLUMNS} FROM task WHERE seq IN ({page}){LIST_ORDER}"),
        None => format!("SELECT {TASK_COLUMNS} FROM task{filter_text}{LIST_ORDER}"),
    };
    (sql_text, values)
}

/// Listings are newest first.
const LIST_ORDER: &str = " ORDER BY submitted_at DESC, seq DESC";

/// The `seq`s of a limited listing's page, from an index alone: `task_submitted`, or `task_claim`, hold the
/// filter and the order. A status filter alone has no index in `submitted_at` order since schema v3
/// (`task_queue` holds queued tasks only), so its matches are sorted: this way only their index entries,
/// never their rows with params and results. `None` without a limit. Its placeholders are
/// [`list_query`]'s.
pub(super) fn list_page(filter: &TaskFilter) -> Option<String> {
    let (filter_text, _) = list_filter(filter);
    // The limit is a number from the caller's usize, not text: nothing to inject.
    let limit = sql_count(filter.limit?);
    Some(format!("SELECT seq FROM task{filter_text}{LIST_ORDER} LIMIT {limit}"))
}

/// The `WHERE` clause of a listing (empty without conditions), and its values, in placeholder order.
fn list_filter(filter: &TaskFilter) -> (String, Vec<&str>) {
    let mut values: Vec<&str> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    if !filter.statuses.is_empty() {
        conditions.push(format!("status IN ({})", placeholders(1, filter.statuses.len())));
        values.extend(filter.statuses.iter().map(|status| status.as_str()));
    }
    if let Some(task_type) = &filter.task_type {
        values.push(task_type);
        conditions.push(format!("task_type = ?{}", values.len()));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

pub(super) fn count(conn: &Connection) -> Result<BTreeMap<(String, TaskStatus), u64>, StoreError> {
    const OP: &str = "count tasks";
    let mut stmt = conn.prepare_cached(COUNT).map_err(sql(OP))?;
    let mut rows = stmt.query([]).map_err(sql(OP))?;
    let mut counts = BTreeMap::new();
    while let Some(row) = rows.next().map_err(sql(OP))? {
        let status = decode_status(&col::<String>(row, 0, "status")?)?;
        let task_type: String = col(row, 1, "task_type")?;
        let count: i64 = col(row, 2, "count")?;
        counts.insert((task_type, status), u64::try_from(count).unwrap_or(0));
    }
    Ok(counts)
}

pub(super) fn to_recover(conn: &Connection, node: &str, now: i64) -> Result<Vec<TaskRecord>, StoreError> {
    not_empty("node", node)?;
    query_all(conn, "tasks to recover", &recover_query(), params![node, now])
}

pub(super) fn queued(conn: &Connection, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
    query_all(conn, "queued tasks", &queued_query(), params![sql_count(limit)])
}

pub(super) fn delete_finished(conn: &Connection, completed_before: i64, keep_newest: usize) -> Result<u64, StoreError> {
    const OP: &str = "delete finished tasks";
    let [t1, t2, t3] = TERMINAL;
    let deleted = conn
        .prepare_cached(DELETE_FINISHED)
        .and_then(|mut stmt| stmt.execute(params![t1, t2, t3, completed_before, sql_count(keep_newest)]))
        .map_err(sql(OP))?;
    Ok(deleted as u64)
}

/// `BEGIN IMMEDIATE`: takes the write lock (waiting up to the busy timeout) before the first read.
fn begin<'c>(conn: &'c mut Connection, op: &'static str) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(op))
}

/// Runs a conditional write; `true` if it changed a row.
fn execute(conn: &Connection, op: &'static str, sql_text: &str, params: impl Params) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(sql_text)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(sql(op))?;
    Ok(changed > 0)
}

/// The first task a query (a `SELECT` or a `RETURNING`) yields, if any.
fn query_one(
    conn: &Connection,
    op: &'static str,
    sql_text: &str,
    params: impl Params,
) -> Result<Option<TaskRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(op))?;
    let mut rows = stmt.query(params).map_err(sql(op))?;
    match rows.next().map_err(sql(op))? {
        Some(row) => decode_task(row).map(Some),
        None => Ok(None),
    }
}

/// The task a query must yield (an `INSERT … RETURNING`, or an `UPDATE … RETURNING` of a row known to exist).
fn query_required(
    conn: &Connection,
    op: &'static str,
    sql_text: &str,
    params: impl Params,
) -> Result<TaskRecord, StoreError> {
    query_one(conn, op, sql_text, params)?
        .ok_or_else(|| StoreError::from_sqlite(op, rusqlite::Error::QueryReturnedNoRows))
}

/// Every task a query yields.
fn query_all(
    conn: &Connection,
    op: &'static str,
    sql_text: &str,
    params: impl Params,
) -> Result<Vec<TaskRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(op))?;
    let mut rows = stmt.query(params).map_err(sql(op))?;
    let mut tasks = Vec::new();
    while let Some(row) = rows.next().map_err(sql(op))? {
        tasks.push(decode_task(row)?);
    }
    Ok(tasks)
}

fn not_empty(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidInput {
            field,
            reason: "must not be empty".to_owned(),
        });
    }
    Ok(())
}

fn check_claim(node: &str, lease_until: i64, now: i64) -> Result<(), StoreError> {
    not_empty("node", node)?;
    if lease_until < now {
        return Err(StoreError::InvalidInput {
            field: "lease_until",
            reason: format!("{lease_until} is before now ({now}): the lease would be expired already"),
        });
    }
    Ok(())
}

/// A count or limit from a `usize`, as SQLite's signed 64-bit integer (saturating).
fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads column `idx` of a `task` row; a value of the wrong type is a [`StoreError::Decode`].
fn col<T: FromSql>(row: &Row<'_>, idx: usize, column: &'static str) -> Result<T, StoreError> {
    get_column(row, "task", idx, column)
}

fn decode_status(text: &str) -> Result<TaskStatus, StoreError> {
    text.parse().map_err(|err| table_decode_error("task", "status", err))
}

fn decode_json(text: &str, column: &'static str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|err| table_decode_error("task", column, err))
}

fn decode_optional_json(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
) -> Result<Option<serde_json::Value>, StoreError> {
    col::<Option<String>>(row, idx, column)?
        .map(|text| decode_json(&text, column))
        .transpose()
}

/// One `task` row, selected with [`TASK_COLUMNS`].
fn decode_task(row: &Row<'_>) -> Result<TaskRecord, StoreError> {
    Ok(TaskRecord {
        id: col(row, 0, "id")?,
        task_type: col(row, 1, "task_type")?,
        params: decode_json(&col::<String>(row, 2, "params")?, "params")?,
        status: decode_status(&col::<String>(row, 3, "status")?)?,
        attempt: col(row, 4, "attempt")?,
        result: decode_optional_json(row, 5, "result")?,
        error: col(row, 6, "error")?,
        progress: decode_optional_json(row, 7, "progress")?,
        claimed_by: col(row, 8, "claimed_by")?,
        lease_expires_at: col(row, 9, "lease_expires_at")?,
        submitted_at: col(row, 10, "submitted_at")?,
        started_at: col(row, 11, "started_at")?,
        completed_at: col(row, 12, "completed_at")?,
        updated_at: col(row, 13, "updated_at")?,
    })
}

#[cfg(test)]
mod tests;
