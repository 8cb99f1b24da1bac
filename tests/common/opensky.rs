//! An imitation of the OpenSky REST API (../shared/OPENSKY.md) on a loopback port, for tests
//! only: the Keycloak token endpoint with expiring tokens, `GET /api/states/all` serving
//! snapshots of a recording with the real time-resolution and bounding-box rules, daily
//! credits with the real headers, 429 with Retry-After, and injectable faults.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One snapshot: its time and its 18-field rows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub time: i64,
    pub rows: Vec<Value>,
}

/// A fault the next `/states/all` call suffers.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    /// Answer after this long (longer than the client's timeout = a timeout).
    Delay(Duration),
    /// A 200 whose body stops half-way.
    Truncated,
    /// Every token issued so far stops being valid (the next call gets 401).
    ExpireTokens,
}

#[derive(Debug)]
pub struct Config {
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime_s: u64,
    pub anonymous_credits: i64,
    pub user_credits: i64,
    pub retry_after_s: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client_id: "contrail-test-client".into(),
            client_secret: "not-a-real-secret-7f3a".into(),
            token_lifetime_s: 1800,
            anonymous_credits: 400,
            user_credits: 4000,
            retry_after_s: 3600,
        }
    }
}

/// What the server saw (for assertions).
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub token_requests: u32,
    pub states_calls: u32,
    /// (when, authorization header or None, status answered)
    pub calls: Vec<(Instant, Option<String>, u16)>,
    /// (icao24, last_contact) of every state served with a 200 (truncated bodies excluded).
    pub served: std::collections::HashSet<(String, i64)>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    snapshots: Vec<Snapshot>,
    /// Unix seconds at which snapshot 0 is served; snapshot k 5k seconds later, the last
    /// one from then on. Row times move by (epoch - the first snapshot's time).
    epoch: i64,
    tokens: HashMap<String, Instant>,
    next_token: u64,
    credits: HashMap<String, i64>,
    faults: VecDeque<Fault>,
    seen: Seen,
}

#[derive(Clone)]
pub struct OpenSkyServer {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl OpenSkyServer {
    /// Serves `snapshots` (5 s apart in the recording) on 127.0.0.1.
    pub async fn start(config: Config, snapshots: Vec<Snapshot>) -> Self {
        assert!(!snapshots.is_empty());
        let inner = Arc::new(Mutex::new(Inner {
            config,
            snapshots,
            epoch: now_s() - now_s() % 5,
            tokens: HashMap::new(),
            next_token: 1,
            credits: HashMap::new(),
            faults: VecDeque::new(),
            seen: Seen::default(),
        }));
        let app = Router::new()
            .route(
                "/auth/realms/opensky-network/protocol/openid-connect/token",
                post(token),
            )
            .route("/api/states/all", get(states))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { inner, addr }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn auth_url(&self) -> String {
        format!(
            "http://{}/auth/realms/opensky-network/protocol/openid-connect/token",
            self.addr
        )
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.lock().unwrap().faults.push_back(fault);
    }

    pub fn seen(&self) -> Seen {
        self.inner.lock().unwrap().seen.clone()
    }

    pub fn set_credits(&self, who: &str, credits: i64) {
        self.inner
            .lock()
            .unwrap()
            .credits
            .insert(who.to_string(), credits);
    }

    pub fn credentials(&self) -> (String, String) {
        let i = self.inner.lock().unwrap();
        (i.config.client_id.clone(), i.config.client_secret.clone())
    }
}

async fn token(
    State(inner): State<Arc<Mutex<Inner>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut i = inner.lock().unwrap();
    i.seen.token_requests += 1;
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id") == Some(&i.config.client_id)
        && form.get("client_secret") == Some(&i.config.client_secret);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"})),
        )
            .into_response();
    }
    let token = format!("tok-{}", i.next_token);
    i.next_token += 1;
    let lifetime = i.config.token_lifetime_s;
    i.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    axum::Json(json!({
        "access_token": token, "expires_in": lifetime, "refresh_expires_in": 0,
        "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"
    }))
    .into_response()
}

fn area_cost(q: &HashMap<String, String>) -> Result<(i64, Option<[f64; 4]>), String> {
    let keys = ["lamin", "lomin", "lamax", "lomax"];
    let given: Vec<Option<f64>> = keys
        .iter()
        .map(|k| q.get(*k).map(|v| v.parse::<f64>()))
        .map(|r| r.transpose())
        .collect::<Result<_, _>>()
        .map_err(|_| "bad bounding box".to_string())?;
    if given.iter().all(Option::is_none) {
        return Ok((4, None));
    }
    let [Some(a), Some(b), Some(c), Some(d)] = given[..] else {
        return Err("give all four of lamin, lomin, lamax, lomax".into());
    };
    let area = (c - a) * (d - b);
    let cost = if area <= 25.0 {
        1
    } else if area <= 100.0 {
        2
    } else if area <= 400.0 {
        3
    } else {
        4
    };
    Ok((cost, Some([a, b, c, d])))
}

async fn states(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (fault, answer) = {
        let mut i = inner.lock().unwrap();
        i.seen.states_calls += 1;
        let fault = i.faults.pop_front();
        if matches!(fault, Some(Fault::ExpireTokens)) {
            i.tokens.clear();
        }
        let answer = answer(&mut i, &q, auth.as_deref(), fault.as_ref());
        let status = answer.0.as_u16();
        i.seen.calls.push((Instant::now(), auth.clone(), status));
        (fault, answer)
    };
    let (status, extra, body) = answer;
    if let Some(Fault::Delay(d)) = fault {
        tokio::time::sleep(d).await;
    }
    let mut response = (status, body).into_response();
    for (k, v) in extra {
        response
            .headers_mut()
            .insert(k, HeaderValue::from_str(&v).unwrap());
    }
    response
}

