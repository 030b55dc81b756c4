//! Dates outside what PostgreSQL can hold: a 400 naming the parameter, never a 500.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;

use crate::helpers::spawn_app;

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn usage_dates_outside_years_2000_to_9999_are_400_naming_the_parameter(db: PgPool) {
    let app = spawn_app(db.clone()).await;
    app.create_org("org_a").await;
    app.create_team("org_a", "team_a", &[], 10).await;

    // The far-out date fails the YYYY-MM-DD shape already; the others the year bounds.
    for (query, field, problem) in [
        (
            "from=-262143-01-01&to=2025-01-01",
            "from",
            "expected YYYY-MM-DD",
        ),
        (
            "from=2025-01-01&to=0999-01-01",
            "to",
            "between 2000 and 9999",
        ),
        (
            "from=1999-12-31&to=2000-01-01",
            "from",
            "between 2000 and 9999",
        ),
        ("period=1999-12", "period", "between 2000 and 9999"),
    ] {
        for path in ["/api/teams/team_a/usage", "/api/organizations/org_a/usage"] {
            let detail = app
                .admin_refused(
                    Method::GET,
                    &format!("{path}?{query}"),
                    None,
                    StatusCode::BAD_REQUEST,
                )
                .await;
            assert!(
                detail.starts_with(&format!("Invalid {field} ")) && detail.contains(problem),
                "{query}: {detail}"
            );
        }
    }
    let edge = app
        .admin(
            Method::GET,
            "/api/teams/team_a/usage?from=9999-12-01&to=9999-12-31",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(edge.status(), StatusCode::OK);
}
