//! Credits: balance, add (admin), check, and the ledger.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::credits::{TransactionRow, TransactionType};
use saasllm_shared::domain::money::{MicroUsd, Usd};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audited::commit_recorded;
use crate::auth::{AdminAuth, Caller, team_not_found};
use crate::credits_view::{BALANCE_WRITE_WAIT, CreditsView, MAX_CREDITS_PER_REQUEST};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query, RawBody, parse_json_object};
use crate::lookup;
use crate::state::AppState;
use crate::validate;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(balance))
        .routes(routes!(add))
        .routes(routes!(check))
        .routes(routes!(transactions))
}

#[derive(Serialize, ToSchema)]
struct BalanceResponse {
    team_id: String,
    #[serde(flatten)]
    credits: CreditsView,
    /// USD budget of the OpenAI-compatible path: credits_allocated x USD_PER_CREDIT.
    budget_usd: Usd,
    spend_usd: Usd,
    /// Budget held for requests in flight and parked in API processes' budget slices (given
    /// back when idle or when another process needs it).
    budget_reserved_usd: Usd,
}

/// The team's credits, and its USD budget and spend on the OpenAI-compatible path.
#[utoipa::path(
    get,
    path = "/api/credits/teams/{team_id}/balance",
    tag = "credits",
    params(("team_id" = String, Path)),
    responses((status = 200, description = "The balance", body = BalanceResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn balance(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<JsonResponse<BalanceResponse>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    state.budgets.written(BALANCE_WRITE_WAIT).await;
    let balance = lookup::balance(&state.db, &team_id).await?;
    let budget = MicroUsd(
        balance
            .credits_allocated
            .saturating_mul(state.settings.usd_per_credit.0),
    );
    Ok(JsonResponse(BalanceResponse {
        credits: CreditsView::from(&balance),
        budget_usd: budget.usd(),
        spend_usd: MicroUsd(balance.spend_micro_usd).usd(),
        budget_reserved_usd: MicroUsd(balance.budget_reserved_micro_usd).usd(),
        team_id,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddCredits {
    /// 1..=1,000,000,000 (`credits` is accepted as an alias).
    #[serde(
        alias = "credits",
        deserialize_with = "crate::extract::whole_number::required"
    )]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    credits_amount: i64,
    reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
struct TransactionView {
    transaction_id: Uuid,
    team_id: String,
    transaction_type: TransactionType,
    credits_amount: i64,
    balance_after: i64,
    reason: Option<String>,
    job_id: Option<Uuid>,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
}

impl From<TransactionRow> for TransactionView {
    fn from(t: TransactionRow) -> Self {
        Self {
            transaction_id: t.transaction_id,
            team_id: t.team_id,
            transaction_type: t.transaction_type,
            credits_amount: t.credits_amount,
            balance_after: t.balance_after,
            reason: t.reason,
            job_id: t.job_id,
            metadata: t.metadata,
            created_at: t.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct AddResponse {
    team_id: String,
    credits_added: i64,
    #[serde(flatten)]
    credits: CreditsView,
    transaction: TransactionView,
    message: String,
}

/// Adds credits (admin): one conditional balance update and one ledger row.
#[utoipa::path(
    post,
    path = "/api/credits/teams/{team_id}/add",
    tag = "credits",
    params(("team_id" = String, Path), crate::openapi::IdempotencyHeader),
    request_body = AddCredits,
    responses(
        (status = 200, description = "The new balance and the ledger row", body = AddResponse),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn add(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Json(body): Json<AddCredits>,
) -> Result<JsonResponse<AddResponse>, ApiError> {
    if !(1..=MAX_CREDITS_PER_REQUEST).contains(&body.credits_amount) {
        return Err(ApiError::BadRequest(format!(
            "credits_amount must be a whole number between 1 and {MAX_CREDITS_PER_REQUEST}"
        )));
    }
    let metadata = validate::metadata(body.metadata)?;
    let reason = body.reason.unwrap_or_else(|| "Credits added".to_owned());
    let mut tx = state.db.begin().await?;
    let (balance, transaction) = db::credits::allocate(
        &mut tx,
        &team_id,
        body.credits_amount,
        TransactionType::Addition,
        Some(&reason),
        &metadata,
    )
    .await?
    .ok_or_else(|| team_not_found(&team_id))?;
    // The allocation added exactly `credits_amount` under the row's lock: the counters before
    // it follow from those after it.
    let counters = |allocated: i64, remaining: i64| serde_json::json!({"credits_allocated": allocated, "credits_remaining": remaining});
    let mut after = counters(balance.credits_allocated, balance.remaining());
    after["transaction_id"] = serde_json::json!(transaction.transaction_id);
    commit_recorded(
        &admin,
        tx,
        "credits.add",
        ("team", &team_id),
        Some(counters(
            balance.credits_allocated - body.credits_amount,
            balance.remaining() - body.credits_amount,
        )),
        Some(after),
    )
    .await?;
    tracing::info!(
        credits = body.credits_amount,
        balance_after = transaction.balance_after,
        "credits added"
    );
    Ok(JsonResponse(AddResponse {
        team_id,
        credits_added: body.credits_amount,
        credits: CreditsView::from(&balance),
        transaction: transaction.into(),
        message: format!("Added {} credits", body.credits_amount),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CheckCredits {
    #[serde(
        default = "one",
        alias = "credits_needed",
        deserialize_with = "crate::extract::whole_number::required"
    )]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    credits_required: i64,
}

fn one() -> i64 {
    1
}

#[derive(Serialize, ToSchema)]
struct CheckResponse {
    team_id: String,
    available: bool,
    credits_required: i64,
    credits_remaining: i64,
    credits_available: i64,
}

/// Whether the team can start jobs costing `credits_required`. The body is optional (default 1).
#[utoipa::path(
    post,
    path = "/api/credits/teams/{team_id}/check",
    tag = "credits",
    params(("team_id" = String, Path)),
    request_body(content = Option<CheckCredits>, description = "Optional; `credits_required` defaults to 1"),
    responses((status = 200, description = "Whether enough credits are available", body = CheckResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn check(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<JsonResponse<CheckResponse>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    // The body is optional: none at all and a JSON `null` both mean the defaults. A body of
    // only whitespace is neither, and is refused like any other malformed JSON.
    if !body.is_empty() && body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "Malformed JSON: the body holds only whitespace; send a JSON object or no body at all"
                .into(),
        ));
    }
    let request = match body.is_empty() {
        true => None,
        false => parse_json_object::<Option<CheckCredits>>(&body)?,
    }
    .unwrap_or(CheckCredits {
        credits_required: 1,
    });
    if !(1..=MAX_CREDITS_PER_REQUEST).contains(&request.credits_required) {
        return Err(ApiError::BadRequest(format!(
            "credits_required must be between 1 and {MAX_CREDITS_PER_REQUEST}"
        )));
    }
    let balance = lookup::balance(&state.db, &team_id).await?;
    Ok(JsonResponse(CheckResponse {
        team_id,
        available: balance.available() >= request.credits_required,
        credits_required: request.credits_required,
        credits_remaining: balance.remaining(),
        credits_available: balance.available(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// 1..=1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct TransactionsResponse {
    team_id: String,
    total_transactions: i64,
    limit: i64,
    offset: i64,
    transactions: Vec<TransactionView>,
}

/// The team's credit ledger, newest first.
#[utoipa::path(
    get,
    path = "/api/credits/teams/{team_id}/transactions",
    tag = "credits",
    params(("team_id" = String, Path), PageQuery),
    responses((status = 200, description = "A page of ledger rows", body = TransactionsResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn transactions(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<JsonResponse<TransactionsResponse>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    let (limit, offset) = validate::page(page.limit, page.offset, 50)?;
    lookup::team(&state.db, &team_id).await?;
    let (rows, total) = tokio::try_join!(
        db::credits::list_transactions(&state.db, &team_id, limit, offset),
        db::credits::count_transactions(&state.db, &team_id),
    )?;
    Ok(JsonResponse(TransactionsResponse {
        team_id,
        total_transactions: total,
        limit,
        offset,
        transactions: rows.into_iter().map(Into::into).collect(),
    }))
}
