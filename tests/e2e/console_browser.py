"""The web console under /console, driven in a real Chromium through Playwright.

It proves that a person can run the service from the console alone, and that the console only
shows a team what is its own:
- the admin signs in, creates an organization, a model group and a team (the team's key is shown
  once), adds credits (the page, the balance API and the ledger API agree), finds a job run
  through the JSON API and reads its call, attempt, tokens and cost, suspends the team (the API
  then refuses its key with 403) and resumes it, and signs out (the console then asks to sign
  in again);
- a team signed in with its own key sees its overview, its jobs only, and a 404 for the admin
  pages and for another team's job;
- a form posted from another origin (same site, so the SameSite=Strict cookie is sent) and a
  same-origin post without the CSRF token are both refused with 403, and change nothing.
Every page visited is saved as a PNG under target/console-screenshots/ (a phone-sized overview
and job too).
"""

import contextlib
import http.server
import os
import pathlib
import re
import threading
import time
import uuid

import requests
from playwright.sync_api import Page, expect, sync_playwright

BASE_URL = os.environ["SAASLLM_URL"].rstrip("/")
ADMIN_KEY = os.environ["SAASLLM_ADMIN_KEY"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The flags keep Chromium from reaching for Google's services, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = pathlib.Path("target/console-screenshots")
RUN = uuid.uuid4().hex[:8]
MODELS = ["gpt-4o-mini", "gpt-4o"]  # the fake upstream answers both

expect.set_options(timeout=15_000)
screenshots: list[str] = []


def api(method: str, path: str, key: str | None = None, status: int | None = None, **kwargs) -> dict:
    """A JSON API call with the admin key, or with a team's key; asserts the status (any 2xx
    when none is given) and returns the JSON body."""
    headers = {"X-Admin-Key": ADMIN_KEY} if key is None else {"Authorization": f"Bearer {key}"}
    response = requests.request(method, BASE_URL + path, headers=headers, timeout=60, **kwargs)
    ok = response.status_code == status if status else response.ok
    assert ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
    return response.json() if response.content else {}


def usd(micro: int) -> str:
    """Micro-dollars written as the console writes them (cents from one cent up)."""
    sign, micro = ("-" if micro < 0 else ""), abs(micro)
    if micro >= 10_000 or micro == 0:
        cents = (micro + 5_000) // 10_000
        return f"{sign}${cents // 100:,}.{cents % 100:02}"
    return f"{sign}$0.{micro:06}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    screenshots.append(name)


def visit(page: Page, path: str, heading: str, name: str | None = None) -> None:
    """Loads a console page, checks it answered 200 with its heading, and saves a screenshot."""
    response = page.goto(BASE_URL + path)
    assert response is not None and response.status == 200, f"GET {path}: {response and response.status}"
    expect(page.locator("main h1")).to_have_text(heading)
    if name:
        shot(page, name)


def card(page: Page, label: str):
    """The value of the card labelled `label`."""
    exact = page.locator(".label", has_text=re.compile(f"^{re.escape(label)}$"))
    return page.locator(".card", has=exact).locator(".value")


def done(page: Page, text: str) -> None:
    expect(page.locator("p.notice.done")).to_have_text(text)


def submit(page: Page, button: str) -> None:
    """Clicks a console form's button and checks that the POST was answered without an error
    status (htmx swaps nothing in for one, so a refusal would look like a dead button)."""
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.startswith(BASE_URL + "/console/")
    ) as posted:
        page.get_by_role("button", name=button, exact=True).click()
    response = posted.value
    if response.status >= 400:
        alert = re.search(r'role="alert">([^<]*)<', response.text())
        raise AssertionError(
            f"POST {response.url} ({button!r}) answered {response.status}: "
            f"{alert.group(1) if alert else response.text()[:300]!r}; "
            f"the browser sent Origin: {response.request.header_value('origin')!r}"
        )


