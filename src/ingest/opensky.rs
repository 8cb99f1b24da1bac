//! The OpenSky Network REST client (`GET /states/all`, OAuth2 client credentials) and the
//! polling source built on it. The contract is `../shared/OPENSKY.md`:
//!
//! - rows have 17 fields, 18 with `extended=1` (extra fields are ignored); floats may be JSON
//!   integers; `states` is `null` when nothing matches; callsigns are space-padded;
//! - a token from the Keycloak endpoint lasts `expires_in` seconds (1800 when missing) and
//!   is renewed 30 s before it expires; a 401 renews it once and retries;
//! - anonymous snapshots move every 10 s, authenticated ones every 5 s: polling faster
//!   returns the same snapshot, so the interval is never shorter;
//! - every call costs credits by bounding-box area; `X-Rate-Limit-Remaining` says what is
//!   left; a 429 says when to come back in `X-Rate-Limit-Retry-After-Seconds`.
//!
//! A row that does not fit the contract is passed on as its own JSON text, so validation
//! sends it to the dead-letter topic with a reason instead of losing it.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::Source;
use super::record::RawRecord;
use super::validate::{Rejection, reason};
use crate::error::{Error, Result};

pub const DEFAULT_API_URL: &str = "https://opensky-network.org/api";
pub const DEFAULT_AUTH_URL: &str =
    "https://auth.opensky-network.org/auth/realms/opensky-network/protocol/openid-connect/token";

/// OAuth2 client credentials. `Debug` never shows the secret.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    #[serde(rename = "clientId")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// From `credentials.json` (as downloaded from OpenSky) if given, else from
    /// `OPENSKY_CLIENT_ID` / `OPENSKY_CLIENT_SECRET`, else none (anonymous).
    pub fn load(file: Option<&Path>) -> Result<Option<Self>> {
        if let Some(path) = file {
            let text = std::fs::read(path)
                .map_err(|e| Error::io("reading --opensky-credentials", path, e))?;
            let c: Credentials = serde_json::from_slice(&text).map_err(|e| {
                Error::Config(format!(
                    "--opensky-credentials {}: expected {{\"clientId\": ..., \"clientSecret\": ...}} ({})",
                    path.display(),
                    // serde's message may quote the input; keep only where it failed.
                    format_args!("line {} column {}", e.line(), e.column())
                ))
            })?;
            return Ok(Some(c));
        }
        match (
            std::env::var("OPENSKY_CLIENT_ID"),
            std::env::var("OPENSKY_CLIENT_SECRET"),
        ) {
            (Ok(client_id), Ok(client_secret)) if !client_id.is_empty() => Ok(Some(Self {
                client_id,
                client_secret,
            })),
            _ => Ok(None),
        }
    }
}

/// A bounding box in WGS-84 degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub lamin: f64,
    pub lomin: f64,
    pub lamax: f64,
    pub lomax: f64,
}

impl std::str::FromStr for BoundingBox {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let v: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("{s:?} is not four numbers lamin,lomin,lamax,lomax"))?;
        let [lamin, lomin, lamax, lomax] = v[..] else {
            return Err(format!("{s:?} is not four numbers lamin,lomin,lamax,lomax"));
        };
        if !(-90.0..=90.0).contains(&lamin) || !(-90.0..=90.0).contains(&lamax) || lamin >= lamax {
            return Err(format!(
                "{s:?}: latitudes must be in [-90, 90] with lamin < lamax"
            ));
        }
        if !(-180.0..=180.0).contains(&lomin)
            || !(-180.0..=180.0).contains(&lomax)
            || lomin >= lomax
        {
            return Err(format!(
                "{s:?}: longitudes must be in [-180, 180] with lomin < lomax (no antimeridian wrap)"
            ));
        }
        Ok(Self {
            lamin,
            lomin,
            lamax,
            lomax,
        })
    }
}

impl BoundingBox {
    pub fn area(&self) -> f64 {
        (self.lamax - self.lamin) * (self.lomax - self.lomin)
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        (self.lamin..=self.lamax).contains(&lat) && (self.lomin..=self.lomax).contains(&lon)
    }
}

/// Credits one `/states/all` call costs (OPENSKY.md section 3; the exact boundaries are
/// unconfirmed: an area on a boundary takes the cheaper tier).
pub fn credit_cost(bbox: Option<&BoundingBox>) -> u32 {
    match bbox.map(BoundingBox::area) {
        Some(a) if a <= 25.0 => 1,
        Some(a) if a <= 100.0 => 2,
        Some(a) if a <= 400.0 => 3,
        _ => 4,
    }
}

