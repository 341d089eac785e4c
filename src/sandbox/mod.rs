//! The sandbox: emulators of the platforms' audience APIs (Meta, Google Data Manager, TikTok,
//! Snap) on loopback, so connectors can be tested (and the demo run) without an account, and a
//! recording endpoint for the generic REST destination. One axum router per platform, each with
//! its own state machine and limits; fault injection (`faults`) and the `/_sandbox`
//! introspection routes are shared:
//!
//! - `GET  /_sandbox/audiences` — every audience: id, platform, account, name, size
//! - `GET  /_sandbox/audiences/{id}/members` — its members as JSON objects of identifiers
//! - `GET  /_sandbox/stats` — requests, uploads, retries seen, sessions, faults injected
//! - `POST /_sandbox/faults` — set the fault configuration (JSON `FaultConfig`; its `once` list
//!   aims a fault at the next request of a method and path)
//! - `POST /_sandbox/reset` — forget everything
//! - `POST|PUT|PATCH|DELETE /_sandbox/rest/{name}` — record a request; `GET` lists them

pub mod faults;
pub mod google;
mod json_reader;
pub mod linkedin;
mod member_index;
pub mod meta;
pub mod microsoft;
pub mod pinterest;
pub mod rest;
pub mod snap;
pub mod state;
pub mod tiktok;
pub mod ttd;
pub mod x;

use crate::error::{Error, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use faults::{FaultConfig, Faults};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

/// Settings of a sandbox.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub faults: FaultConfig,
    pub meta: meta::MetaLimits,
    pub google: google::GoogleLimits,
    pub tiktok: tiktok::TikTokLimits,
    pub snap: snap::SnapLimits,
    /// Request rates (per second) of the emulators that take theirs from here, by platform
    /// name (`pinterest`); an emulator not named does not throttle.
    pub rates: std::collections::BTreeMap<String, u64>,
    /// The UID2 operator's client secret (`activator sandbox --uid2-client-secret`); else
    /// `ttd::DEFAULT_CLIENT_SECRET`.
    pub uid2_client_secret: Option<crate::destinations::ttd::envelope::ClientSecret>,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<state::Store>,
    pub faults: Arc<Faults>,
    pub meta: Arc<meta::MetaState>,
    pub google: Arc<google::GoogleState>,
    pub tiktok: Arc<tiktok::TikTokState>,
    pub snap: Arc<snap::SnapState>,
    pub rest: Arc<rest::RestState>,
    /// `SandboxConfig::rates`.
    pub rates: Arc<std::collections::BTreeMap<String, u64>>,
}

impl AppState {
    /// The request rate the sandbox was given for `platform`, if any.
    pub fn rate(&self, platform: &str) -> Option<u64> {
        self.rates.get(platform).copied()
    }
}

pub fn router(config: SandboxConfig) -> (Router, AppState) {
    let meta_state = meta::MetaState::default();
    *meta_state.limits.lock().unwrap() = config.meta;
    let google_state = google::GoogleState::default();
    *google_state.limits.lock().unwrap() = config.google;
    let tiktok_state = tiktok::TikTokState::default();
    *tiktok_state.limits.lock().unwrap() = config.tiktok;
    let snap_state = snap::SnapState::default();
    *snap_state.limits.lock().unwrap() = config.snap;
    let app = AppState {
        google: Arc::new(google_state),
        store: Arc::new(state::Store::default()),
        faults: Arc::new(Faults::new(config.faults)),
        meta: Arc::new(meta_state),
        tiktok: Arc::new(tiktok_state),
        snap: Arc::new(snap_state),
        rest: Arc::new(rest::RestState::default()),
        rates: Arc::new(config.rates),
    };
    let router = Router::new()
        .route("/_sandbox/audiences", get(audiences))
        .route("/_sandbox/audiences/{id}/members", get(members))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/faults", post(set_faults))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/rest/{name}", any(rest::endpoint))
        // TikTok's API for Business: /open_api/v1.3/dmp/custom_audience/... (trailing slashes
        // are part of TikTok's paths).
        .route(
            "/open_api/{version}/dmp/custom_audience/file/upload/",
            post(tiktok::upload),
        )
        .route(
            "/open_api/{version}/dmp/custom_audience/create/",
            post(tiktok::create),
        )
        .route(
            "/open_api/{version}/dmp/custom_audience/update/",
            post(tiktok::update),
        )
        .route(
            "/open_api/{version}/dmp/custom_audience/list/",
            get(tiktok::list),
        )
        // Snap's Marketing API.
        .route(
            "/v1/adaccounts/{account}/segments",
            get(snap::segments).post(snap::segments),
        )
        .route(
            "/v1/segments/{id}/users",
            post(snap::users).delete(snap::users),
        )
        // Google's Data Manager API.
        .route(
            "/v1/accountTypes/{account_type}/accounts/{account}/userLists",
            get(google::list_user_lists).post(google::create_user_list),
        )
        .route("/v1/{action}", post(google::audience_members))
        .route("/v1/requestStatus:retrieve", get(google::request_status))
        // Meta's Graph API: /v25.0/act_1/customaudiences, /v25.0/{id}/users, ...
        .route("/{version}/{*rest}", any(meta::graph))
        .with_state(app.clone())
        // Emulators with routes of their own, one line each.
        .merge(linkedin::routes(app.clone()))
        .merge(pinterest::routes(app.clone()))
        .merge(microsoft::routes(app.clone()))
        .merge(x::routes(app.clone()))
        .merge(match config.uid2_client_secret {
            Some(secret) => ttd::routes_with_client_secret(app.clone(), secret),
            None => ttd::routes(app.clone()),
        })
        // A full Meta request (10,000 rows of up to 15 keys) is several megabytes; axum's
        // default limit is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(128 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            targeted_faults,
        ));
    (router, app)
}

