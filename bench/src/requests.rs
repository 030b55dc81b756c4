//! The requests the scenarios send: the benchmark's chat, how an answer is checked, and the
//! context every request needs (client, the API, the fake upstream, the teams).

use std::sync::Arc;

use anyhow::bail;
use futures::FutureExt;
use serde_json::{Value, json};

use crate::load::{Op, Steps};
use crate::teams::Teams;
use crate::{GROUP, MODEL};

pub fn chat_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarize the benchmark in one sentence."}],
    })
}

/// The same chat, addressed to the model group (the body of an llm-call on a job).
pub fn group_call_body() -> Value {
    let mut body = chat_body();
    body["model_group"] = json!(GROUP);
    if let Some(o) = body.as_object_mut() {
        o.remove("model");
    }
    body
}

/// Sends a request and turns a non-2xx status (or a transport error) into an error.
pub async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// What the scenarios against the run's API and fake upstream send their requests with.
pub struct Ctx {
    pub client: reqwest::Client,
    pub api: String,
    pub fake: String,
    pub teams: Arc<Teams>,
}

/// A non-streaming chat completion at `{base}/v1/chat/completions`: with the key of the next
/// team in turn when `teams` is given (through the API), else with `key` if any (an upstream).
pub fn chat_op(
    client: &reqwest::Client,
    base: &str,
    teams: Option<Arc<Teams>>,
    key: Option<String>,
) -> Op {
    let client = client.clone();
    let url = format!("{base}/v1/chat/completions");
    Arc::new(move |_| {
        let mut req = client.post(&url).json(&chat_body());
        if let Some(teams) = &teams {
            req = req.bearer_auth(&teams.next().key);
        } else if let Some(key) = &key {
            req = req.bearer_auth(key);
        }
        async move {
            send(req).await?;
            Ok(Steps::new())
        }
        .boxed()
    })
}

impl Ctx {
    /// The chat sent to the fake upstream directly: every scenario's baseline.
    pub fn direct_op(&self) -> Op {
        chat_op(&self.client, &self.fake, None, None)
    }

    /// The chat sent to `/v1` through the API, with the teams' keys in turn.
    pub fn via_api_op(&self) -> Op {
        chat_op(&self.client, &self.api, Some(Arc::clone(&self.teams)), None)
    }
}