/// A parsed `/states/all` response.
#[derive(Debug)]
pub struct States {
    /// The snapshot's time (Unix s).
    pub time: i64,
    /// One raw record's JSON per state that fits the contract.
    pub payloads: Vec<Vec<u8>>,
    /// (icao24, last_contact) of each payload, in order (for "unchanged" detection).
    pub keys: Vec<(String, i64)>,
    /// The rows that do not fit, each with why and its own JSON (for the dead-letter topic).
    pub rejected: Vec<(Rejection, Vec<u8>)>,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A state vector's fields in their order (OPENSKY.md), for error messages.
const FIELDS: [&str; 18] = [
    "icao24",
    "callsign",
    "origin_country",
    "time_position",
    "last_contact",
    "longitude",
    "latitude",
    "baro_altitude",
    "on_ground",
    "velocity",
    "true_track",
    "vertical_rate",
    "sensors",
    "geo_altitude",
    "squawk",
    "spi",
    "position_source",
    "category",
];

/// "field 5 (longitude)".
fn field(i: usize) -> String {
    match FIELDS.get(i) {
        Some(name) => format!("field {i} ({name})"),
        None => format!("field {i}"),
    }
}

fn opt_f64(row: &[Value], i: usize) -> std::result::Result<Option<f64>, String> {
    match row.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => num(v)
            .map(Some)
            .ok_or_else(|| format!("{} is not a number", field(i))),
    }
}

fn opt_i64(row: &[Value], i: usize) -> std::result::Result<Option<i64>, String> {
    match row.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("{} is not an integer", field(i))),
    }
}

fn opt_i32(row: &[Value], i: usize) -> std::result::Result<Option<i32>, String> {
    opt_i64(row, i)?
        .map(|v| {
            i32::try_from(v)
                .map_err(|_| format!("{} = {v} does not fit a 32-bit integer", field(i)))
        })
        .transpose()
}

fn opt_str(row: &[Value], i: usize) -> std::result::Result<Option<String>, String> {
    match row.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{} is not a string", field(i))),
    }
}

fn req_bool(row: &[Value], i: usize) -> std::result::Result<bool, String> {
    row.get(i)
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("{} is not a boolean", field(i)))
}

/// One state row -> a raw record (OpenSky units; timestamp = time_position, else
/// last_contact).
pub fn state_row(row: &[Value]) -> std::result::Result<RawRecord, String> {
    if row.len() < 17 {
        return Err(format!(
            "a state has {} fields, at least 17 expected",
            row.len()
        ));
    }
    let icao24 = opt_str(row, 0)?
        .ok_or("field 0 (icao24) is null")?
        .to_ascii_lowercase();
    let last_contact = opt_i64(row, 4)?.ok_or("field 4 (last_contact) is null")?;
    let time_position = opt_i64(row, 3)?;
    let at = time_position.unwrap_or(last_contact);
    let timestamp = DateTime::<Utc>::from_timestamp(at, 0)
        .ok_or_else(|| format!("time {at} is out of range"))?;
    let callsign = opt_str(row, 1)?
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let sensors = match row.get(12) {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_i64().and_then(|i| i32::try_from(i).ok()))
                .collect::<Option<Vec<i32>>>()
                .ok_or("field 12 (sensors) is not a list of 32-bit integers")?,
        ),
        Some(_) => return Err("field 12 (sensors) is not a list".into()),
    };
    Ok(RawRecord {
        timestamp,
        icao24,
        callsign,
        origin_country: opt_str(row, 2)?.unwrap_or_default(),
        longitude: opt_f64(row, 5)?,
        latitude: opt_f64(row, 6)?,
        baro_altitude: opt_f64(row, 7)?,
        on_ground: req_bool(row, 8)?,
        velocity: opt_f64(row, 9)?,
        heading: opt_f64(row, 10)?,
        vertical_rate: opt_f64(row, 11)?,
        sensors,
        geo_altitude: opt_f64(row, 13)?,
        squawk: opt_str(row, 14)?,
        spi: req_bool(row, 15)?,
        position_source: opt_i32(row, 16)?.ok_or("field 16 (position_source) is null")?,
        category: opt_i32(row, 17)?,
        last_contact,
        ingest_timestamp: None,
    })
}

