//! JSON over HTTP to OpenAI-compatible endpoints, with retries that heal transient failures.

use crate::error::{input, Error, Result};
use rand::Rng;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Environment variables read for the API key, in order.
pub const API_KEY_VARS: [&str; 2] = ["MAKD_API_KEY", "OPENAI_API_KEY"];

/// After this many pairs gave up with not one request ever answered, the endpoints are taken to
/// be wrong (bad URL, server down) and the run stops instead of marking every pair missing.
const GIVE_UP_WITHOUT_ANY_SUCCESS: u64 = 3;

/// Timeouts and retry policy.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for one whole request (connect, send, wait, read).
    pub timeout: Duration,
    /// Tries per request, the first included (at least 1).
    pub max_attempts: u32,
    /// First retry waits about this long; each further retry doubles it (with jitter).
    pub backoff_base: Duration,
    /// Cap on one backoff wait.
    pub backoff_max: Duration,
    /// Cap on a server's `Retry-After`, so a bogus header cannot stall a run for hours.
    pub retry_after_max: Duration,
    /// Idle keep-alive connections kept per endpoint (at least the requests in flight).
    pub connections_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(120),
            max_attempts: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(120),
            connections_per_host: 16,
        }
    }
}

/// An API key that never shows up in Debug output.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// An endpoint's base URL as requests use it, which may hold `user:password@`. Debug and Display
/// show it without the credentials, so they reach no log, manifest, error or Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    base: String,
    shown: String,
}

impl EndpointUrl {
    /// The URL with credentials, for the request line only.
    fn base(&self) -> &str {
        &self.base
    }

    /// The URL without credentials: what users see.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether requests to it are encrypted (an `OPENAI_API_KEY` is sent only then).
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The `user:password@` part, if any (to scrub it from transport errors).
    fn credentials(&self) -> Option<&str> {
        let rest = self.base.split_once("://")?.1;
        let host = &rest[..rest.find('/').unwrap_or(rest.len())];
        host.rfind('@').map(|at| &host[..=at])
    }
}

impl std::str::FromStr for EndpointUrl {
    type Err = Error;
    fn from_str(raw: &str) -> Result<EndpointUrl> {
        let base = normalize_endpoint(raw)?;
        Ok(EndpointUrl {
            shown: strip_credentials(&base),
            base,
        })
    }
}

impl std::fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

#[derive(Debug)]
struct Endpoint {
    url: EndpointUrl,
    /// The key sent to this endpoint (see [`ApiKeys`]).
    key: Option<Secret>,
    in_flight: AtomicUsize,
}

/// Where API keys may go. `MAKD_API_KEY` is the user's key for the endpoints they name and goes
/// to each of them; `OPENAI_API_KEY` is often set for OpenAI itself, so it is sent only over
/// https, never in clear text to a local or third-party http server.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// Sent to every endpoint.
    pub any: Option<String>,
    /// Sent to https endpoints only.
    pub https_only: Option<String>,
}

impl ApiKeys {
    /// `MAKD_API_KEY` and `OPENAI_API_KEY` from the environment (empty ones ignored).
    pub fn from_env() -> ApiKeys {
        let var = |v: &str| {
            std::env::var(v)
                .ok()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
        };
        ApiKeys {
            any: var(API_KEY_VARS[0]),
            https_only: var(API_KEY_VARS[1]),
        }
    }

    fn for_endpoint(&self, url: &EndpointUrl) -> Option<Secret> {
        self.any
            .clone()
            .or_else(|| self.https_only.clone().filter(|_| url.is_https()))
            .map(Secret)
    }
}

/// A client for one or more endpoints that serve the same model.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<Endpoint>,
    opts: ClientOptions,
    /// Every key some endpoint gets, to scrub from what we report.
    secrets: Vec<Secret>,
    /// Set when `OPENAI_API_KEY` exists but some http endpoint does not get it (for the 401 hint).
    withheld_openai_key: bool,
    next: AtomicUsize,
    successes: AtomicU64,
    gave_up: AtomicU64,
}

/// Why one attempt failed, and whether another may heal it.
enum Failure {
    /// Retry after the backoff (or the server's Retry-After, if longer).
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Stop the run: retrying cannot help.
    Fatal(Error),
}

