//! The admin HTTP/1.1 listener: health, metrics, the JSON API and the dashboard.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /healthz` | liveness: 200 while the process serves HTTP |
//! | `GET /readyz` | readiness: 200 when the broker core answers within a second, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /` , `GET /dashboard` | the dashboard page |
//! | `GET /api/v1/overview` | counts, rate history, `$SYS` values |
//! | `GET /api/v1/clients`, `GET /api/v1/clients/{id}` | connected clients |
//! | `DELETE /api/v1/clients/{id}`, `POST /api/v1/clients/{id}/disconnect` | disconnect a client |
//! | `GET /api/v1/sessions`, `GET /api/v1/sessions/{id}`, `DELETE /api/v1/sessions/{id}` | sessions |
//! | `GET /api/v1/subscriptions[?client_id=ID]` | subscriptions |
//! | `GET /api/v1/retained[?filter=F&limit=N&payload=false]` | retained messages |
//! | `GET /api/v1/retained/{topic}`, `DELETE /api/v1/retained/{topic}` | one retained message |
//! | `DELETE /api/v1/retained?filter=F` | retained messages matching a filter |
//! | `POST /api/v1/publish` | publish a message as the broker (JSON body, see `json::parse_publish`) |
//!
//! Path segments (client ids, topics) are percent-decoded. With a token configured, `/api/` and
//! `/metrics` need `Authorization: Bearer TOKEN`; the health endpoints and the page itself do not
//! (the page asks for the token and sends it with its API calls).

use super::api::{AdminCall, ApiError, Command, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, Reply};
use super::{json, prom};
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

/// The dashboard, one self-contained page.
const DASHBOARD: &str = include_str!("dashboard.html");
/// Largest request body (a publish), in bytes.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most admin connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Settings of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Required as `Authorization: Bearer TOKEN` on `/api/` and `/metrics` when set. Must be set
    /// when `listen` is not a loopback address.
    pub token: Option<String>,
    /// How long a request waits for the broker core.
    pub call_timeout: Duration,
}

impl AdminSettings {
    pub fn new(listen: SocketAddr, token: Option<String>) -> Self {
        Self {
            listen,
            token: token.filter(|t| !t.is_empty()),
            call_timeout: Duration::from_secs(5),
        }
    }

    /// Refuses an admin API open to the network without a token.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            anyhow::bail!(
                "the admin listener {} is not on loopback: set admin.token (or --admin-token / TERN_ADMIN_TOKEN) so that its API is not open to anyone",
                self.listen
            );
        }
        Ok(())
    }
}

/// A running admin listener.
pub struct AdminServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct State {
    settings: AdminSettings,
    calls: mpsc::Sender<AdminCall>,
    metrics: Arc<Metrics>,
}

