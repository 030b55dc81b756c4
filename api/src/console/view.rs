//! The console's page frame and the small pieces every page uses: navigation, forms with their
//! CSRF token, numbers, money and times. Pages are plain HTML that reads without JavaScript;
//! htmx (vendored) only makes links and forms swap the page body instead of reloading.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;
use uuid::Uuid;

use crate::console::session::Session;
use crate::error::ApiError;

/// What the page frame needs: who is signed in (navigation, sign-out form) and the title.
pub struct Page<'a> {
    pub session: &'a Session,
    pub title: String,
    /// The navigation entry to highlight.
    pub section: &'static str,
    /// A message about the action just done (or refused).
    pub notice: Option<Notice>,
}

/// The outcome of an action, shown above the page.
pub enum Notice {
    Done(String),
    Refused(String),
}

const ADMIN_SECTIONS: [(&str, &str); 7] = [
    ("overview", "/console"),
    ("organizations", "/console/organizations"),
    ("teams", "/console/teams"),
    ("model groups", "/console/model-groups"),
    ("jobs", "/console/jobs"),
    ("usage", "/console/usage"),
    ("webhooks", "/console/webhooks"),
];
const TEAM_SECTIONS: [(&str, &str); 4] = [
    ("overview", "/console"),
    ("jobs", "/console/jobs"),
    ("usage", "/console/usage"),
    ("model groups", "/console/model-groups"),
];

impl Page<'_> {
    /// The whole page around `content`.
    pub fn render(self, content: Markup) -> Response {
        let sections: &[(&str, &str)] = if self.session.is_admin() {
            &ADMIN_SECTIONS
        } else {
            &TEAM_SECTIONS
        };
        let who = match &self.session.caller {
            crate::auth::Caller::Team { team_id, .. } => format!("team {team_id}"),
            crate::auth::Caller::Admin(admin) => format!("admin {} ({})", admin.name, admin.role),
        };
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                (head(&self.title))
                body hx-boost="true" {
                    header.top {
                        a.brand href="/console" { "SaaS LiteLLM" }
                        nav {
                            @for (name, href) in sections {
                                a href=(href) class=[(*name == self.section).then_some("active")] { (name) }
                            }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            (csrf(self.session))
                            span.who { (who) }
                            button type="submit" { "Sign out" }
                        }
                    }
                    main {
                        h1 { (self.title) }
                        @match &self.notice {
                            Some(Notice::Done(text)) => p.notice.done role="status" { (text) },
                            Some(Notice::Refused(text)) => p.notice.refused role="alert" { (text) },
                            None => {},
                        }
                        (content)
                    }
                }
            }
        };
        html_response(StatusCode::OK, markup)
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // The default indicator style is an inline <style>, which the page's CSP refuses;
            // error pages (4xx) are shown like any other, as they are without JavaScript; and
            // no page is kept in the browser's session storage for the back button (a new key,
            // or any page after sign-out, would outlive `Cache-Control: no-store` there).
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"historyCacheSize":0,"refreshOnHistoryMiss":true,"responseHandling":[{"code":"204","swap":false},{"code":".*","swap":true}]}"#;
            title { (title) " · SaaS LiteLLM" }
            link rel="stylesheet" href=(*super::assets::STYLESHEET);
            script src=(super::assets::HTMX) defer {}
        }
    }
}

/// A page as a response, with the console's security headers.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    set_headers(
        response.headers_mut(),
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Not `no-referrer`: with it Chromium sends `Origin: null` on the console's own form
            // posts, which the origin check must refuse.
            (header::REFERRER_POLICY, "same-origin"),
        ],
    );
    response
}

