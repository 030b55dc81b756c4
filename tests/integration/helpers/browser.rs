//! A minimal browser for console tests: keeps the session cookie, sends forms with the page's
//! origin, and does not follow redirects (tests look at them).

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};

use crate::helpers::TestApp;

/// A page as answered: status, `Location` (for redirects), `Set-Cookie` lines and body.
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Answer {
    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        value_after(&self.body, r#"name="csrf" value=""#).expect("the page has a CSRF field")
    }

    /// The idempotency key of the first form that carries one.
    pub fn idempotency_key(&self) -> String {
        value_after(&self.body, r#"name="idempotency_key" value=""#)
            .expect("the page has an idempotency field")
    }
}

fn value_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

/// One browser profile against one app.
pub struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    pub cookie: Option<String>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            app,
            client,
            cookie: None,
        }
    }

    /// Signs in with `key`; panics unless the console accepted it.
    pub async fn signed_in(app: &'a TestApp, key: &str) -> Self {
        let mut browser = Self::new(app);
        let answer = browser.sign_in(key).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location.as_deref(), Some("/console"));
        browser
    }

    /// Posts the sign-in form and keeps the session cookie it sets.
    pub async fn sign_in(&mut self, key: &str) -> Answer {
        let answer = self.post("/console/sign-in", &[("key", key)]).await;
        if let Some(cookie) = answer
            .set_cookies
            .iter()
            .find(|c| c.starts_with("saasllm_console="))
        {
            let pair = cookie.split(';').next().unwrap_or_default().to_owned();
            self.cookie = Some(pair);
        }
        answer
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// A form post from the console's own origin.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let origin = format!("http://{}", self.app.addr);
        self.post_from(&origin, path, fields).await
    }

    /// A form post as a page on `origin` would send it.
    pub async fn post_from(&self, origin: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        let request = self
            .request(Method::POST, path)
            .header(ORIGIN, origin)
            .form(fields);
        self.send(request).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, self.app.url(path));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let body = response.text().await.expect("body");
        Answer {
            status,
            location,
            set_cookies,
            body,
        }
    }
}