def sign_in(page: Page, key: str) -> None:
    page.goto(BASE_URL + "/console/sign-in")
    page.fill("input[name=key]", key)
    submit(page, "Sign in")
    page.wait_for_url(f"{BASE_URL}/console")


def refused_status(page: Page, path: str) -> int:
    response = page.goto(BASE_URL + path)
    assert response is not None
    return response.status


@contextlib.contextmanager
def other_origin(target: str):
    """A page on another port of 127.0.0.1 (another origin, the same site) whose form posts
    itself to `target` on load, without a CSRF field."""
    body = (
        "<!doctype html><title>elsewhere</title>"
        f'<form method="post" action="{target}"><input name="reason" value="gotcha"></form>'
        "<script>document.forms[0].submit()</script>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_job(key: str | None, team: str, group: str) -> tuple[str, dict]:
    """A job with one call, completed, through the JSON API (the team's key, or the admin's)."""
    job_id = api("POST", "/api/jobs/create", key, json={"team_id": team, "job_type": "console_check"})["job_id"]
    answer = api("POST", f"/api/jobs/{job_id}/llm-call", key,
                 json={"model_group": group, "messages": [{"role": "user", "content": "hi"}]})
    assert answer["response"]["content"], answer
    completed = api("POST", f"/api/jobs/{job_id}/complete", key, json={"status": "completed"})
    assert completed["status"] == "completed" and completed["costs"]["credit_applied"], completed
    return job_id, completed["costs"]


def team_status(team: str) -> str:
    return api("GET", f"/api/teams/{team}")["status"]


def main() -> None:
    started = time.monotonic()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    org, group = f"org_console_{RUN}", f"ConsoleChat_{RUN}"
    team, other = f"team_console_{RUN}", f"team_other_{RUN}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sign_in_as_admin(page)
        key = create_team_in_console(page, org, group, team)
        add_credits_in_console(page, team, group)
        job_id = find_job_in_console(page, key, team, group)
        visit(page, f"/console/usage?team_id={team}", "Usage", "usage")
        visit(page, "/console/webhooks", "Webhook deliveries", "webhooks")
        suspend_and_resume(page, team, key)
        check_csrf_refused(context, page, team)
        phone_views(page, job_id)
        sign_out(page)
        check_team_view(page, key, org, group, team, other, job_id)
        browser.close()

    print(f"console: {len(screenshots)} pages in Chromium as admin and as a team, credits, a job, "
          f"suspend/resume, sign-out, CSRF refused; screenshots in {SCREENSHOTS}/ "
          f"({time.monotonic() - started:.1f} s)")


def sign_in_as_admin(page: Page) -> None:
    """Without a session the console sends the browser to the sign-in page; the admin signs in."""
    page.goto(BASE_URL + "/console")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    expect(page.locator("input#key")).to_be_visible()
    shot(page, "sign-in")
    sign_in(page, ADMIN_KEY)
    expect(page.locator("main h1")).to_have_text("Overview")
    expect(page.locator(".signout .who")).to_have_text("admin bootstrap (owner)")
    expect(card(page, "Workers seen (5 min)")).to_be_visible()
    shot(page, "overview")


def create_team_in_console(page: Page, org: str, group: str, team: str) -> str:
    """An organization, a model group and a team, each through its form; returns the team's key
    (shown once)."""
    visit(page, "/console/organizations", "Organizations")
    page.fill("input[name=organization_id]", org)
    page.fill("input[name=name]", "Console Check Inc")
    submit(page, "Create")
    done(page, f"Organization '{org}' created")
    expect(page.locator("tbody tr", has_text=org)).to_contain_text("Console Check Inc")
    shot(page, "organizations")
    assert api("GET", f"/api/organizations/{org}")["name"] == "Console Check Inc"

    visit(page, "/console/model-groups", "Model groups")
    page.fill("input[name=group_name]", group)
    page.fill("textarea[name=models]", "\n".join(MODELS))
    submit(page, "Create")
    done(page, f"Model group '{group}' created")
    expect(page.locator("tbody tr", has_text=group)).to_contain_text(" → ".join(MODELS))

    visit(page, f"/console/organizations/{org}", f"Organization {org}")
    expect(page.locator("input[name=organization_id]")).to_have_value(org)
    page.fill("input[name=team_id]", team)
    page.fill("input[name=team_alias]", "Console Team")
    page.fill("input[name=model_groups]", group)
    page.fill("input[name=credits_allocated]", "100")
    submit(page, "Create team")
    expect(page.locator("main h1")).to_have_text(f"Team {team} created")
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key), "the new key is not shown"
    visit(page, f"/console/organizations/{org}", f"Organization {org}", "organization")
    expect(page.locator("tbody tr", has_text=team)).to_contain_text("active")
    return key


