//! The `passthrough` scenario: `/v1/chat/completions` through the API against the fake upstream
//! called directly, plain (with a paired run at c=1, see [`upstreams::paired_op`]) and streamed.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::load::Op;
use crate::report::{Results, keep_compared, print_step, target};
use crate::requests::{Ctx, chat_body};
use crate::stack::Session;
use crate::upstreams;

/// The step of a streamed chat: the time to the first chunk of the body.
const FIRST_BYTE: &str = "first byte";

impl Ctx {
    /// A streamed chat completion from `base` (the API with the team key, or the fake upstream
    /// directly): step `first byte` is the time to the first chunk of the body.
    fn stream_op(self: &Arc<Self>, via_api: bool) -> Op {
        let ctx = Arc::clone(self);
        Arc::new(move |_| {
            let ctx = Arc::clone(&ctx);
            async move {
                let started = Instant::now();
                let base = if via_api { &ctx.api } else { &ctx.fake };
                let mut body = chat_body();
                body["stream"] = json!(true);
                let mut req = ctx
                    .client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body);
                if via_api {
                    req = req.bearer_auth(&ctx.teams.next().key);
                }
                let mut resp = req.send().await?;
                if !resp.status().is_success() {
                    bail!("HTTP {}", resp.status());
                }
                let mut first_byte = None;
                let mut tail = Vec::new();
                while let Some(chunk) = resp.chunk().await? {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    tail.extend_from_slice(&chunk);
                    // Only the end matters: it must close with the `[DONE]` event.
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
                if !String::from_utf8_lossy(&tail).contains("[DONE]") {
                    bail!("the stream ended without [DONE]");
                }
                Ok(vec![(
                    FIRST_BYTE,
                    first_byte.context("the stream had no body")?,
                )])
            }
            .boxed()
        })
    }
}

/// Plain, then streamed; the API's peak memory over both.
pub async fn run(s: &Session<'_>, results: &mut Results) -> anyhow::Result<()> {
    s.reset_peak();
    plain(s, results).await?;
    streamed(s, results).await?;
    results
        .peaks
        .insert("passthrough".into(), json!(s.peak_mib()));
    Ok(())
}

async fn plain(s: &Session<'_>, results: &mut Results) -> anyhow::Result<()> {
    let mut by_c = Vec::new();
    let [first_c, _] = s.plan.passthrough_concurrency;
    for c in s.plan.passthrough_concurrency {
        let direct = s
            .run("passthrough: upstream direct", c, s.ctx.direct_op())
            .await?;
        let via = s
            .run("passthrough: /v1 via api", c, s.ctx.via_api_op())
            .await?;
        results.targets.push(if c == first_c {
            let added_p99 = via.ms(0.99) - direct.ms(0.99);
            target(
                format!("passthrough added p99, c={c}"),
                added_p99,
                "ms",
                "<=",
                1.0,
            )
        } else {
            target(
                format!("passthrough req/s, c={c}"),
                via.per_sec(),
                "req/s",
                ">=",
                5000.0,
            )
        });
        by_c.push(Value::Object(keep_compared(&mut results.runs, direct, via)));
        if c == 1 {
            let op = upstreams::paired_op(s.ctx.direct_op(), s.ctx.via_api_op());
            let both = s
                .measure
                .run("passthrough: paired, direct + api", c, op)
                .await?;
            upstreams::print_paired(&both);
            results.scenarios.insert(
                "passthrough_paired_c1".into(),
                upstreams::paired_json(&both),
            );
            results.runs.push(both);
        }
    }
    results.scenarios.insert("passthrough".into(), json!(by_c));
    Ok(())
}

/// The same request with "stream": true; first byte = first chunk of the body.
async fn streamed(s: &Session<'_>, results: &mut Results) -> anyhow::Result<()> {
    let mut by_c = Vec::new();
    for c in s.plan.passthrough_concurrency {
        let direct = s
            .run("stream: upstream direct", c, s.ctx.stream_op(false))
            .await?;
        print_step(&direct, FIRST_BYTE);
        let via = s
            .run("stream: /v1 via api", c, s.ctx.stream_op(true))
            .await?;
        print_step(&via, FIRST_BYTE);
        let added_first = |q| via.step_ms(FIRST_BYTE, q) - direct.step_ms(FIRST_BYTE, q);
        let first_byte = [
            ("first_byte_added_p50_ms", added_first(0.5)),
            ("first_byte_added_p99_ms", added_first(0.99)),
            ("first_byte_p50_ms", via.step_ms(FIRST_BYTE, 0.5)),
            ("first_byte_p99_ms", via.step_ms(FIRST_BYTE, 0.99)),
        ];
        let mut row = keep_compared(&mut results.runs, direct, via);
        for (name, value) in first_byte {
            row.insert(name.into(), json!(value));
        }
        by_c.push(Value::Object(row));
    }
    results
        .scenarios
        .insert("passthrough_streaming".into(), json!(by_c));
    Ok(())
}
