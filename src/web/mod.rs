//! The gRPC port's face for browsers, one tower layer around all of tonic's routes:
//!
//! - gRPC-Web: tonic-web turns each `application/grpc-web*` call (HTTP/1.1 or HTTP/2) into a
//!   gRPC call before the routes see it, so the auth layer (`grpc::auth`), the size limits and
//!   the metrics apply to it exactly as to gRPC, on the same TLS listener.
//! - CORS ([`cors`]): a call that names an `Origin` is served only for the page's own origin
//!   or one of `--cors-allowed-origins`; others get 403 (and no CORS headers, so the browser
//!   shows the page nothing).
//! - The web console ([`assets`]): its files at /console/, unless `--console false`.
//!
//! Anything else over HTTP/1.1 gets a short text saying what the port serves, instead of the
//! connection reset an HTTP/2-only server gives.

pub mod assets;
pub mod cors;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderValue, Method, Request, Response, StatusCode, header};
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower_layer::Layer;

pub use cors::AllowedOrigins;

use crate::logsafe::REFUSALS;
use crate::metrics::Metrics;

/// The `reason` label of `spool_auth_refusals_total` for a call from an origin not allowed.
pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";

/// Wraps tonic's routes in a [`WebFront`].
#[derive(Clone)]
pub struct WebLayer {
    origins: Arc<AllowedOrigins>,
    /// Serve the console's files (`--console`).
    console: bool,
    /// The port speaks TLS: a page's own origin is https://.
    tls: bool,
    /// Counts the refused origins.
    metrics: Arc<Metrics>,
}

impl WebLayer {
    pub fn new(origins: AllowedOrigins, console: bool, tls: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            origins: Arc::new(origins),
            console,
            tls,
            metrics,
        }
    }
}

impl<S> Layer<S> for WebLayer {
    type Service = WebFront<S>;

    fn layer(&self, inner: S) -> WebFront<S> {
        WebFront {
            inner: GrpcWebLayer::new().layer(inner),
            layer: self.clone(),
        }
    }
}

/// See the module's documentation.
#[derive(Clone)]
pub struct WebFront<S> {
    inner: GrpcWebService<S>,
    layer: WebLayer,
}

type Answer = Result<Response<Body>, Infallible>;

impl<S> Service<Request<Body>> for WebFront<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.layer.console && assets::is_console_path(request.uri().path()) {
            return answer(assets::serve(&request));
        }
        let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
            if request.version() < http::Version::HTTP_2 && !is_grpc_web(&request) {
                return answer(not_served(&request));
            }
            return Box::pin(self.inner.call(request));
        };
        let host = cors::host_of(&request);
        if !self.layer.origins.allows(&origin, host, self.layer.tls) {
            self.layer.metrics.auth_refused(ORIGIN_NOT_ALLOWED);
            if REFUSALS.allow("cors_origin") {
                tracing::info!(
                    origin = ?origin,
                    path = request.uri().path(),
                    "refused a browser call from an origin not in cors_allowed_origins"
                );
            }
            return answer(assets::plain(
                StatusCode::FORBIDDEN,
                "this origin may not call Spool: add it to --cors-allowed-origins\n",
            ));
        }
        if request.method() == Method::OPTIONS {
            return answer(cors::preflight(&origin));
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            cors::allow_reading(&mut response, &origin);
            Ok(response)
        })
    }
}

fn answer(response: Response<Body>) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
    Box::pin(std::future::ready(Ok(response)))
}

fn is_grpc_web<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc-web"))
}

/// The answer to an HTTP/1.1 request that is neither gRPC-Web nor the console's.
fn not_served<B>(request: &Request<B>) -> Response<Body> {
    let status = if request.method() == Method::GET || request.method() == Method::HEAD {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    };
    let mut response = assets::plain(
        status,
        "this port serves gRPC (HTTP/2), gRPC-Web (application/grpc-web+proto, HTTP/1.1 or \
         HTTP/2) and the web console at /console/\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