impl AdminServer {
    /// Binds the listener and serves until `shutdown` turns true. `calls` reaches the task that
    /// owns the broker (the driver, or [`super::spawn_local`] in tests).
    pub async fn start(
        settings: AdminSettings,
        calls: mpsc::Sender<AdminCall>,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", settings.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, token = settings.token.is_some(), "admin listener (metrics, API, dashboard) on http://{addr}/");
        let state = Arc::new(State {
            settings,
            calls,
            metrics,
        });
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let (stream, _peer) = tokio::select! {
                    _ = shutdown.changed() => return,
                    r = listener.accept() => match r {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue; // too many admin connections: close this one
                };
                let state = state.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(&state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = shutdown.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                        }
                    }
                    drop(permit);
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the accept loop to end (after the shutdown signal).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// Stops accepting at once.
    pub fn abort(&self) {
        self.task.abort();
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn error(e: &ApiError) -> Resp {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &json!({"error": e.message}))
}

/// Compares without an early exit, so response time does not tell how much of a guess matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.settings.token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
}

async fn call(state: &State, cmd: Command) -> Result<Reply, ApiError> {
    let (call, rx) = AdminCall::new(cmd);
    let unavailable = || ApiError::unavailable("the broker core did not answer in time");
    let sent = tokio::time::timeout(state.settings.call_timeout, state.calls.send(call)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err(unavailable());
    }
    match tokio::time::timeout(state.settings.call_timeout, rx).await {
        Ok(Ok(r)) => r,
        _ => Err(unavailable()),
    }
}

async fn api(state: &State, cmd: Command) -> Resp {
    match call(state, cmd).await {
        Ok(Reply::Json(v)) => json_response(StatusCode::OK, &v),
        Ok(Reply::Stats(_)) => error(&ApiError {
            status: 500,
            message: "unexpected reply".into(),
        }),
        Err(e) => error(&e),
    }
}

async fn serve(state: &State, req: Request<Incoming>) -> Resp {
    state.metrics.admin_requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return respond(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            let quick = State {
                settings: AdminSettings {
                    call_timeout: Duration::from_secs(1),
                    ..state.settings.clone()
                },
                calls: state.calls.clone(),
                metrics: state.metrics.clone(),
            };
            return match call(&quick, Command::Ping).await {
                Ok(_) => respond(StatusCode::OK, "text/plain", "ready\n"),
                Err(e) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {}\n", e.message),
                ),
            };
        }
        (&Method::GET, "/" | "/dashboard" | "/dashboard/") => {
            return respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
        }
        _ => {}
    }
    let protected = path == "/metrics" || path.starts_with("/api/");
    if !protected {
        return error(&ApiError::not_found(format!("no such page: {path}")));
    }
    if !authorized(state, &req) {
        state
            .metrics
            .admin_auth_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut r = error(&ApiError {
            status: 401,
            message: "missing or wrong token: send Authorization: Bearer TOKEN".into(),
        });
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tern\""),
        );
        return r;
    }
    if path == "/metrics" {
        if method != Method::GET {
            return method_not_allowed();
        }
        let core = match call(state, Command::Stats).await {
            Ok(Reply::Stats(s)) => Some(s),
            _ => None,
        };
        return respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            prom::render(&state.metrics, core.as_deref()),
        );
    }
    let body = if method == Method::POST {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(&ApiError {
                    status: 413,
                    message: format!("request body larger than {MAX_BODY} bytes or unreadable"),
                });
            }
        }
    } else {
        Bytes::new()
    };
    match route(&method, &path, query.as_deref(), &body) {
        Ok(cmd) => api(state, cmd).await,
        Err(e) => {
            if e.status == 405 {
                return method_not_allowed();
            }
            error(&e)
        }
    }
}

fn method_not_allowed() -> Resp {
    error(&ApiError {
        status: 405,
        message: "method not allowed".into(),
    })
}

/// Maps a request under `/api/v1/` to a command.
pub fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<Command, ApiError> {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Err(ApiError::not_found(format!("no such endpoint: {path}")));
    };
    let params = json::query_params(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let decode = |s: &str| {
        json::percent_decode(s, false)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("bad path segment {s:?}")))
    };
    let not_allowed = || ApiError {
        status: 405,
        message: "method not allowed".into(),
    };
    let (head, tail) = match rest.split_once('/') {
        Some((h, t)) => (h, Some(t)),
        None => (rest, None),
    };
    // A page of a listing: `limit` (default 1000, at most 100,000) entries after `after`.
    let page = || -> Result<tern_core::PageRequest, ApiError> {
        let limit = match param("limit") {
            None => LIST_LIMIT_DEFAULT,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("limit must be a number"))?
                .min(LIST_LIMIT_MAX),
        };
        Ok(tern_core::PageRequest {
            after: param("after").filter(|a| !a.is_empty()),
            limit,
        })
    };
    let get = method == Method::GET;
    let delete = method == Method::DELETE;
    let post = method == Method::POST;
    Ok(match (head, tail) {
        ("overview", None) if get => Command::Overview,
        ("clients", None) if get => Command::Clients(page()?),
        ("clients", Some(t)) => match t.strip_suffix("/disconnect") {
            Some(id) if post => Command::DisconnectClient(decode(id)?),
            Some(_) => return Err(not_allowed()),
            None if get => Command::Client(decode(t)?),
            None if delete => Command::DisconnectClient(decode(t)?),
            None => return Err(not_allowed()),
        },
        ("sessions", None) if get => Command::Sessions(page()?),
        ("sessions", Some(t)) if get => Command::Session(decode(t)?),
        ("sessions", Some(t)) if delete => Command::DeleteSession(decode(t)?),
        ("subscriptions", None) if get => Command::Subscriptions(param("client_id"), page()?),
        ("retained", None) if get => Command::Retained {
            filter: param("filter").filter(|f| !f.is_empty()),
            page: page()?,
            payload: param("payload").is_none_or(|p| p != "false" && p != "0"),
        },
        ("retained", None) if delete => match param("filter") {
            Some(f) if !f.is_empty() => Command::RetainedDelete(f),
            _ => {
                return Err(ApiError::bad_request(
                    "DELETE /api/v1/retained needs ?filter=FILTER (use # for all)",
                ));
            }
        },
        ("retained", Some(t)) if get => Command::RetainedGet(decode_topic(t)?),
        ("retained", Some(t)) if delete => Command::RetainedDelete(decode_topic(t)?),
        ("publish", None) if post => Command::Publish(Box::new(
            json::parse_publish(body).map_err(ApiError::bad_request)?,
        )),
        ("overview" | "clients" | "sessions" | "subscriptions" | "retained" | "publish", _) => {
            return Err(not_allowed());
        }
        _ => return Err(ApiError::not_found(format!("no such endpoint: {path}"))),
    })
}

