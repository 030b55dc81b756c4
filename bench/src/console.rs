//! Console pages over a realistic history: one organization, a model group and 20 teams created
//! through the JSON API, then jobs over the last 30 days (with their calls, attempts, ledger rows
//! and webhook deliveries) written straight into PostgreSQL by `console.sql`. Each page is then
//! fetched sequentially, signed in as the admin or as a team, and timed by the server's own
//! `Server-Timing: app;dur=<ms>` (and by the client's round trip). Every answer must be a 200.

use std::time::Instant;

use anyhow::{Context, bail};
use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::ADMIN_KEY;
use crate::requests::send;

const ORG: &str = "org_console";
const GROUP: &str = "ConsoleAgent";
const TEAMS: usize = 20;
/// The goal: every page made by the server in less than this.
const LIMIT_MS: f64 = 100.0;
/// Times the jobs list's "Older →" link is followed for the deep page (page 20).
const DEEP_PAGES: usize = 19;
/// Tables the seed writes: vacuumed and analyzed after it, and counted.
const TABLES: [&str; 7] = [
    "jobs",
    "llm_calls",
    "llm_call_attempts",
    "credit_transactions",
    "credit_balances",
    "webhook_deliveries",
    "webhook_delivery_attempts",
];

/// A page's timings in milliseconds, in request order.
struct Timed {
    label: String,
    path: String,
    /// The unmeasured first request's server time.
    first_ms: f64,
    server: Vec<f64>,
    client: Vec<f64>,
}

/// Nearest-rank percentile of `samples` (q = 1 is the maximum).
fn pct(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Seeds `jobs` jobs, then times `requests` sequential requests of every page. Returns the
/// scenario's report and its target row.
pub async fn run(
    api: &str,
    database_url: &str,
    jobs: usize,
    requests: usize,
) -> anyhow::Result<(Value, Value)> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()?;
    let team_key = create_tenant(&client, api).await?;
    let seed = seed(database_url, jobs).await?;
    let counts: Vec<String> = seed.rows.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "\nconsole: {jobs} jobs seeded in {:.1} s, then vacuum analyze; rows: {}; {requests} requests per page",
        seed.secs,
        counts.join(", ")
    );

    let admin_cookie = sign_in(&client, api, ADMIN_KEY).await?;
    let team_cookie = sign_in(&client, api, &team_key).await?;
    // The deep page: the jobs list's "Older →" link followed DEEP_PAGES times.
    let mut deep = "/console/jobs".to_owned();
    for _ in 0..DEEP_PAGES {
        let (_, _, body) = get(&client, api, &admin_cookie, &deep).await?;
        deep = older_link(&body).with_context(|| format!("no \"Older\" link on {deep}"))?;
    }
    let team_pages = [
        ("team: overview", "/console".to_owned()),
        ("team: jobs", "/console/jobs".to_owned()),
        ("team: usage", "/console/usage".to_owned()),
    ];
    let pages = (admin_pages(&seed, deep)
        .into_iter()
        .map(|p| (p, &admin_cookie)))
    .chain(team_pages.into_iter().map(|p| (p, &team_cookie)));

    println!(
        "{:<34} {:>4} {:>9} {:>8} {:>8} {:>10} {:>8}  max < {LIMIT_MS} ms",
        "console page (server ms)", "n", "first", "p50", "p99", "max", "client p50"
    );
    let mut timed = Vec::new();
    for ((label, path), cookie) in pages {
        timed.push(time_page(&client, api, cookie, label, path, requests).await?);
    }
    report(&timed, &seed, jobs, requests)
}

/// Creates the organization, the model group and `TEAMS` teams; returns the key of the first
/// team, whose pages are measured.
async fn create_tenant(client: &reqwest::Client, api: &str) -> anyhow::Result<String> {
    let admin = |path: &str, body: Value| {
        let req = client.post(format!("{api}{path}"));
        send(req.header("X-Admin-Key", ADMIN_KEY).json(&body))
    };
    admin(
        "/api/organizations/create",
        json!({"organization_id": ORG, "name": "Console Bench"}),
    )
    .await?;
    admin(
        "/api/model-groups/create",
        json!({"group_name": GROUP, "display_name": "Console Agent",
               "models": [{"model_name": "gpt-4o-mini", "priority": 0},
                          {"model_name": "gpt-4o", "priority": 1}]}),
    )
    .await?;
    let mut team_keys = Vec::with_capacity(TEAMS);
    for i in 0..TEAMS {
        let team = admin(
            "/api/teams/create",
            json!({"organization_id": ORG, "team_id": format!("team_console_{i:03}"),
                   "team_alias": format!("Console team {i}"), "model_groups": [GROUP],
                   "credits_allocated": 1_000_000}),
        )
        .await?;
        team_keys.push(team["virtual_key"].as_str().map(str::to_owned));
    }
    team_keys[0]
        .clone()
        .context("no virtual_key in a team create answer")
}

