//! Credit balances and the append-only credit ledger. Every balance change is one conditional
//! UPDATE plus one ledger row, in the caller's transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A team's counters.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRow {
    pub team_id: String,
    pub credits_allocated: i64,
    pub credits_used: i64,
    pub credits_reserved: i64,
    pub credit_limit: Option<i64>,
    pub auto_refill: bool,
    pub spend_micro_usd: i64,
    pub budget_reserved_micro_usd: i64,
}

impl BalanceRow {
    /// Allocated minus used: what answers call `credits_remaining`.
    pub fn remaining(&self) -> i64 {
        self.credits_allocated - self.credits_used
    }

    /// Remaining minus the holds of open jobs.
    pub fn available(&self) -> i64 {
        self.remaining() - self.credits_reserved
    }
}

/// Kind of a ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TransactionType {
    Allocation,
    Addition,
    Deduction,
    Refund,
    /// A scheduled credit grant (`team_refills`).
    Refill,
}

/// One ledger row.
#[derive(Debug, Clone)]
pub struct TransactionRow {
    pub transaction_id: Uuid,
    pub team_id: String,
    pub transaction_type: TransactionType,
    pub credits_amount: i64,
    pub balance_after: i64,
    pub reason: Option<String>,
    pub job_id: Option<Uuid>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// `sqlx::query_as!` into [`BalanceRow`], with the balance's column list between `$head` and
/// `$tail` (sqlx's macros take only literals, so the list cannot be a constant).
macro_rules! query_balance {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            BalanceRow,
            $head
                + "team_id, credits_allocated, credits_used, credits_reserved, credit_limit,
                   auto_refill, spend_micro_usd, budget_reserved_micro_usd"
                + $tail
            $(, $arg)*
        )
    };
}

/// `sqlx::query_as!` into [`TransactionRow`], with the ledger row's column list between `$head`
/// and `$tail`.
macro_rules! query_transaction {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            TransactionRow,
            $head
                + r#"transaction_id, team_id, transaction_type as "transaction_type: TransactionType",
                     credits_amount, balance_after, reason, job_id, metadata, created_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// Creates the balance row of a new team, with nothing allocated.
pub async fn create_balance(conn: &mut PgConnection, team_id: &str) -> sqlx::Result<()> {
    sqlx::query!("insert into credit_balances (team_id) values ($1)", team_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A team's balance.
pub async fn find_balance(
    db: impl PgExecutor<'_>,
    team_id: &str,
) -> sqlx::Result<Option<BalanceRow>> {
    query_balance!(
        "select ",
        " from credit_balances where team_id = $1",
        team_id
    )
    .fetch_optional(db)
    .await
}

/// Adds `amount` credits and writes the ledger row. The UPDATE's row lock serialises concurrent
/// additions, so each ledger row's `balance_after` follows from the previous one.
/// Returns `None` when the team has no balance (unknown team).
pub async fn allocate(
    conn: &mut PgConnection,
    team_id: &str,
    amount: i64,
    kind: TransactionType,
    reason: Option<&str>,
    metadata: &serde_json::Value,
) -> sqlx::Result<Option<(BalanceRow, TransactionRow)>> {
    let balance = query_balance!(
        "update credit_balances set credits_allocated = credits_allocated + $2, updated_at = now()
         where team_id = $1 returning ",
        "",
        team_id,
        amount
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(balance) = balance else {
        return Ok(None);
    };
    let transaction = insert_transaction(
        conn,
        team_id,
        kind,
        amount,
        balance.remaining(),
        reason,
        None,
        metadata,
    )
    .await?;
    Ok(Some((balance, transaction)))
}

/// Appends a ledger row.
#[allow(clippy::too_many_arguments)]
pub async fn insert_transaction(
    conn: &mut PgConnection,
    team_id: &str,
    kind: TransactionType,
    amount: i64,
    balance_after: i64,
    reason: Option<&str>,
    job_id: Option<Uuid>,
    metadata: &serde_json::Value,
) -> sqlx::Result<TransactionRow> {
    query_transaction!(
        "insert into credit_transactions
             (transaction_id, team_id, transaction_type, credits_amount, balance_after, reason, job_id, metadata)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning ",
        "",
        Uuid::now_v7(),
        team_id,
        kind as TransactionType,
        amount,
        balance_after,
        reason,
        job_id,
        metadata
    )
    .fetch_one(conn)
    .await
}

/// A page of the team's ledger, newest first.
pub async fn list_transactions(
    db: impl PgExecutor<'_>,
    team_id: &str,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<TransactionRow>> {
    query_transaction!(
        "select ",
        " from credit_transactions where team_id = $1 order by seq desc limit $2 offset $3",
        team_id,
        limit,
        offset
    )
    .fetch_all(db)
    .await
}

/// How many ledger rows the team has.
pub async fn count_transactions(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from credit_transactions where team_id = $1"#,
        team_id
    )
    .fetch_one(db)
    .await
}

/// Settles holds of one team's jobs in one balance update: each of `charged` (a job and the
/// reason of its charge) turns its hold into a deduction of one credit, `released` more holds
/// are given back. The hold guarantees each charged credit is there; the unique (job_id, kind)
/// constraint forbids a second charge of a job. The deductions' ledger rows follow in the given
/// order, each `balance_after` one below the previous, ending at the balance the update left:
/// the row stays locked until the commit, so no other change of the team comes in between.
pub async fn settle_holds(
    conn: &mut PgConnection,
    team_id: &str,
    charged: &[(Uuid, String)],
    released: i64,
) -> sqlx::Result<()> {
    let charges = charged.len() as i64;
    // Both counters are `not null`, so their difference is never null.
    let remaining = sqlx::query_scalar!(
        r#"update credit_balances
         set credits_used = credits_used + $2, credits_reserved = credits_reserved - $3, updated_at = now()
         where team_id = $1 returning credits_allocated - credits_used as "remaining!""#,
        team_id,
        charges,
        charges + released
    )
    .fetch_one(&mut *conn)
    .await?;
    if charged.is_empty() {
        return Ok(());
    }
    let transaction_ids: Vec<Uuid> = charged.iter().map(|_| Uuid::now_v7()).collect();
    let job_ids: Vec<Uuid> = charged.iter().map(|(job_id, _)| *job_id).collect();
    // Owned: sqlx's macros check a text[] parameter as a slice of `String`.
    let reasons: Vec<String> = charged.iter().map(|(_, reason)| reason.clone()).collect();
    // Rows are numbered in the order given; `seq` is drawn in that order too (the rows are
    // inserted sorted), which is the order the ledger is read in.
    // The casts give `$2 + $3` the types PostgreSQL cannot infer from an operator alone.
    sqlx::query!(
        "insert into credit_transactions
             (transaction_id, team_id, transaction_type, credits_amount, balance_after, reason, job_id, metadata)
         select t.transaction_id, $1, 'deduction', 1, $2::int8 + $3::int8 - t.position, t.reason, t.job_id, '{}'
         from unnest($4::uuid[], $5::uuid[], $6::text[])
             with ordinality as t(transaction_id, job_id, reason, position)
         order by t.position",
        team_id,
        remaining,
        charges,
        &transaction_ids[..],
        &job_ids[..],
        &reasons[..]
    )
    .execute(conn)
    .await?;
    Ok(())
}