/// Parses a `/states/all` body.
pub fn parse_states(body: &[u8]) -> std::result::Result<States, Rejection> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(reason::MALFORMED_JSON, format!("invalid JSON: {e}")))?;
    let schema = |message: &str| Rejection::new(reason::SCHEMA, message);
    let time = v
        .get("time")
        .and_then(Value::as_i64)
        .ok_or_else(|| schema("the response has no integer \"time\""))?;
    let rows = match v.get("states") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows.clone(),
        Some(_) => return Err(schema("\"states\" is neither a list nor null")),
    };
    let mut payloads = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    let mut rejected = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let parsed = match &row {
            Value::Array(fields) => state_row(fields),
            _ => Err("a state is not a list".into()),
        };
        match parsed {
            Ok(r) => {
                keys.push((r.icao24.clone(), r.last_contact));
                payloads.push(r.to_json());
            }
            Err(e) => rejected.push((
                schema(&format!("state {i} of the response at {time}: {e}")),
                row.to_string().into_bytes(),
            )),
        }
    }
    Ok(States {
        time,
        payloads,
        keys,
        rejected,
    })
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("rate limited (429): retry after {0:?}")]
    RateLimited(Duration),
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("bad response: {0}")]
    Invalid(String),
    #[error("token endpoint: {0}")]
    Auth(String),
}

/// A successful poll: the body and the credits left.
#[derive(Debug)]
pub struct Poll {
    pub body: Vec<u8>,
    pub remaining: Option<i64>,
}

/// Endpoints, auth and the query of `/states/all`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub api_url: String,
    pub auth_url: String,
    pub credentials: Option<Credentials>,
    pub bbox: Option<BoundingBox>,
    pub timeout: Duration,
}

pub struct OpenSkyClient {
    http: reqwest::Client,
    config: ClientConfig,
    token: Option<(String, Instant)>,
    pub token_fetches: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// Renew this long before the token expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

impl OpenSkyClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("contrail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            token: None,
            token_fetches: 0,
        })
    }

    pub fn authenticated(&self) -> bool {
        self.config.credentials.is_some()
    }

    async fn token(&mut self) -> std::result::Result<Option<String>, PollError> {
        let Some(c) = &self.config.credentials else {
            return Ok(None);
        };
        if let Some((t, expires)) = &self.token
            && Instant::now() + TOKEN_MARGIN < *expires
        {
            return Ok(Some(t.clone()));
        }
        self.token_fetches += 1;
        let response = self
            .http
            .post(&self.config.auth_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c.client_id.as_str()),
                ("client_secret", c.client_secret.as_str()),
            ])
            .send()
            .await
            .map_err(|e| PollError::Auth(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PollError::Auth(format!("HTTP {}", status.as_u16())));
        }
        let t: TokenResponse = response
            .json()
            .await
            .map_err(|e| PollError::Auth(format!("bad token response: {}", e.without_url())))?;
        let expires =
            Instant::now() + Duration::from_secs(t.expires_in.unwrap_or(1800).min(86_400));
        self.token = Some((t.access_token.clone(), expires));
        Ok(Some(t.access_token))
    }

    fn states_url(&self) -> String {
        let mut url = format!(
            "{}/states/all?extended=1",
            self.config.api_url.trim_end_matches('/')
        );
        if let Some(b) = &self.config.bbox {
            url.push_str(&format!(
                "&lamin={}&lomin={}&lamax={}&lomax={}",
                b.lamin, b.lomin, b.lamax, b.lomax
            ));
        }
        url
    }

    /// One `GET /states/all`; a 401 renews the token once and retries.
    pub async fn states(&mut self) -> std::result::Result<Poll, PollError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut request = self.http.get(self.states_url());
            if let Some(t) = &token {
                request = request.bearer_auth(t);
            }
            let response = request
                .send()
                .await
                .map_err(|e| PollError::Transport(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            let remaining = header("X-Rate-Limit-Remaining");
            let retry_after = header("X-Rate-Limit-Retry-After-Seconds");
            match status {
                200 => {
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| PollError::Transport(e.without_url().to_string()))?;
                    return Ok(Poll {
                        body: body.to_vec(),
                        remaining,
                    });
                }
                401 if attempt == 0 && token.is_some() => {
                    tracing::info!("OpenSky answered 401: renewing the token and retrying once");
                    self.token = None;
                }
                429 => {
                    return Err(PollError::RateLimited(Duration::from_secs(
                        // Credits come back within a day; a larger value would overflow the clock.
                        retry_after.unwrap_or(60).clamp(1, 86_400) as u64,
                    )));
                }
                _ => {
                    let body = response.text().await.unwrap_or_default();
                    return Err(PollError::Http {
                        status,
                        body: body.chars().take(200).collect(),
                    });
                }
            }
        }
        Err(PollError::Http {
            status: 401,
            body: "unauthorized after renewing the token".into(),
        })
    }
}