/// The first team has the most jobs: its pages are the team pages measured.
const TEAM: &str = "team_console_000";

/// What the seed wrote, and what the measured pages' addresses need of it.
struct Seed {
    secs: f64,
    /// Rows of each of `TABLES`.
    rows: serde_json::Map<String, Value>,
    /// A job of `TEAM` with two calls, one of which fell back.
    job_with_calls: String,
    week_ago: String,
    today: String,
}

/// Seeds `jobs` jobs with `console.sql`, then vacuums and counts the tables.
async fn seed(database_url: &str, jobs: usize) -> anyhow::Result<Seed> {
    let mut db = PgConnection::connect(database_url)
        .await
        .context("cannot connect to the benchmark database")?;
    let seeding = Instant::now();
    let params = format!(
        "create temp table console_seed_params as
         select {jobs}::int as jobs, '{GROUP}'::text as group_name,
                (select array_agg(team_id order by team_id) from teams where organization_id = '{ORG}') as team_ids;\n"
    );
    // Dynamic SQL: a script of several statements with the seed's parameters written into it.
    sqlx::raw_sql(&(params + include_str!("console.sql")))
        .execute(&mut db)
        .await
        .context("seeding the console history")?;
    let seed_secs = seeding.elapsed().as_secs_f64();
    // What autovacuum would have done by then on a live database: statistics and visibility maps.
    let mut rows = serde_json::Map::new();
    for table in TABLES {
        // Dynamic SQL: the table name varies, and a name cannot be a bind parameter.
        sqlx::raw_sql(&format!("vacuum (analyze) {table}"))
            .execute(&mut db)
            .await?;
        // Dynamic SQL: the table name varies, and a name cannot be a bind parameter.
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&mut db)
            .await?;
        rows.insert(table.to_owned(), json!(n));
    }
    // `job_id` is `not null`, and so is its text.
    let job_with_calls = sqlx::query_scalar!(
        r#"select c.job_id::text as "job_id!" from llm_call_attempts a join llm_calls c using (call_id)
         where a.outcome = 'fallback' and c.team_id = $1
           and (select count(*) from llm_calls o where o.job_id = c.job_id) = 2
         order by a.attempt_id desc limit 1"#,
        TEAM
    )
    .fetch_one(&mut db)
    .await
    .context("no seeded job with a fallback")?;
    // `to_char` of a date that is never null.
    let dates = sqlx::query!(
        r#"select to_char((now() at time zone 'UTC')::date - 6, 'YYYY-MM-DD') as "week_ago!",
                to_char((now() at time zone 'UTC')::date, 'YYYY-MM-DD') as "today!""#
    )
    .fetch_one(&mut db)
    .await?;
    db.close().await?;
    Ok(Seed {
        secs: seed_secs,
        rows,
        job_with_calls,
        week_ago: dates.week_ago,
        today: dates.today,
    })
}

/// The pages measured signed in as the admin; `deep` is page 20 of the jobs list.
fn admin_pages(seed: &Seed, deep: String) -> [(&'static str, String); 18] {
    let Seed {
        job_with_calls,
        week_ago,
        today,
        ..
    } = seed;
    let team = TEAM;
    [
        ("overview", "/console".to_owned()),
        ("overview, live part", "/console/live".to_owned()),
        ("organizations", "/console/organizations".to_owned()),
        ("teams", "/console/teams".to_owned()),
        ("a team", format!("/console/teams/{team}")),
        ("a team's ledger", format!("/console/teams/{team}/ledger")),
        ("model groups", "/console/model-groups".to_owned()),
        ("jobs", "/console/jobs".to_owned()),
        ("jobs, failed", "/console/jobs?status=failed".to_owned()),
        // No job is seeded expired: the whole created-at order is read to find none.
        (
            "jobs, expired (none)",
            "/console/jobs?status=expired".into(),
        ),
        ("jobs, one team", format!("/console/jobs?team_id={team}")),
        (
            "jobs, type + 7 days",
            format!("/console/jobs?job_type=summarize&from={week_ago}&to={today}"),
        ),
        ("jobs, page 20", deep),
        (
            "job with 2 calls, a fallback",
            format!("/console/jobs/{job_with_calls}"),
        ),
        ("usage, all teams 30 days", "/console/usage".to_owned()),
        ("usage, one team", format!("/console/usage?team_id={team}")),
        ("usage.csv, all teams", "/console/usage.csv".to_owned()),
        ("webhooks", "/console/webhooks".to_owned()),
    ]
}

/// One unmeasured request of `path`, then `requests` timed ones; prints the page's row.
async fn time_page(
    client: &reqwest::Client,
    api: &str,
    cookie: &str,
    label: &str,
    path: String,
    requests: usize,
) -> anyhow::Result<Timed> {
    let (first_ms, _, _) = get(client, api, cookie, &path).await?;
    let (mut server, mut round_trips) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        let (ms, client_ms, _) = get(client, api, cookie, &path).await?;
        server.push(ms);
        round_trips.push(client_ms);
    }
    let max = pct(&server, 1.0);
    println!(
        "{label:<34} {:>4} {first_ms:>9.2} {:>8.2} {:>8.2} {max:>10.2} {:>8.2}  {}",
        server.len(),
        pct(&server, 0.5),
        pct(&server, 0.99),
        pct(&round_trips, 0.5),
        if max < LIMIT_MS { "PASS" } else { "MISS" }
    );
    Ok(Timed {
        label: label.to_owned(),
        path,
        first_ms,
        server,
        client: round_trips,
    })
}