/// A topic from the rest of the path: its `/` stay level separators, each level is
/// percent-decoded (so `%2B`, `%23` and `%24` give `+`, `#` and `$`).
fn decode_topic(t: &str) -> Result<String, ApiError> {
    let levels: Option<Vec<String>> = t
        .split('/')
        .map(|l| json::percent_decode(l, false))
        .collect();
    levels
        .map(|l| l.join("/"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("bad topic in path: {t:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str, q: Option<&str>) -> Result<Command, ApiError> {
        route(&m, p, q, b"")
    }

    #[test]
    fn routes() {
        assert!(matches!(
            r(Method::GET, "/api/v1/clients/a%2Fb", None),
            Ok(Command::Client(id)) if id == "a/b"
        ));
        assert!(matches!(
            r(Method::POST, "/api/v1/clients/x/disconnect", None),
            Ok(Command::DisconnectClient(id)) if id == "x"
        ));
        assert!(matches!(
            r(Method::GET, "/api/v1/retained/%24SYS/broker/uptime", None),
            Ok(Command::RetainedGet(t)) if t == "$SYS/broker/uptime"
        ));
        assert!(matches!(
            r(Method::GET, "/api/v1/retained", Some("filter=a%2F%23&limit=3&payload=false")),
            Ok(Command::Retained { filter: Some(f), page, payload: false })
                if f == "a/#" && page.limit == 3 && page.after.is_none()
        ));
        assert!(matches!(
            r(Method::GET, "/api/v1/sessions", Some("after=a%2Fb&limit=9999999")),
            Ok(Command::Sessions(page))
                if page.after.as_deref() == Some("a/b") && page.limit == LIST_LIMIT_MAX
        ));
        assert!(matches!(
            r(Method::GET, "/api/v1/clients", None),
            Ok(Command::Clients(page)) if page.limit == LIST_LIMIT_DEFAULT && page.after.is_none()
        ));
        assert_eq!(
            r(Method::GET, "/api/v1/subscriptions", Some("limit=x"))
                .unwrap_err()
                .status,
            400
        );
        assert!(matches!(
            r(Method::DELETE, "/api/v1/retained", Some("filter=%23")),
            Ok(Command::RetainedDelete(f)) if f == "#"
        ));
        assert_eq!(
            r(Method::DELETE, "/api/v1/retained", None)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            r(Method::PUT, "/api/v1/clients", None).unwrap_err().status,
            405
        );
        assert_eq!(
            r(Method::GET, "/api/v1/nope", None).unwrap_err().status,
            404
        );
        assert_eq!(
            route(&Method::POST, "/api/v1/publish", None, b"{")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let open = AdminSettings::new("0.0.0.0:9883".parse().unwrap(), None);
        assert!(open.validate().is_err());
        let empty = AdminSettings::new("0.0.0.0:9883".parse().unwrap(), Some(String::new()));
        assert!(empty.validate().is_err());
        let ok = AdminSettings::new("0.0.0.0:9883".parse().unwrap(), Some("t".into()));
        assert!(ok.validate().is_ok());
        assert!(
            AdminSettings::new("127.0.0.1:9883".parse().unwrap(), None)
                .validate()
                .is_ok()
        );
    }
}