/// Holds a share of an endpoint's load while a group of requests runs on it.
pub struct Lease<'a> {
    client: &'a Client,
    index: usize,
}

impl Lease<'_> {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.client.endpoints[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// `http://host:port/v1` from what a user may type: a bare host gets `/v1`, a full
/// `/chat/completions` URL is cut back to its base.
pub fn normalize_endpoint(raw: &str) -> Result<String> {
    let t = raw.trim().trim_end_matches('/');
    let hint = "give the server's base URL, e.g. http://127.0.0.1:8000/v1";
    let rest = if let Some(r) = t.strip_prefix("http://") {
        r
    } else if let Some(r) = t.strip_prefix("https://") {
        r
    } else {
        return Err(input(
            format!(
                "endpoint {:?} is not an http(s) URL",
                strip_credentials(raw)
            ),
            "--endpoint",
            hint,
        ));
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    if rest[..host_end].is_empty() {
        return Err(input(
            format!("endpoint {:?} has no host", strip_credentials(raw)),
            "--endpoint",
            hint,
        ));
    }
    let mut base = t.to_string();
    for suffix in ["/chat/completions", "/completions"] {
        if let Some(b) = base.strip_suffix(suffix) {
            base = b.to_string();
        }
    }
    if host_end == rest.len() {
        base.push_str("/v1");
    }
    Ok(base)
}

/// The URL with any `user:password@` removed.
pub fn strip_credentials(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `Retry-After` as delay-seconds or as an HTTP-date (RFC 9110 §10.2.3), relative to `now`.
/// A date in the past means "now".
fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `error.message` of an OpenAI-style error body, else the body itself (shortened).
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"));
        if let Some(m) = m {
            return match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    let mut s: String = body.chars().take(500).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    if s.trim().is_empty() {
        s = "(empty body)".into();
    }
    s
}

fn hint_for_status(code: u16) -> &'static str {
    match code {
        401 | 403 => "set the API key in the environment: MAKD_API_KEY (sent to every --endpoint), or OPENAI_API_KEY (sent over https only)",
        404 => "check --endpoint (the base URL, usually ending in /v1) and --model (the name the server serves)",
        413 => "the request is too large for the server: use smaller images or raise its body limit",
        _ => "the server rejected the request: check --model, that the server returns logprobs (and accepts images in image mode), and any --vllm-extras",
    }
}

impl Client {
    /// A client for `endpoints`, with the API keys from the environment ([`ApiKeys::from_env`]).
    pub fn new(endpoints: &[EndpointUrl], opts: ClientOptions) -> Result<Client> {
        Client::with_keys(endpoints, opts, ApiKeys::from_env())
    }

    /// A client with an explicit API key sent to every endpoint (`None`: no Authorization header).
    pub fn with_api_key(
        endpoints: &[EndpointUrl],
        opts: ClientOptions,
        api_key: Option<String>,
    ) -> Result<Client> {
        let keys = ApiKeys {
            any: api_key,
            https_only: None,
        };
        Client::with_keys(endpoints, opts, keys)
    }

    pub fn with_keys(
        endpoints: &[EndpointUrl],
        opts: ClientOptions,
        keys: ApiKeys,
    ) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(input(
                "no endpoint given",
                "--endpoint",
                "pass --endpoint http://HOST:PORT/v1 (repeat it to share the work between servers)",
            ));
        }
        let eps: Vec<Endpoint> = endpoints
            .iter()
            .map(|url| Endpoint {
                key: keys.for_endpoint(url),
                url: url.clone(),
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let secrets = [&keys.any, &keys.https_only]
            .into_iter()
            .flatten()
            .map(|k| Secret(k.clone()))
            .collect();
        let withheld_openai_key =
            keys.any.is_none() && keys.https_only.is_some() && eps.iter().any(|e| e.key.is_none());
        let conns = opts.connections_per_host.max(1);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .max_idle_connections(conns * eps.len())
            .max_idle_connections_per_host(conns)
            .user_agent(concat!("makd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            agent,
            endpoints: eps,
            opts: ClientOptions {
                max_attempts: opts.max_attempts.max(1),
                ..opts
            },
            secrets,
            withheld_openai_key,
            next: AtomicUsize::new(0),
            successes: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        })
    }

    /// The endpoints as shown to users (credentials removed).
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.url.shown().to_string())
            .collect()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Take the endpoint with the fewest groups in flight (ties go round-robin), so a group's
    /// consecutive requests share one server's prefix cache and the load stays even.
    pub fn lease(&self) -> Lease<'_> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let index = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.endpoints[i].in_flight.load(Ordering::Relaxed))
            .unwrap_or(0);
        self.endpoints[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Lease {
            client: self,
            index,
        }
    }

    /// Remove API keys and URL credentials wherever they might appear in text we report.
    fn scrub(&self, mut s: String) -> String {
        for Secret(k) in &self.secrets {
            if !k.is_empty() && s.contains(k.as_str()) {
                s = s.replace(k.as_str(), "***");
            }
        }
        for e in &self.endpoints {
            if let Some(c) = e.url.credentials() {
                s = s.replace(c, "");
            }
        }
        s
    }

    /// POST `body` to `path` (e.g. `/chat/completions`) on the leased endpoint and hand the
    /// parsed JSON to `accept`, retrying what can heal. `accept` returning `Err` marks the
    /// response unusable but perhaps transient (no logprobs, an error object with status 200).
    ///
    /// Returns `Ok(Ok(t))` on success, `Ok(Err(why))` when the attempts ran out (the caller marks
    /// the pair missing and goes on) and `Err` for failures that stop the run.
    pub fn post<T>(
        &self,
        lease: &Lease<'_>,
        path: &str,
        body: &Value,
        accept: impl Fn(&Value) -> std::result::Result<T, String>,
    ) -> Result<std::result::Result<T, String>> {
        let n = self.endpoints.len();
        let mut last = String::new();
        for attempt in 0..self.opts.max_attempts {
            // A failed attempt moves to the next endpoint, so one dead server does not cost a
            // group all its tries.
            let ep = &self.endpoints[(lease.index + attempt as usize) % n];
            let failure = match self.attempt(ep, path, body) {
                Ok(v) => match accept(&v) {
                    Ok(t) => {
                        self.successes.fetch_add(1, Ordering::Relaxed);
                        return Ok(Ok(t));
                    }
                    Err(why) => Failure::Transient {
                        why,
                        retry_after: None,
                    },
                },
                Err(f) => f,
            };
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Transient { why, retry_after } => {
                    last = format!("{}: {why}", ep.url);
                    if attempt + 1 < self.opts.max_attempts {
                        std::thread::sleep(self.backoff(attempt, retry_after));
                    }
                }
            }
        }
        let gave_up = self.gave_up.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.scrub(last);
        if self.successes.load(Ordering::Relaxed) == 0 && gave_up >= GIVE_UP_WITHOUT_ANY_SUCCESS {
            return Err(Error::Remote {
                endpoint: self.endpoints().join(", "),
                what: format!(
                    "no request has succeeded; {gave_up} gave up after {} attempts each (last: {last})",
                    self.opts.max_attempts
                ),
                hint: "check that the server is running and --endpoint is its base URL (…/v1), that it returns logprobs, and --timeout".into(),
            });
        }
        Ok(Err(format!(
            "gave up after {} attempts (last: {last})",
            self.opts.max_attempts
        )))
    }

    /// Wait before retry `attempt + 1`: base·2^attempt with equal jitter, capped, and never less
    /// than the server's Retry-After.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.opts.backoff_max);
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        let wait = exp.mul_f64(jitter);
        match retry_after {
            Some(ra) => wait.max(ra.min(self.opts.retry_after_max)),
            None => wait,
        }
    }

    fn attempt(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &Value,
    ) -> std::result::Result<Value, Failure> {
        let url = format!("{}{path}", ep.url.base());
        let mut req = self.agent.post(&url).header("Accept", "application/json");
        if let Some(Secret(k)) = &ep.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = match req.send_json(body) {
            Ok(r) => r,
            Err(e) => return Err(self.transport_failure(ep, e)),
        };
        let code = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => {
                return Err(Failure::Transient {
                    why: format!("HTTP {code}, body unreadable: {e}"),
                    retry_after,
                })
            }
        };
        if (200..300).contains(&code) {
            return serde_json::from_str(&text).map_err(|e| Failure::Transient {
                why: format!("HTTP {code} but the body is not JSON ({e})"),
                retry_after: None,
            });
        }
        let msg = self.scrub(server_message(&text));
        if code == 408 || code == 409 || code == 425 || code == 429 || code >= 500 {
            return Err(Failure::Transient {
                why: format!("HTTP {code}: {msg}"),
                retry_after,
            });
        }
        let hint = if matches!(code, 401 | 403) && ep.key.is_none() && self.withheld_openai_key {
            "OPENAI_API_KEY is sent only over https: set MAKD_API_KEY to send a key to this endpoint"
        } else {
            hint_for_status(code)
        };
        Err(Failure::Fatal(Error::Remote {
            endpoint: ep.url.to_string(),
            what: format!("HTTP {code} from {path}: {msg}"),
            hint: hint.into(),
        }))
    }

    fn transport_failure(&self, ep: &Endpoint, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::BadUri(u) => Failure::Fatal(input(
                format!("bad endpoint URL: {}", self.scrub(strip_credentials(&u))),
                "--endpoint",
                "give the server's base URL, e.g. http://127.0.0.1:8000/v1",
            )),
            ureq::Error::InvalidProxyUrl => Failure::Fatal(input(
                "the proxy URL in the environment is invalid",
                "HTTP_PROXY / HTTPS_PROXY / ALL_PROXY",
                "fix or unset the proxy variable",
            )),
            ureq::Error::Timeout(t) => Failure::Transient {
                why: format!("timed out ({t}) after {:?}", self.opts.timeout),
                retry_after: None,
            },
            other => Failure::Transient {
                why: self.scrub(format!("{other} (to {})", ep.url)),
                retry_after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(
            normalize_endpoint("http://h:1/v1/").unwrap(),
            "http://h:1/v1"
        );
        assert_eq!(
            normalize_endpoint("https://api.x.com/v1/chat/completions").unwrap(),
            "https://api.x.com/v1"
        );
        assert_eq!(
            normalize_endpoint("http://h/openai/v1").unwrap(),
            "http://h/openai/v1"
        );
        assert!(normalize_endpoint("127.0.0.1:8000").is_err());
        assert!(normalize_endpoint("http:///v1").is_err());
        assert_eq!(strip_credentials("http://u:secret@h:1/v1"), "http://h:1/v1");
        assert_eq!(strip_credentials("http://h:1/v1"), "http://h:1/v1");
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(server_message(r#"{"detail":"bad"}"#), "bad");
        assert_eq!(server_message("plain text"), "plain text");
        assert_eq!(server_message(""), "(empty body)");
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:27:55 GMT").unwrap();
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(p("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(p("-1"), None);
        assert_eq!(
            p("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(5))
        );
        // A date already past: retry now.
        assert_eq!(p("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("soon"), None);
    }

    /// A one-shot HTTP server on loopback: answers each request with the next canned response and
    /// records when each request arrived.
    fn canned_server(
        responses: Vec<String>,
    ) -> (String, std::thread::JoinHandle<Vec<std::time::Instant>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/v1",
            listener.local_addr().unwrap().port()
        );
        let h = std::thread::spawn(move || {
            let mut arrived = Vec::new();
            for resp in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                arrived.push(std::time::Instant::now());
                let mut w = stream;
                w.write_all(resp.as_bytes()).unwrap();
                w.flush().unwrap();
            }
            arrived
        });
        (url, h)
    }

    fn http(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn a_429_waits_for_its_retry_after_date() {
        // The backoff alone would retry after ~1 ms; the header's date (2 s ahead, whole seconds)
        // must hold the retry back by more than one second.
        let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
        let (url, server) = canned_server(vec![
            http(
                "429 Too Many Requests",
                &format!("Retry-After: {at}\r\n"),
                "{}",
            ),
            http("200 OK", "", r#"{"ok":true}"#),
        ]);
        let c = Client::with_api_key(
            &[url.parse().unwrap()],
            ClientOptions {
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(1),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let lease = c.lease();
        let got = c
            .post(&lease, "/chat/completions", &serde_json::json!({}), |v| {
                Ok(v["ok"].as_bool())
            })
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(true));
        let arrived = server.join().unwrap();
        let waited = arrived[1] - arrived[0];
        assert!(
            waited >= Duration::from_millis(990),
            "retried after {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "retried after {waited:?}");
    }

    #[test]
    fn openai_key_goes_over_https_only_and_makd_key_everywhere() {
        let http_ep: EndpointUrl = "http://127.0.0.1:9/v1".parse().unwrap();
        let https_ep: EndpointUrl = "https://api.example.com/v1".parse().unwrap();
        let openai_only = ApiKeys {
            any: None,
            https_only: Some("sk-openai".into()),
        };
        assert!(openai_only.for_endpoint(&http_ep).is_none());
        assert_eq!(
            openai_only.for_endpoint(&https_ep).map(|s| s.0),
            Some("sk-openai".into())
        );
        let both = ApiKeys {
            any: Some("mk".into()),
            https_only: Some("sk-openai".into()),
        };
        assert_eq!(both.for_endpoint(&http_ep).map(|s| s.0), Some("mk".into()));
        assert_eq!(both.for_endpoint(&https_ep).map(|s| s.0), Some("mk".into()));
        let c =
            Client::with_keys(&[http_ep, https_ep], ClientOptions::default(), openai_only).unwrap();
        assert!(c.endpoints[0].key.is_none());
        assert!(c.endpoints[1].key.is_some());
        assert!(c.withheld_openai_key);
    }

    #[test]
    fn the_openai_key_is_not_sent_to_a_plain_http_server() {
        // What the server receives, end to end: no Authorization header over http.
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/v1",
            listener.local_addr().unwrap().port()
        );
        let h = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut w = stream;
            w.write_all(http("200 OK", "", "{}").as_bytes()).unwrap();
            head
        });
        let keys = ApiKeys {
            any: None,
            https_only: Some("sk-openai-SECRET".into()),
        };
        let c = Client::with_keys(&[url.parse().unwrap()], ClientOptions::default(), keys).unwrap();
        let lease = c.lease();
        c.post(&lease, "/chat/completions", &serde_json::json!({}), |_| {
            Ok(())
        })
        .unwrap()
        .unwrap();
        let head = h.join().unwrap().to_ascii_lowercase();
        assert!(!head.contains("authorization"), "{head}");
        assert!(!head.contains("sk-openai-secret"), "{head}");
    }

    #[test]
    fn url_credentials_reach_no_debug_display_or_message() {
        let ep: EndpointUrl = "http://alice:hunter2@127.0.0.1:9/v1".parse().unwrap();
        assert_eq!(ep.to_string(), "http://127.0.0.1:9/v1");
        assert!(!format!("{ep:?}").contains("hunter2"));
        let c = Client::with_api_key(&[ep], ClientOptions::default(), None).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.endpoints(), vec!["http://127.0.0.1:9/v1".to_string()]);
        assert_eq!(
            c.scrub("connect to http://alice:hunter2@127.0.0.1:9/v1 failed".into()),
            "connect to http://127.0.0.1:9/v1 failed"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let c = Client::with_api_key(
            &["http://127.0.0.1:9/v1".parse().unwrap()],
            ClientOptions {
                backoff_base: Duration::from_millis(100),
                backoff_max: Duration::from_millis(1000),
                retry_after_max: Duration::from_secs(5),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        for attempt in 0..8u32 {
            let d = c.backoff(attempt, None);
            let full = Duration::from_millis(100 * (1u64 << attempt)).min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(
            c.backoff(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            c.backoff(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn lease_spreads_by_least_in_flight() {
        let eps: Vec<EndpointUrl> = (1..=3)
            .map(|i| format!("http://127.0.0.1:{i}/v1").parse().unwrap())
            .collect();
        let c = Client::with_api_key(&eps, ClientOptions::default(), None).unwrap();
        let a = c.lease();
        let b = c.lease();
        let d = c.lease();
        let mut got = vec![a.index(), b.index(), d.index()];
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        let freed = b.index();
        drop(b);
        assert_eq!(c.lease().index(), freed);
    }

    #[test]
    fn key_is_scrubbed_and_never_debug_printed() {
        let c = Client::with_api_key(
            &["http://127.0.0.1:9/v1".parse().unwrap()],
            ClientOptions::default(),
            Some("sk-SECRET-123".into()),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("sk-SECRET-123"));
        assert_eq!(c.scrub("echo sk-SECRET-123 back".into()), "echo *** back");
    }
}
