//! USD amounts in responses are rounded to the micro-dollar: an average of 259 micro-dollars over
//! three jobs is 0.000086, never 0.00008633333333333334.

use chrono::{Datelike, Utc};
use reqwest::{Method, RequestBuilder};
use sqlx::PgPool;

use crate::helpers::app::{assert_ledger_consistent, ok_json};
use crate::helpers::stack::{chat, spawn_stack};

/// Every USD number in a JSON text (fields named `*_usd`, and `avg_cost_per_job`), as written.
fn usd_numbers(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let key = &after[..end];
        let tail = after[end + 1..].trim_start();
        rest = &after[end + 1..];
        let is_usd = key.ends_with("_usd") || key == "avg_cost_per_job";
        if let (true, Some(value)) = (is_usd, tail.strip_prefix(':')) {
            let value = value.trim_start();
            let number: String = value
                .chars()
                .take_while(|c| c.is_ascii_digit() || "-+.eE".contains(*c))
                .collect();
            if !number.is_empty() {
                found.push((key.to_owned(), number));
            }
        }
    }
    found
}

/// Decimal places a JSON number shows once written out in full (`8.6e-5` has 6).
fn decimals(number: &str) -> i64 {
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().expect("exponent")),
        None => (number, 0),
    };
    let fraction = mantissa
        .split_once('.')
        .map_or("", |(_, f)| f.trim_end_matches('0'));
    (fraction.len() as i64 - exponent).max(0)
}

/// The raw body of a successful report request (raw, to see numbers as the API wrote them).
async fn report_text(request: RequestBuilder) -> String {
    let response = request.send().await.expect("report request");
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.expect("report body")
}

#[test]
fn decimals_are_counted_with_the_exponent() {
    for (number, places) in [
        ("0.000086", 6),
        ("8.6e-5", 6),
        ("1e-6", 6),
        ("0.00008633333333333334", 20),
        ("0.0", 0),
        ("12", 0),
        ("1.5E2", 0),
    ] {
        assert_eq!(decimals(number), places, "{number}");
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn usage_reports_round_usd_to_the_micro_dollar(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    // The fake upstream reports the cost its model name asks for: 86 + 86 + 87 = 259.
    let groups: &[(&str, &[&str])] = &[("Cost86", &["cost-86"]), ("Cost87", &["cost-87"])];
    let key = stack.team("team_micro", 10, groups).await;
    for group in ["Cost86", "Cost86", "Cost87"] {
        let job = stack.create_job(&key, "team_micro").await;
        ok_json(Ok(stack
            .llm_call(&key, &job, chat(group, "price me"))
            .await))
        .await;
        ok_json(Ok(stack.complete(&key, &job, "completed").await)).await;
    }

    let now = Utc::now();
    let period = format!("{}-{:02}", now.year(), now.month());
    let team = report_text(stack.app.with_key(
        &key,
        Method::GET,
        &format!("/api/teams/team_micro/usage?period={period}"),
    ))
    .await;
    let org = report_text(stack.app.admin(
        Method::GET,
        &format!("/api/organizations/org_team_micro/usage?period={period}"),
    ))
    .await;

    // Summary (total, average), one job type, the /v1 total (no endpoint used), one day; the
    // organization adds the team's block (summary, job type, /v1 total).
    let team_fields = usd_numbers(&team);
    let org_fields = usd_numbers(&org);
    assert_eq!(team_fields.len(), 5, "{team}");
    assert_eq!(org_fields.len(), 9, "{org}");
    for (key, number) in team_fields.iter().chain(&org_fields) {
        assert!(
            decimals(number) <= 6,
            "{key} = {number} has more than 6 decimals"
        );
    }

    let team: serde_json::Value = serde_json::from_str(&team).expect("team report JSON");
    assert_eq!(team["summary"]["total_jobs"], 3);
    assert_eq!(team["summary"]["total_cost_usd"], 0.000259);
    assert_eq!(team["summary"]["avg_cost_per_job"], 0.000086);
    assert_eq!(team["job_types"]["document_analysis"]["cost_usd"], 0.000259);
    assert_eq!(team["daily"][0]["total_cost_usd"], 0.000259);
    let org: serde_json::Value = serde_json::from_str(&org).expect("organization report JSON");
    assert_eq!(org["summary"]["avg_cost_per_job"], 0.000086);
    assert_eq!(
        org["teams"]["team_micro"]["summary"]["avg_cost_per_job"],
        0.000086
    );

    // The report is the database's micro-dollars: three settled jobs, 259 in all, 3 credits.
    let (jobs, cost, charged): (i64, i64, i64) = sqlx::query_as(
        "select count(*), sum(calls_cost_micro_usd)::int8,
                (select count(*) from credit_transactions t where t.team_id = 'team_micro' and t.transaction_type = 'deduction')
         from jobs where team_id = 'team_micro' and status = 'completed'",
    )
    .fetch_one(&db)
    .await
    .expect("settled jobs");
    assert_eq!((jobs, cost, charged), (3, 259, 3));
    assert_ledger_consistent(&db, "team_micro").await;
}