/// Marks a request a targeted fault aims at with the `X-Sandbox-Fault` header, so each
/// platform's handler treats it as it treats the header.
async fn targeted_faults(
    State(app): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(fault) = app
        .faults
        .take_targeted(request.method().as_str(), request.uri().path())
    {
        request.headers_mut().insert(
            "x-sandbox-fault",
            axum::http::HeaderValue::from_static(fault),
        );
    }
    next.run(request).await
}

async fn audiences(State(app): State<AppState>) -> Response {
    axum::Json(app.store.list()).into_response()
}

async fn members(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.store.members(&id) {
        Some(m) => axum::Json(m).into_response(),
        None => (StatusCode::NOT_FOUND, "no such audience").into_response(),
    }
}

async fn stats(State(app): State<AppState>) -> Response {
    axum::Json(app.store.stats()).into_response()
}

async fn set_faults(
    State(app): State<AppState>,
    axum::Json(config): axum::Json<FaultConfig>,
) -> Response {
    app.faults.set(config);
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(app): State<AppState>) -> Response {
    app.store.reset();
    app.tiktok.reset();
    app.rest.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// Sends the response's status and headers, then breaks the connection instead of the body: the
/// request was applied, but the client never learns it.
pub fn drop_connection(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    let body = Body::from_stream(futures::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other(
            "sandbox dropped the connection",
        ))
    }));
    Response::from_parts(parts, body)
}

/// A sandbox serving in the background; stops when dropped.
pub struct Sandbox {
    pub url: String,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sandbox {
    /// Serves on `addr` (port 0: any free port) on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: SandboxConfig) -> Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::config(format!("sandbox: cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::internal(e.to_string()))?;
        let (router, state) = router(config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Sandbox {
            url: format!("http://{local}"),
            state,
            shutdown: Some(tx),
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A JSON value in a request where a string belongs: the string, borrowed from the request
/// when it has no escapes, or `None` for any other value. Lets the emulators read megabytes of
/// members without building a tree of them.
pub struct Cell<'a>(pub Option<Cow<'a, str>>);

impl<'a> Cell<'a> {
    pub fn text(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

struct CellVisitor;

impl<'de> serde::de::Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cell<'de>, E> {
        Ok(Cell(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cell<'de>, E> {
        Ok(Cell(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Cell<'de>, E> {
        Ok(Cell(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Cell<'de>, E> {
        Ok(Cell(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Cell<'de>, E> {
        Ok(Cell(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Cell<'de>, E> {
        Ok(Cell(None))
    }
    fn visit_unit<E>(self) -> Result<Cell<'de>, E> {
        Ok(Cell(None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Cell<'de>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Cell(None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Cell<'de>, A::Error> {
        use serde::de::IgnoredAny;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Cell(None))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Cell<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cell<'a>, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}