/// Polling settings.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub interval: Duration,
    /// Exponential backoff after failures: from `backoff_min`, doubling, capped.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Stop after this many successful polls (record, tests); None = forever.
    pub max_polls: Option<u64>,
}

/// The snapshot resolution of the tier: polling faster only returns the same snapshot.
pub fn min_interval(authenticated: bool) -> Duration {
    Duration::from_secs(if authenticated { 5 } else { 10 })
}

/// Counters the source keeps (read by the health endpoint, status lines and tests).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PollStats {
    pub polls: u64,
    pub failures: u64,
    /// Failed polls by kind: rate_limited, http_5xx, http_4xx, transport, invalid, auth.
    pub failures_by_kind: std::collections::BTreeMap<&'static str, u64>,
    pub unchanged: u64,
    pub credits_remaining: Option<i64>,
    pub authenticated: bool,
}

impl PollError {
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::RateLimited(_) => "rate_limited",
            PollError::Http { status, .. } if *status >= 500 => "http_5xx",
            PollError::Http { .. } => "http_4xx",
            PollError::Transport(_) => "transport",
            PollError::Invalid(_) => "invalid",
            PollError::Auth(_) => "auth",
        }
    }
}

/// Polls `/states/all` forever (or `max_polls` times): each state becomes one payload;
/// states unchanged since the previous poll (same icao24 and last_contact) are skipped.
/// Failures back off and never stop the source.
pub struct OpenSkySource {
    client: OpenSkyClient,
    poll: PollConfig,
    next_poll: Instant,
    failures: u32,
    previous: std::collections::HashMap<String, i64>,
    stats: std::sync::Arc<std::sync::Mutex<PollStats>>,
    warned_credits: bool,
    /// Raw bodies of successful polls go here too (`contrail record`).
    pub keep_bodies: bool,
    pub bodies: Vec<(DateTime<Utc>, Vec<u8>)>,
    /// Rows off the contract since the last [`Source::take_rejected`].
    rejected: Vec<(Rejection, Vec<u8>)>,
}

impl OpenSkySource {
    pub fn new(client: OpenSkyClient, mut poll: PollConfig) -> Self {
        let authenticated = client.authenticated();
        let floor = min_interval(authenticated);
        if poll.interval < floor {
            tracing::warn!(
                requested = ?poll.interval,
                used = ?floor,
                "--poll-interval is shorter than OpenSky's snapshot resolution for this tier"
            );
            poll.interval = floor;
        }
        if client.authenticated() {
            tracing::info!("OpenSky: authenticated (OAuth2 client credentials)");
        } else {
            tracing::info!(
                "OpenSky: anonymous (no --opensky-credentials or OPENSKY_CLIENT_ID/SECRET): 400 credits a day, 10 s resolution"
            );
        }
        Self {
            client,
            poll,
            next_poll: Instant::now(),
            failures: 0,
            previous: std::collections::HashMap::new(),
            stats: std::sync::Arc::new(std::sync::Mutex::new(PollStats {
                authenticated,
                ..PollStats::default()
            })),
            warned_credits: false,
            keep_bodies: false,
            bodies: Vec::new(),
            rejected: Vec::new(),
        }
    }

    pub fn client(&self) -> &OpenSkyClient {
        &self.client
    }

    /// A copy of the counters.
    pub fn stats(&self) -> PollStats {
        self.stats.lock().expect("stats lock").clone()
    }

    fn fail(&self, e: &PollError) {
        let mut s = self.stats.lock().expect("stats lock");
        s.failures += 1;
        *s.failures_by_kind.entry(e.kind()).or_default() += 1;
    }

    fn backoff(&mut self) -> Duration {
        let exp = self.poll.backoff_min.as_secs_f64() * 2f64.powi(self.failures.min(20) as i32);
        let capped = exp.min(self.poll.backoff_max.as_secs_f64());
        // Full jitter over the upper half, so clients do not retry in step.
        let jittered = capped * rand::rng().random_range(0.5..=1.0);
        self.failures += 1;
        Duration::from_secs_f64(jittered)
    }