/// The scenario's report and its target row (the slowest page's maximum).
fn report(
    timed: &[Timed],
    seed: &Seed,
    jobs: usize,
    requests: usize,
) -> anyhow::Result<(Value, Value)> {
    let slowest = timed
        .iter()
        .max_by(|a, b| pct(&a.server, 1.0).total_cmp(&pct(&b.server, 1.0)))
        .context("no pages")?;
    let slowest_ms = pct(&slowest.server, 1.0);
    let goal = json!({
        "name": "console page server max (slowest)", "page": slowest.label,
        "value": slowest_ms, "unit": "ms", "op": "<", "goal": LIMIT_MS,
        "result": if slowest_ms < LIMIT_MS { "PASS" } else { "MISS" },
    });
    let pages: Vec<Value> = timed
        .iter()
        .map(|t| {
            json!({
                "page": t.label, "path": t.path, "requests": t.server.len(),
                "server_first_ms": t.first_ms, "server_p50_ms": pct(&t.server, 0.5),
                "server_p99_ms": pct(&t.server, 0.99), "server_max_ms": pct(&t.server, 1.0),
                "client_p50_ms": pct(&t.client, 0.5), "client_p99_ms": pct(&t.client, 0.99),
                "client_max_ms": pct(&t.client, 1.0),
                "under_limit": pct(&t.server, 1.0) < LIMIT_MS,
            })
        })
        .collect();
    let report = json!({
        "jobs_seeded": jobs, "teams": TEAMS, "seed_secs": seed.secs, "rows": seed.rows,
        "requests_per_page": requests, "limit_ms": LIMIT_MS,
        "all_under_limit": slowest_ms < LIMIT_MS, "pages": pages,
    });
    Ok((report, goal))
}

/// Signs in with `key` and returns the session cookie's value.
async fn sign_in(client: &reqwest::Client, api: &str, key: &str) -> anyhow::Result<String> {
    let resp = client
        .post(format!("{api}/console/sign-in"))
        .header(ORIGIN, api)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        // The admin key and virtual keys (`sk-` + hex) need no form encoding.
        .body(format!("key={key}"))
        .send()
        .await?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("saasllm_console="))
        .find_map(|c| c.split(';').next().filter(|c| !c.is_empty()))
        .map(str::to_owned);
    match cookie {
        Some(cookie) if status.is_redirection() => Ok(cookie),
        _ => bail!("console sign-in answered HTTP {status} without a session cookie"),
    }
}

/// GETs a console page: (server ms from Server-Timing, client round trip ms, body). Anything
/// but a 200 is an error.
async fn get(
    client: &reqwest::Client,
    api: &str,
    cookie: &str,
    path: &str,
) -> anyhow::Result<(f64, f64, String)> {
    let started = Instant::now();
    let resp = client
        .get(format!("{api}{path}"))
        .header(COOKIE, format!("saasllm_console={cookie}"))
        .send()
        .await?;
    let status = resp.status();
    let server = resp
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("dur=")))
        .and_then(|ms| ms.parse::<f64>().ok());
    let body = resp.text().await?;
    let client_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != reqwest::StatusCode::OK {
        let excerpt: String = body.chars().take(300).collect();
        bail!("GET {path}: HTTP {status}: {excerpt}");
    }
    let server = server.with_context(|| format!("GET {path}: no Server-Timing duration"))?;
    Ok((server, client_ms, body))
}

/// The target of the jobs list's "Older →" link, if the page has one.
fn older_link(body: &str) -> Option<String> {
    let pager = &body[body.find("class=\"pager\"")?..];
    let href = &pager[pager.find("href=\"")? + 6..];
    Some(href[..href.find('"')?].replace("&amp;", "&"))
}
