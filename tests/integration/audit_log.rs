//! The audit log: every successful admin change appends exactly one row (who, what, which
//! object, before and after, the request id) in the change's own transaction; refused requests
//! and changes that change nothing append none; the database refuses to alter a row; and
//! `GET /api/audit` filters and pages newest first.

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::helpers::app::{TestApp, count, ok_json};

mod changes;
mod listing;
mod refusals;
mod settings;

/// The audit log as one test has seen it: its row count so far, so each change can be checked
/// to add exactly one row (and a refused or empty change none).
struct Trail<'a> {
    app: &'a TestApp,
    rows: i64,
}

impl<'a> Trail<'a> {
    async fn start(app: &'a TestApp) -> Self {
        let rows = count(&app.db, "select count(*) from audit_log").await;
        Trail { app, rows }
    }

    /// Makes the change with our own request id and checks it left exactly one row naming
    /// `action`, `target` and that id; returns the response body and the row.
    async fn logged(
        &mut self,
        request: RequestBuilder,
        request_id: &str,
        action: &str,
        target: (&str, &str),
    ) -> (Value, Value) {
        let body = change(request, request_id).await;
        let row = self.one_new_row().await;
        assert_row(&row, action, target, request_id);
        (body, row)
    }

    /// The newest row, as the API shows it, after checking the log grew by exactly one row.
    async fn one_new_row(&mut self) -> Value {
        let rows = count(&self.app.db, "select count(*) from audit_log").await;
        assert_eq!(rows, self.rows + 1, "exactly one row per change");
        self.rows = rows;
        let page = audit_page(self.app, "?limit=1").await;
        page["entries"][0].clone()
    }

    /// Asserts the log has not grown since the last row counted.
    async fn no_new_row(&self) {
        assert_eq!(
            count(&self.app.db, "select count(*) from audit_log").await,
            self.rows
        );
    }
}

/// Sends with a request id of our own and asserts a 2xx.
async fn change(request: RequestBuilder, request_id: &str) -> Value {
    let response = request
        .header("X-Request-Id", request_id)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{status} {body}");
    body
}

async fn audit_page(app: &TestApp, query: &str) -> Value {
    ok_json(
        app.admin(Method::GET, &format!("/api/audit{query}"))
            .send()
            .await,
    )
    .await
}

fn assert_row(row: &Value, action: &str, target: (&str, &str), request_id: &str) {
    assert_eq!(row["action"], action, "{row}");
    assert_eq!(row["target_type"], target.0, "{row}");
    assert_eq!(row["target_id"], target.1, "{row}");
    assert_eq!(row["request_id"], request_id, "{row}");
}