def add_credits_in_console(page: Page, team: str, group: str) -> None:
    """Credits added on the team page: the card, the balance and the ledger agree."""
    visit(page, f"/console/teams/{team}", f"Team {team}")
    expect(card(page, "Credits available")).to_have_text("100")
    page.fill("input[name=credits]", "50")
    page.fill("input[name=reason]", "console top-up")
    submit(page, "Add credits")
    done(page, "Credits added")
    expect(card(page, "Credits available")).to_have_text("150")
    shot(page, "team")
    balance = api("GET", f"/api/credits/teams/{team}/balance")
    assert balance["credits_available"] == 150, balance
    rows = api("GET", f"/api/credits/teams/{team}/transactions")["transactions"]
    assert any(r["transaction_type"] == "addition" and r["credits_amount"] == 50
               and r["reason"] == "console top-up" for r in rows), rows
    visit(page, f"/console/teams/{team}/ledger", f"Ledger of {team}", "team-ledger")
    expect(page.locator("tbody tr", has_text="console top-up")).to_contain_text("addition")
    visit(page, "/console/teams", "Teams", "teams")
    expect(page.locator("tbody tr", has_text=team)).to_contain_text("150")
    visit(page, "/console/model-groups", "Model groups", "model-groups")
    expect(page.locator("tbody tr", has_text=group)).to_contain_text(team)
    visit(page, f"/console/model-groups/{group}", f"Model group {group}", "model-group")
    expect(page.locator("textarea[name=models]")).to_have_value("\n".join(MODELS))


def find_job_in_console(page: Page, key: str, team: str, group: str) -> str:
    """A job run through the JSON API with the team's key, found in the console."""
    job_id, costs = run_job(key, team, group)
    visit(page, "/console/jobs", "Jobs")
    page.fill("input[name=team_id]", team)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(rf"/console/jobs\?.*team_id={team}"))
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("completed")
    shot(page, "jobs")
    page.locator(f'a[href="/console/jobs/{job_id}"]').click()
    page.wait_for_url(f"{BASE_URL}/console/jobs/{job_id}")
    expect(page.locator("main h1")).to_have_text(f"Job {job_id}")
    expect(card(page, "Status")).to_have_text("completed")
    expect(card(page, "Tokens")).to_have_text(f"{costs['total_tokens']:,}")
    expect(card(page, "Cost of calls")).to_have_text(usd(round(costs["total_cost_usd"] * 1_000_000)))
    call = page.locator("tbody tr")
    expect(call).to_have_count(1)
    expect(call.locator("td").nth(2)).to_have_text("succeeded")
    expect(call.locator("td").nth(3)).to_contain_text(f"{MODELS[0]}: succeeded")
    expect(call.locator("td").nth(4)).to_have_text(f"{costs['total_tokens']:,}")
    shot(page, "job")
    return job_id


