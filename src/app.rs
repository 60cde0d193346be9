//! The application: its shared state, its routes, and how it binds, serves and stops.
//!
//! Production and tests boot the same code: [`Application::build`] binds (port 0
//! in tests), [`Application::port`] tells where, and
//! [`Application::run_until_stopped`] serves until the shutdown future resolves.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use poem::{Endpoint, EndpointExt, IntoResponse, Route, Server, http::header, listener::TcpAcceptor};

pub use crate::state::AppState;
use crate::{
    api::{self, middleware},
    clock::Clock,
    config::Config,
    error,
};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every route of sesame with its middleware.
pub fn routes(state: &AppState) -> impl Endpoint + 'static {
    let service = api::service(state);
    let spec_yaml = service.spec_yaml();
    let metrics = state.metrics.clone();
    let jwks = state.jwt.jwks().to_string();
    let frontend_url = state.config.login.frontend_url.clone();
    let route = Route::new()
        .at(
            "/.well-known/jwks.json",
            text_get("application/json", Some("public, max-age=300"), move || jwks.clone()),
        )
        .at(
            "/metrics",
            text_get("text/plain; version=0.0.4; charset=utf-8", None, move || {
                metrics.render()
            }),
        )
        // 1.7 MB of Swagger UI: let browsers keep it for a few minutes.
        .nest(
            "/docs",
            service
                .swagger_ui()
                .with(poem::middleware::SetHeader::new().overriding(header::CACHE_CONTROL, "public, max-age=300")),
        )
        .at("/openapi.json", service.spec_endpoint())
        .at(
            "/openapi.yaml",
            text_get("application/yaml; charset=utf-8", None, move || spec_yaml.clone()),
        )
        .at(
            "/auth/verify",
            poem::get(poem::endpoint::make_sync(move |req| {
                let token = req
                    .uri()
                    .query()
                    .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token"))
                    .map(|(_, v)| v.into_owned());
                api::page::magic_link_page(&frontend_url, token.as_deref()).into_response()
            })),
        )
        .nest("/", service);
    with_middleware(route, state)
}

/// A GET route answering `body()` as `content_type`, with `cache_control` if given.
fn text_get(
    content_type: &'static str,
    cache_control: Option<&'static str>,
    body: impl Fn() -> String + Send + Sync + 'static,
) -> poem::RouteMethod {
    poem::get(poem::endpoint::make_sync(move |_| {
        let mut resp = body().with_content_type(content_type).into_response();
        if let Some(value) = cache_control {
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, header::HeaderValue::from_static(value));
        }
        resp
    }))
}

/// The middleware around every route: body checks, the error envelope, CORS,
/// request tracing, and the state handlers read.
fn with_middleware(route: Route, state: &AppState) -> impl Endpoint + 'static {
    let cors = middleware::Cors::new(&state.config.server.cors_allowed_origins);
    route
        .around(middleware::check_body)
        .catch_all_error(|err| async move { error::render(err) })
        .around(move |ep, req| {
            let cors = cors.clone();
            async move { cors.handle(ep, req).await }
        })
        .around(middleware::trace)
        .data(state.metrics.clone())
        .data(middleware::BodyTimeout(state.config.server.request_body_timeout))
        .data(state.clone())
}

/// A bound, ready-to-serve sesame.
pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Binds `HOST:PORT` (port 0 picks a free port) and prepares the state.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let bind = SocketAddr::new(config.server.host, config.server.port);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind} (set HOST and PORT)"))?;
        let addr = listener.local_addr()?;
        let acceptor = TcpAcceptor::from_tokio(listener)?;
        let state = AppState::new(config, clock)?;
        Ok(Self { acceptor, addr, state })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = routes(&self.state);
        let cleanup = crate::cleanup::spawn(self.state.clone());
        let webhooks = crate::webhooks::spawn(self.state.clone());
        let file_outbox = crate::audit::outbox::spawn(self.state.clone());
        tracing::info!(addr = %self.addr, "sesame listening");
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(SHUTDOWN_GRACE))
            .await
            .context("serving HTTP")?;
        cleanup.abort();
        if let Some(task) = file_outbox {
            // Rows of lines confirmed but not yet deleted are listed in the position file.
            task.abort();
        }
        if let Some(webhooks) = webhooks {
            webhooks
                .stop(self.state.config.webhooks.timeout + Duration::from_secs(1))
                .await;
        }
        self.state.audit.close().await;
        self.state.db.close().await;
        tracing::info!("sesame stopped");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