    fn account_credits(&mut self, remaining: Option<i64>) {
        self.stats.lock().expect("stats lock").credits_remaining = remaining;
        let Some(left) = remaining else { return };
        let cost = i64::from(credit_cost(self.client.config.bbox.as_ref()));
        let polls_left = left / cost.max(1);
        let hour = (3600.0 / self.poll.interval.as_secs_f64()) as i64;
        if polls_left < hour && !self.warned_credits {
            tracing::warn!(
                credits_left = left,
                polls_left,
                cost_per_poll = cost,
                "OpenSky credits will run out within the hour at this poll interval"
            );
            self.warned_credits = true;
        } else if polls_left >= hour {
            self.warned_credits = false;
        }
    }

    /// One poll cycle: waits for its time, polls, returns the new payloads (possibly
    /// none). Errors are handled here (logged, backed off), never returned.
    pub async fn cycle(&mut self) -> Vec<Vec<u8>> {
        tokio::time::sleep_until(self.next_poll).await;
        let started = Instant::now();
        let result = match self.client.states().await {
            Ok(poll) => parse_states(&poll.body)
                .map(|s| (s, poll))
                .map_err(|r| PollError::Invalid(r.message)),
            Err(e) => Err(e),
        };
        match result {
            Ok((states, poll)) => {
                self.failures = 0;
                self.stats.lock().expect("stats lock").polls += 1;
                self.account_credits(poll.remaining);
                self.next_poll = started + self.poll.interval;
                if self.keep_bodies {
                    self.bodies.push((Utc::now(), poll.body));
                }
                let mut current = std::collections::HashMap::with_capacity(states.keys.len());
                let mut out = Vec::with_capacity(states.payloads.len());
                let mut unchanged_now = 0;
                for (payload, (icao, last)) in states.payloads.into_iter().zip(states.keys) {
                    let unchanged = self.previous.get(&icao) == Some(&last);
                    current.insert(icao, last);
                    if unchanged {
                        unchanged_now += 1;
                    } else {
                        out.push(payload);
                    }
                }
                self.rejected.extend(states.rejected);
                self.previous = current;
                self.stats.lock().expect("stats lock").unchanged += unchanged_now;
                out
            }
            Err(e @ PollError::RateLimited(_)) => {
                self.fail(&e);
                let PollError::RateLimited(wait) = e else {
                    unreachable!("matched above")
                };
                let resume = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                tracing::warn!(
                    wait_s = wait.as_secs(),
                    resume_at = %resume.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "OpenSky: out of credits (429); polling resumes then"
                );
                self.next_poll = Instant::now() + wait;
                Vec::new()
            }
            Err(e) => {
                self.fail(&e);
                let wait = self.backoff();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "OpenSky poll failed");
                self.next_poll = Instant::now() + wait;
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl Source for OpenSkySource {
    async fn next_chunk(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        if self.poll.max_polls.is_some_and(|n| self.stats().polls >= n) {
            return Ok(None);
        }
        Ok(Some(self.cycle().await))
    }

    fn take_rejected(&mut self) -> Vec<(Rejection, Vec<u8>)> {
        std::mem::take(&mut self.rejected)
    }

    fn health(&self) -> Option<super::SourceHealth> {
        let stats = std::sync::Arc::clone(&self.stats);
        Some(std::sync::Arc::new(move || {
            serde_json::to_value(&*stats.lock().expect("stats lock")).unwrap_or_default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"time":1752401607,"states":[
 ["e49ef1","GLO1497 ","Brazil",1752401546,1752401567,-46.5276,-23.4498,861.06,false,75.19,73.3,-3.58,null,982.98,"4252",false,0,4],
 ["e8027e","LPE2264 ","Chile",1752401342,1752401585,-77.1296,-12.0115,null,true,83.29,149.16,9.1,null,null,null,false,0,1]]}"#;

    fn record(p: &[u8]) -> RawRecord {
        serde_json::from_slice(p).unwrap()
    }

    #[test]
    fn parses_the_documented_example_with_lon_before_lat() {
        let s = parse_states(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(s.time, 1_752_401_607);
        assert_eq!(s.payloads.len(), 2);
        let r = record(&s.payloads[0]);
        assert_eq!(r.icao24, "e49ef1");
        assert_eq!(r.callsign.as_deref(), Some("GLO1497"));
        assert_eq!((r.longitude, r.latitude), (Some(-46.5276), Some(-23.4498)));
        assert_eq!(r.timestamp.timestamp(), 1_752_401_546, "time_position");
        assert_eq!(r.last_contact, 1_752_401_567);
        assert_eq!(r.category, Some(4));
        assert_eq!(r.squawk.as_deref(), Some("4252"));
        let g = record(&s.payloads[1]);
        assert!(g.on_ground && g.baro_altitude.is_none());
        assert_eq!(s.keys[1], ("e8027e".to_string(), 1_752_401_585));
    }

    #[test]
    fn seventeen_fields_integers_null_states_and_odd_rows() {
        let body = br#"{"time":100,"states":[
            ["ABC123","  ","X",null,90,1,2,12192,false,0,0,0,[1,2],null,null,false,0],
            ["abc124",null,"X",80,90,1,2,3,false,4,5,6,null,7,null,false,2,3,"extra"],
            ["short",1],
            "not a list",
            ["abc125","C","X",80,90,"north",2,3,false,4,5,6,null,7,null,false,2]
        ]}"#;
        let s = parse_states(body).unwrap();
        let a = record(&s.payloads[0]);
        assert_eq!(a.icao24, "abc123", "lower-cased");
        assert_eq!(a.callsign, None, "blank callsign");
        assert_eq!(
            a.timestamp.timestamp(),
            90,
            "no time_position: last_contact"
        );
        assert_eq!(a.baro_altitude, Some(12192.0), "integer-valued float");
        assert_eq!(a.category, None, "17 fields: no category");
        assert_eq!(a.sensors, Some(vec![1, 2]));
        let b = record(&s.payloads[1]);
        assert_eq!(
            (b.category, b.position_source),
            (Some(3), 2),
            "extras ignored"
        );
        assert_eq!((s.payloads.len(), s.keys.len()), (2, 2));
        // The rows that do not fit: each with its own error, and its JSON as it came.
        let rejected: Vec<(&str, &str, String)> = s
            .rejected
            .iter()
            .map(|(r, row)| {
                (
                    r.reason,
                    r.message.as_str(),
                    String::from_utf8_lossy(row).into(),
                )
            })
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    reason::SCHEMA,
                    "state 2 of the response at 100: a state has 2 fields, at least 17 expected",
                    r#"["short",1]"#.to_string()
                ),
                (
                    reason::SCHEMA,
                    "state 3 of the response at 100: a state is not a list",
                    r#""not a list""#.to_string()
                ),
                (
                    reason::SCHEMA,
                    "state 4 of the response at 100: field 5 (longitude) is not a number",
                    r#"["abc125","C","X",80,90,"north",2,3,false,4,5,6,null,7,null,false,2]"#
                        .to_string()
                ),
            ]
        );

        let empty = parse_states(br#"{"time":5,"states":null}"#).unwrap();
        assert!(empty.payloads.is_empty());
        let truncated = parse_states(br#"{"time":5,"states":[["a"#).unwrap_err();
        assert_eq!(truncated.reason, reason::MALFORMED_JSON);
        let no_time = parse_states(br#"{"states":[]}"#).unwrap_err();
        assert_eq!(no_time.reason, reason::SCHEMA);
        assert!(no_time.message.contains("\"time\""), "{}", no_time.message);
    }

    #[test]
    fn bounding_boxes_and_their_cost() {
        let b: BoundingBox = "45.8,5.9,47.8,10.5".parse().unwrap();
        assert!((b.area() - 9.2).abs() < 1e-9);
        assert_eq!(credit_cost(Some(&b)), 1);
        assert_eq!(credit_cost(Some(&"0,0,10,10".parse().unwrap())), 2);
        assert_eq!(credit_cost(Some(&"0,0,10,30".parse().unwrap())), 3);
        assert_eq!(credit_cost(Some(&"0,0,30,30".parse().unwrap())), 4);
        assert_eq!(credit_cost(None), 4);
        for bad in [
            "1,2,3",
            "a,b,c,d",
            "50,0,40,10",
            "0,170,10,-170",
            "0,0,95,10",
        ] {
            assert!(bad.parse::<BoundingBox>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_show_their_secret() {
        let c = Credentials {
            client_id: "me-api-client".into(),
            client_secret: "hunter2-very-secret".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("me-api-client") && !shown.contains("hunter2"),
            "{shown}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("credentials.json");
        std::fs::write(&bad, r#"{"clientId": "x", "clientSecret": hunter2}"#).unwrap();
        let e = Credentials::load(Some(&bad)).unwrap_err().to_string();
        assert!(
            e.contains("--opensky-credentials") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