def suspend_and_resume(page: Page, team: str, key: str) -> None:
    """Suspend from the team page: the API refuses the key; resume: it is accepted again."""
    visit(page, f"/console/teams/{team}", f"Team {team}")
    submit(page, "Suspend team")
    done(page, "Team suspended")
    expect(page.locator("main span.status")).to_have_text("suspended")
    api("GET", f"/api/credits/teams/{team}/balance", key, status=403)
    assert team_status(team) == "suspended"
    submit(page, "Resume team")
    done(page, "Team resumed")
    expect(page.locator("main span.status")).to_have_text("active")
    api("GET", f"/api/credits/teams/{team}/balance", key, status=200)


def check_csrf_refused(context, page: Page, team: str) -> None:
    """CSRF: a form posted from another origin while the admin is signed in is refused."""
    suspend_url = f"{BASE_URL}/console/teams/{team}/suspend"
    with other_origin(suspend_url) as elsewhere:
        intruder = context.new_page()
        with intruder.expect_response(lambda r: r.url == suspend_url) as posted:
            intruder.goto(elsewhere)
        assert posted.value.request.method == "POST"
        assert posted.value.status == 403, posted.value.status
        # The refusal names the form, so the session cookie did reach the server.
        expect(intruder.locator("[role=alert]")).to_contain_text(re.compile("Cross-origin|CSRF"))
        intruder.close()
    assert team_status(team) == "active"
    # ...and so is a same-origin post without the token.
    refusal = page.evaluate(
        """async url => {
            const r = await fetch(url, {method: "POST", body: new URLSearchParams({reason: "x"})});
            return {status: r.status, text: await r.text()};
        }""",
        suspend_url,
    )
    assert refusal["status"] == 403 and "CSRF token" in refusal["text"], refusal["status"]
    assert team_status(team) == "active"


def phone_views(page: Page, job_id: str) -> None:
    """The overview and a job on a phone-sized screen."""
    page.set_viewport_size({"width": 390, "height": 844})
    visit(page, "/console", "Overview", "phone-overview")
    visit(page, f"/console/jobs/{job_id}", f"Job {job_id}", "phone-job")
    page.set_viewport_size({"width": 1280, "height": 900})


def sign_out(page: Page) -> None:
    """Sign out: the console asks to sign in again."""
    submit(page, "Sign out")
    expect(page.locator("input#key")).to_be_visible()
    page.goto(BASE_URL + "/console")
    page.wait_for_url(re.compile(r"/console/sign-in"))


def check_team_view(page: Page, key: str, org: str, group: str, team: str, other: str, job_id: str) -> None:
    """The console as a team sees it, next to another team's job."""
    # Another team with a job of its own, through the JSON API with the admin key.
    api("POST", "/api/teams/create", json={"organization_id": org, "team_id": other,
                                           "model_groups": [group], "credits_allocated": 10})
    other_job, _ = run_job(None, other, group)

    # Signed in with the team's key: its own overview and jobs, 404 for everything else.
    sign_in(page, key)
    expect(page.locator("main h1")).to_have_text(f"Team {team}")
    expect(page.locator(".signout .who")).to_have_text(f"team {team}")
    expect(card(page, "Credits available")).to_have_text("149")
    expect(page.locator("header nav a")).to_have_text(["overview", "jobs", "usage", "model groups"])
    shot(page, "team-overview")
    visit(page, "/console/jobs", "Jobs", "team-jobs")
    expect(page.locator(f'a[href="/console/jobs/{job_id}"]')).to_be_visible()
    expect(page.locator(f'a[href="/console/jobs/{other_job}"]')).to_have_count(0)
    expect(page.locator("input[name=team_id]")).to_have_count(0)
    expect(page.locator("tbody tr")).to_have_count(1)
    visit(page, "/console/usage", "Usage", "team-usage")
    expect(page.locator("main")).to_contain_text(f"team {team}")
    for path in ("/console/teams", "/console/organizations", f"/console/jobs/{other_job}",
                 f"/console/teams/{other}"):
        status = refused_status(page, path)
        assert status == 404, f"{path} as a team: {status}"


if __name__ == "__main__":
    main()