/// Sets fixed response headers.
pub fn set_headers<const N: usize>(
    headers: &mut HeaderMap,
    pairs: [(HeaderName, &'static str); N],
) {
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// The sign-in page, with why the last attempt or session ended, if it did.
pub fn sign_in_page(message: Option<&str>) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.signin {
                main {
                    h1 { "SaaS LiteLLM console" }
                    @if let Some(message) = message { p.notice.refused role="alert" { (message) } }
                    form method="post" action="/console/sign-in" {
                        label for="key" { "Admin key or team key" }
                        input #key type="password" name="key" autocomplete="off" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                    p.hint { "The admin key manages every tenant; a team's virtual key shows that team only." }
                    // The landing page of a browser opening `/`: where the rest of the service is.
                    nav.hint aria-label="Service" {
                        a href="/docs" { "API reference" } " · "
                        a href="/openapi.json" { "OpenAPI document" } " · "
                        a href="/health" { "Health" }
                    }
                }
            }
        }
    };
    html_response(StatusCode::OK, markup)
}

/// An error as a page with its status (the JSON API's `detail`, shown to a person).
pub fn error_page(error: &ApiError) -> Response {
    let status = error.status();
    let detail = if status.is_server_error() {
        "Something went wrong on our side; try again.".to_owned()
    } else {
        error.to_string()
    };
    if status.is_server_error() {
        tracing::error!(error = ?error, "console request failed");
    }
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Error"))
            body {
                main {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or_default()) }
                    p.notice.refused role="alert" { (detail) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    };
    html_response(status, markup)
}

/// The hidden CSRF field every form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token); }
}

/// A fresh idempotency key for a form that moves money or creates something: submitting the
/// same rendered form twice has one effect.
pub fn idempotency_field() -> Markup {
    html! { input type="hidden" name="idempotency_key" value=(Uuid::new_v4()); }
}

/// Micro-dollars as USD: cents for amounts of a cent or more, else every digit.
pub fn usd(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let micro = micro.unsigned_abs();
    if micro >= 10_000 || micro == 0 {
        let cents = (micro + 5_000) / 10_000;
        format!("{sign}${}.{:02}", thousands(cents / 100), cents % 100)
    } else {
        format!("{sign}${}.{:06}", micro / 1_000_000, micro % 1_000_000)
    }
}

/// A USD amount the JSON API gave as a number of dollars.
pub fn usd_of(value: &serde_json::Value) -> String {
    value.as_f64().map_or_else(
        || "–".to_owned(),
        |usd| self::usd((usd * 1_000_000.0).round() as i64),
    )
}

/// A count with thousands separators.
pub fn count(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", thousands(n.unsigned_abs()))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time in UTC, to the second.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, or a dash.
pub fn maybe_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "–".to_owned(), time)
}

/// A duration in seconds, short.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3_600),
    }
}

/// An optional value, or a dash.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

/// Raw markup for the few places that build their own (the SVG charts).
pub fn raw(text: String) -> PreEscaped<String> {
    PreEscaped(text)
}

/// A failure shown as the error page (see `error_page`), so that a page can stop at its first
/// failure with `?`.
pub struct ErrorPage(ApiError);

impl<E: Into<ApiError>> From<E> for ErrorPage {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        error_page(&self.0)
    }
}

/// A page, or the error page of what kept it from being made.
pub type PageResult = Result<Response, ErrorPage>;

/// Only the admin manages tenants: for a team, the same 404 page as for a page that is not
/// there.
pub fn admin_only(session: &Session) -> Result<(), ErrorPage> {
    match session.is_admin() {
        true => Ok(()),
        false => Err(ApiError::NotFound("No such page".into()).into()),
    }
}

/// Tells htmx which address the rendered page belongs to (an action's answer is its page).
pub fn pushed(mut response: Response, url: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(url) {
        response.headers_mut().insert("hx-push-url", value);
    }
    response
}

/// A JSON value as text (strings without quotes, null as a dash).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "–".to_owned(),
        other => other.to_string(),
    }
}

/// A refusal of the API as an error page with the same status.
pub fn refused(refusal: crate::console::dispatch::Refusal) -> ErrorPage {
    let error = match refusal.status {
        404 => ApiError::NotFound(refusal.detail),
        403 => ApiError::Forbidden(refusal.detail),
        401 => ApiError::Unauthorized(refusal.detail),
        409 => ApiError::Conflict(refusal.detail),
        status if status >= 500 => ApiError::Unavailable(refusal.detail),
        _ => ApiError::BadRequest(refusal.detail),
    };
    ErrorPage(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_counts_read_as_people_write_them() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_234_567_890), "$1,234.57");
        assert_eq!(usd(10_000), "$0.01");
        assert_eq!(usd(123), "$0.000123");
        assert_eq!(usd(-2_500_000), "-$2.50");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(999), "999");
        assert_eq!(count(-12_345), "-12,345");
    }
}
