//! The bodies of the team-settings PUTs and how each is checked.

use saasllm_shared::domain::periods::Period;
use saasllm_shared::domain::webhook;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::MAX_CALLBACK_URL_LEN;

/// Largest scheduled grant, per period.
const MAX_GRANT_CREDITS: i64 = 1_000_000;
/// Largest `credits_below`.
const MAX_CREDITS_BELOW: i64 = 1_000_000_000;

/// The body of `PUT /api/teams/{team_id}/alerts`. Alerts are on while a threshold is set; a
/// field left out is the same as null.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsBody {
    /// `false` turns alerts off (the thresholds and `url` must then be left out or null).
    enabled: Option<bool>,
    /// http(s) URL the events are POSTed to; required with a threshold. Checked like a job's
    /// `callback_url`.
    #[schema(max_length = 2048)]
    url: Option<String>,
    /// Fires `team.credits_low` when available credits go below this (1..=1,000,000,000).
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    credits_below: Option<i64>,
    /// Fires `team.budget_threshold` when /v1 spend reaches this percent of the budget (1..=100).
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 100)]
    budget_spend_pct: Option<i64>,
    /// Signing secret, `whsec_` + base64 of 16 to 64 bytes; generated for a team's first alerts
    /// when left out, kept afterwards.
    secret: Option<String>,
    /// Replace the secret with a new generated one.
    #[serde(default)]
    rotate_secret: bool,
}

/// An alerts body, checked.
pub(super) struct AlertsAsked<'a> {
    /// A threshold is set.
    pub(super) on: bool,
    pub(super) url: Option<&'a str>,
    pub(super) credits_below: Option<i64>,
    pub(super) budget_spend_pct: Option<i16>,
    /// The secret the body gives, if any.
    pub(super) given_secret: Option<String>,
    pub(super) rotate_secret: bool,
}

impl AlertsBody {
    /// The body checked: each field, and that they fit together.
    pub(super) fn check<'a>(&'a self, state: &AppState) -> Result<AlertsAsked<'a>, ApiError> {
        let (credits_below, budget_spend_pct) = thresholds(self)?;
        let on = credits_below.is_some() || budget_spend_pct.is_some();
        match (self.enabled, on) {
            (Some(false), true) => {
                return Err(ApiError::BadRequest(
                    "enabled is false: leave out credits_below and budget_spend_pct".into(),
                ));
            }
            (Some(true), false) => {
                return Err(ApiError::BadRequest(
                    "enabled is true but no threshold is set: give credits_below and/or budget_spend_pct".into(),
                ));
            }
            _ => {}
        }
        if !on && (self.url.is_some() || self.secret.is_some() || self.rotate_secret) {
            return Err(ApiError::BadRequest(
                "alerts are off (no threshold set): leave out url, secret and rotate_secret".into(),
            ));
        }
        let url = match (&self.url, on) {
            (Some(url), _) => Some(alert_url(url, state)?),
            (None, true) => {
                return Err(ApiError::BadRequest(
                    "url is required when a threshold is set".into(),
                ));
            }
            (None, false) => None,
        };
        let given_secret = match (&self.secret, self.rotate_secret) {
            (Some(_), true) => {
                return Err(ApiError::BadRequest(
                    "give either secret or rotate_secret, not both".into(),
                ));
            }
            (Some(secret), false) => {
                webhook::parse_secret(secret).map_err(|e| {
                    ApiError::BadRequest(e.to_string().replace("callback_secret", "secret"))
                })?;
                Some(secret.clone())
            }
            (None, _) => None,
        };
        Ok(AlertsAsked {
            on,
            url,
            credits_below,
            budget_spend_pct,
            given_secret,
            rotate_secret: self.rotate_secret,
        })
    }
}

/// The thresholds asked for, each checked; alerts are on while either is set.
fn thresholds(body: &AlertsBody) -> Result<(Option<i64>, Option<i16>), ApiError> {
    let credits_below = body
        .credits_below
        .map(|n| match (1..=MAX_CREDITS_BELOW).contains(&n) {
            true => Ok(n),
            false => Err(ApiError::BadRequest(format!(
                "credits_below must be between 1 and {MAX_CREDITS_BELOW}, or null"
            ))),
        })
        .transpose()?;
    let budget_spend_pct = body
        .budget_spend_pct
        .map(|n| match i16::try_from(n) {
            Ok(pct) if (1..=100).contains(&pct) => Ok(pct),
            _ => Err(ApiError::BadRequest(
                "budget_spend_pct must be between 1 and 100, or null".into(),
            )),
        })
        .transpose()?;
    Ok((credits_below, budget_spend_pct))
}

/// A checked alert URL: the job callback rules (absolute http(s), at most 2048 characters, no
/// credentials, no non-public address literal or internal host name under the deployment's
/// webhook target policy).
fn alert_url<'a>(value: &'a str, state: &AppState) -> Result<&'a str, ApiError> {
    if value.len() > MAX_CALLBACK_URL_LEN {
        return Err(ApiError::BadRequest(format!(
            "url must be at most {MAX_CALLBACK_URL_LEN} characters"
        )));
    }
    let parsed = url::Url::parse(value)
        .map_err(|_| ApiError::BadRequest("url must be an absolute http or https URL".into()))?;
    state
        .settings
        .webhook_targets
        .check_url(&parsed)
        .map_err(|refusal| ApiError::BadRequest(format!("url {refusal}")))?;
    Ok(value)
}

/// The body of `PUT /api/teams/{team_id}/refills`; a field left out is the same as null (off).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefillsBody {
    /// `{"credits": 1..=1000000, "period": "1d" | "7d" | "30d" | "1mo"}`: credits added at every
    /// period boundary (ledger rows of type `refill`); null for none.
    #[schema(value_type = Option<Object>, example = json!({"credits": 100, "period": "1mo"}))]
    credit_grant: Option<Value>,
    /// `1d`, `7d`, `30d` or `1mo`: the team's /v1 spend goes back to 0 every period; null for a
    /// budget that never resets.
    #[schema(example = "30d")]
    budget_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditGrantBody {
    #[serde(deserialize_with = "crate::extract::whole_number::required")]
    credits: i64,
    period: String,
}

/// A refills body, checked: the grant's credits and period, and the budget period.
pub(super) type RefillsAsked = (Option<(i64, Period)>, Option<Period>);

impl RefillsBody {
    /// The grant (credits and period) and budget period asked for, each checked; `None` is off.
    pub(super) fn check(&self) -> Result<RefillsAsked, ApiError> {
        let grant = match &self.credit_grant {
            None | Some(Value::Null) => None,
            Some(value) => {
                let grant: CreditGrantBody = object_body("credit_grant", value.clone())?;
                if !(1..=MAX_GRANT_CREDITS).contains(&grant.credits) {
                    return Err(ApiError::BadRequest(format!(
                        "credit_grant.credits must be between 1 and {MAX_GRANT_CREDITS}"
                    )));
                }
                Some((grant.credits, period("credit_grant.period", &grant.period)?))
            }
        };
        let budget = self
            .budget_duration
            .as_deref()
            .map(|text| period("budget_duration", text))
            .transpose()?;
        Ok((grant, budget))
    }
}

/// A body that must be a JSON object: serde would also read a struct from an array.
fn object_body<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!(
            "{field} must be a JSON object"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("Invalid request body: {e}")))
}

fn period(field: &str, text: &str) -> Result<Period, ApiError> {
    Period::parse(text).map_err(|e| {
        let shown: String = text.chars().take(40).collect();
        ApiError::BadRequest(format!("{field} {e} (got '{shown}')"))
    })
}
