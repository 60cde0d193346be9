//! The application: its shared state, its routes, and how it binds, serves and stops.
//!
//! Production and tests boot the same code: [`Application::build`] binds (port 0
//! in tests), [`Application::port`] tells where, and
//! [`Application::run_until_stopped`] serves until the shutdown future resolves.
//!
//! Two listeners share one [`AppState`]: the public one ([`routes`]) and, unless
//! `ADMIN_PORT=0`, the operators' one ([`admin_routes`]: `/metrics`, `/health`,
//! the admin API and its document), which the public port does not serve.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Route, Server,
    http::{Method, header},
    listener::TcpAcceptor,
};

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
    let doc = api::document::public(state);
    let (spec_json, spec_yaml) = (api::document::to_json(&doc), api::document::to_yaml(&doc));
    let jwks = state.jwt.jwks().to_string();
    let config = state.config.clone();
    let route = Route::new()
        .at(
            "/.well-known/jwks.json",
            text_get("application/json", Some("public, max-age=300"), move || jwks.clone()),
        )
        // 1.7 MB of Swagger UI: let browsers keep it for a few minutes.
        .nest(
            "/docs",
            api::document::swagger_ui(&service.swagger_ui_html(), &service.spec(), &doc)
                .with(poem::middleware::SetHeader::new().overriding(header::CACHE_CONTROL, "public, max-age=300")),
        )
        .at(
            "/openapi.json",
            text_get("application/json; charset=utf-8", None, move || spec_json.clone()),
        )
        .at(
            "/openapi.yaml",
            text_get("application/yaml; charset=utf-8", None, move || spec_yaml.clone()),
        )
        .at(
            "/auth/verify",
            poem::get(poem::endpoint::make_sync(move |req| {
                let param = |name: &str| {
                    req.uri()
                        .query()
                        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name))
                        .map(|(_, v)| v.into_owned())
                };
                let settings = api::page::PageSettings {
                    frontend_url: &config.login.frontend_url,
                    app_name: &config.email.app_name,
                    default_locale: &config.email.default_locale,
                };
                let accept_language = req.header("accept-language");
                api::page::magic_link_page(
                    &settings,
                    param("token").as_deref(),
                    param("lang").as_deref(),
                    accept_language,
                )
                .into_response()
            })),
        )
        .nest("/", service);
    let methods = middleware::Methods::of_document(&doc)
        .with("/.well-known/jwks.json", &[Method::GET])
        .with("/openapi.json", &[Method::GET])
        .with("/openapi.yaml", &[Method::GET])
        .with("/docs", &[Method::GET])
        .with("/auth/verify", &[Method::GET]);
    with_middleware(route, state, methods)
}

/// Every route of the admin listener: Prometheus metrics, health, the admin
/// API (behind the admin token), its document with Swagger UI, and the
/// operators' dashboard (`/dashboard`).
pub fn admin_routes(state: &AppState) -> impl Endpoint + 'static {
    let service = api::admin::service(state);
    let doc = api::document::admin(state);
    let spec_json = api::document::to_json(&doc);
    let methods = middleware::Methods::of_document(&doc)
        .with("/metrics", &[Method::GET])
        .with("/openapi.json", &[Method::GET])
        .with("/docs", &[Method::GET])
        .with("/dashboard", &[Method::GET])
        .with("/dashboard/app.js", &[Method::GET])
        .with("/dashboard/app.css", &[Method::GET]);
    let metrics = state.metrics.clone();
    let route = Route::new()
        .at(
            "/metrics",
            text_get("text/plain; version=0.0.4; charset=utf-8", None, move || {
                metrics.render()
            }),
        )
        .nest(
            "/docs",
            api::document::swagger_ui(&service.swagger_ui_html(), &service.spec(), &doc),
        )
        .at(
            "/openapi.json",
            text_get("application/json; charset=utf-8", None, move || spec_json.clone()),
        )
        .nest("/", service);
    let route = api::admin::dashboard::mount(route);
    route
        .around(middleware::check_body)
        .catch_all_error(|err| async move { error::render(err) })
        .around(middleware::allow)
        .around(api::admin::require_token)
        .around(middleware::trace)
        // Shared, not copied: request data is cloned into every request.
        .data(Arc::new(methods))
        .data(state.metrics.clone())
        .data(middleware::BodyTimeout(state.config.server.request_body_timeout))
        .data(Arc::new(state.clone()))
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
fn with_middleware(route: Route, state: &AppState, methods: middleware::Methods) -> impl Endpoint + 'static {
    let cors = middleware::Cors::new(&state.config.server.cors_allowed_origins);
    route
        .around(middleware::check_body)
        .catch_all_error(|err| async move { error::render(err) })
        .around(middleware::allow)
        .around(move |ep, req| {
            let cors = cors.clone();
            async move { cors.handle(ep, req).await }
        })
        .around(middleware::trace)
        // Shared, not copied: request data is cloned into every request.
        .data(Arc::new(methods))
        .data(state.metrics.clone())
        .data(middleware::BodyTimeout(state.config.server.request_body_timeout))
        .data(Arc::new(state.clone()))
}

/// A bound, ready-to-serve sesame.
pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    /// The admin listener, unless `ADMIN_PORT=0`.
    admin: Option<(TcpAcceptor, SocketAddr)>,
    state: AppState,
}

/// Binds `bind`; `settings` names the variables to change when it fails.
async fn bind(bind: SocketAddr, settings: &str) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind} (set {settings})"))?;
    let addr = listener.local_addr()?;
    Ok((TcpAcceptor::from_tokio(listener)?, addr))
}

impl Application {
    /// Binds `HOST:PORT` and `ADMIN_HOST:ADMIN_PORT` (port 0 picks a free
    /// port) and prepares the state.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let (acceptor, addr) = bind(SocketAddr::new(config.server.host, config.server.port), "HOST and PORT").await?;
        let admin = match config.admin.port {
            Some(port) => Some(
                bind(
                    SocketAddr::new(config.admin.host, port),
                    "ADMIN_HOST and ADMIN_PORT, or ADMIN_PORT=0 to turn the admin listener off",
                )
                .await?,
            ),
            None => None,
        };
        let state = AppState::new(config, clock)?;
        Ok(Self {
            acceptor,
            addr,
            admin,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of the admin listener, if it is on.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, addr)| addr.port())
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
        // One shutdown signal, heard by both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        tracing::info!(addr = %self.addr, "sesame listening");
        let public = Server::new_with_acceptor(self.acceptor).run_with_graceful_shutdown(
            app,
            until_stopped(stopped.clone()),
            Some(SHUTDOWN_GRACE),
        );
        let admin = async {
            let Some((acceptor, addr)) = self.admin else {
                return Ok(());
            };
            tracing::info!(%addr, "admin listener up");
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    admin_routes(&self.state),
                    until_stopped(stopped.clone()),
                    Some(SHUTDOWN_GRACE),
                )
                .await
                .context("serving the admin listener")
        };
        let served = tokio::try_join!(async { public.await.context("serving HTTP") }, admin);
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
        served?;
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