type Answer = (StatusCode, Vec<(&'static str, String)>, String);

fn answer(
    i: &mut Inner,
    q: &HashMap<String, String>,
    auth: Option<&str>,
    fault: Option<&Fault>,
) -> Answer {
    let plain = |s: StatusCode, body: &str| (s, Vec::new(), body.to_string());
    if let Some(Fault::Status(code)) = fault {
        return plain(
            StatusCode::from_u16(*code).unwrap(),
            "<html><body>Service unavailable</body></html>",
        );
    }
    // Identity: a valid token, else anonymous; a token that is not valid is a 401.
    let who = match auth {
        None => "anonymous".to_string(),
        Some(h) => match h.strip_prefix("Bearer ") {
            Some(t) if i.tokens.get(t).is_some_and(|exp| *exp > Instant::now()) => {
                i.config.client_id.clone()
            }
            _ => return plain(StatusCode::UNAUTHORIZED, ""),
        },
    };
    let authenticated = who != "anonymous";
    let (cost, bbox) = match area_cost(q) {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
    };
    let pool = if authenticated {
        i.config.user_credits
    } else {
        i.config.anonymous_credits
    };
    let left = *i.credits.entry(who.clone()).or_insert(pool);
    if left < cost {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            vec![(
                "X-Rate-Limit-Retry-After-Seconds",
                i.config.retry_after_s.to_string(),
            )],
            "Too many requests".into(),
        );
    }
    i.credits.insert(who, left - cost);
    // Time resolution: anonymous ignores `time` and gets now - now mod 10; authenticated
    // gets time - time mod 5, at most 1 h back.
    let now = now_s();
    let t = if authenticated {
        let asked = q
            .get("time")
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(now);
        if asked < now - 3600 {
            return plain(StatusCode::BAD_REQUEST, "time is more than 1 hour ago");
        }
        asked - asked.rem_euclid(5)
    } else {
        now - now.rem_euclid(10)
    };
    let index = (t - i.epoch)
        .div_euclid(5)
        .clamp(0, i.snapshots.len() as i64 - 1) as usize;
    let snap = &i.snapshots[index];
    let shift = i.epoch - i.snapshots[0].time;
    let extended = matches!(
        q.get("extended").map(String::as_str),
        Some("1" | "true" | "True")
    );
    let rows: Vec<Value> = snap
        .rows
        .iter()
        .filter(|r| match bbox {
            None => true,
            Some([a, b, c, d]) => match (r[6].as_f64(), r[5].as_f64()) {
                (Some(lat), Some(lon)) => lat >= a && lat <= c && lon >= b && lon <= d,
                _ => false,
            },
        })
        .map(|r| {
            let mut row = r.as_array().unwrap().clone();
            for k in [3, 4] {
                if let Some(v) = row[k].as_i64() {
                    row[k] = json!(v + shift);
                }
            }
            if !extended {
                row.truncate(17);
            }
            Value::Array(row)
        })
        .collect();
    let states = if rows.is_empty() {
        Value::Null
    } else {
        Value::Array(rows)
    };
    let mut body = json!({"time": t, "states": states}).to_string();
    if matches!(fault, Some(Fault::Truncated)) {
        body.truncate(body.len() / 2);
    } else if let Value::Array(rows) = &states {
        for r in rows {
            i.seen
                .served
                .insert((r[0].as_str().unwrap().to_string(), r[4].as_i64().unwrap()));
        }
    }
    let remaining = i.credits[&if authenticated {
        i.config.client_id.clone()
    } else {
        "anonymous".to_string()
    }];
    (
        StatusCode::OK,
        vec![("X-Rate-Limit-Remaining", remaining.to_string())],
        body,
    )
}

/// Snapshots made from the project's simulator: every 5 s, each aircraft's latest report
/// as an 18-field OpenSky row (callsigns padded to 8, integer-valued floats kept as
/// numbers as serde writes them).
pub fn simulated_snapshots(aircraft: usize, count: usize, seed: u64) -> Vec<Snapshot> {
    use contrail::ingest::simulator::{Emitted, Simulator, SimulatorConfig};
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .to_utc();
    let mut sim = Simulator::new(SimulatorConfig {
        seed,
        aircraft,
        anomaly_rate: 0.0,
        invalid_rate: 0.0,
        report_interval_s: 5.0,
        start,
    });
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut snapshots = Vec::new();
    let mut t = start.timestamp();
    while snapshots.len() < count {
        for e in sim.tick() {
            if let Emitted::Record(r) = e {
                let row = json!([
                    r.icao24,
                    r.callsign.as_ref().map(|c| format!("{c:<8}")),
                    r.origin_country,
                    r.timestamp.timestamp(),
                    r.last_contact,
                    r.longitude,
                    r.latitude,
                    r.baro_altitude,
                    r.on_ground,
                    r.velocity,
                    r.heading,
                    r.vertical_rate,
                    r.sensors,
                    r.geo_altitude,
                    r.squawk,
                    r.spi,
                    r.position_source,
                    r.category
                ]);
                latest.insert(r.icao24.clone(), row);
            }
        }
        t += 1;
        if t % 5 == 0 && !latest.is_empty() {
            let mut rows: Vec<Value> = latest.values().cloned().collect();
            rows.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
            snapshots.push(Snapshot { time: t, rows });
        }
    }
    snapshots
}
