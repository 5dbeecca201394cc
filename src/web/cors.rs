//! Which web origins may call the API from a browser (CORS): the console's own origin always,
//! and those of `--cors-allowed-origins` (`*`: any). A browser names the page's origin in the
//! `Origin` header of every cross-origin call and of same-origin POSTs; native gRPC clients
//! send none, and are not concerned.

use tonic::codegen::http::{self, HeaderValue, Response, StatusCode, header};

/// Request headers a browser's gRPC-Web call may carry (what connect-web and grpc-web send,
/// and the bearer token).
const ALLOWED_REQUEST_HEADERS: &str =
    "authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent";
/// Response headers the page's script may read: a trailers-only answer (an error before any
/// message) carries the status in them.
const EXPOSED_RESPONSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin";
/// How long a browser may reuse a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE_SECONDS: &str = "600";

/// The origins allowed besides the page's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// `*` was given: every origin.
    any: bool,
    /// `scheme://host[:port]`, lowercase, as browsers write them.
    listed: Vec<String>,
}

impl AllowedOrigins {
    /// Parses the values of `--cors-allowed-origins`; the error names the bad one and why.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut origins = Self::default();
        for value in values.iter().map(|value| value.trim()) {
            if value == "*" {
                origins.any = true;
                continue;
            }
            let origin = value.to_ascii_lowercase();
            let Some((scheme, rest)) = origin.split_once("://") else {
                return Err(format!(
                    "cors_allowed_origins: {value:?} is not an origin: write \
                     scheme://host[:port] (e.g. https://console.example.com), or *"
                ));
            };
            if scheme != "http" && scheme != "https" {
                return Err(format!(
                    "cors_allowed_origins: {value:?} has scheme {scheme:?}; an origin is http:// \
                     or https://"
                ));
            }
            let (host, port) = match rest.rsplit_once(':') {
                // Not a port: the colons of an IPv6 literal ([::1]) without one.
                Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
                _ => (rest, None),
            };
            if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
                return Err(format!(
                    "cors_allowed_origins: {value:?} is not an origin: only scheme://host[:port], \
                     no path, query or trailing slash"
                ));
            }
            if let Some(port) = port
                && port.parse::<u16>().is_err()
            {
                return Err(format!(
                    "cors_allowed_origins: {value:?} has port {port:?}; a port is 0 to 65535"
                ));
            }
            origins.listed.push(origin);
        }
        Ok(origins)
    }

    /// Whether a call with this `Origin` may be served: the page's own origin (the request's
    /// host, on this server's scheme), or one allowed.
    pub fn allows(&self, origin: &HeaderValue, host: Option<&str>, tls: bool) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        let scheme = if tls { "https" } else { "http" };
        let same_origin = host.is_some_and(|host| {
            origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
        same_origin || self.any || self.listed.contains(&origin)
    }
}

/// The answer to an allowed preflight (`OPTIONS` before a cross-origin call).
pub fn preflight<B: Default>(origin: &HeaderValue) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_REQUEST_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    response
}

/// Lets the page of `origin` read the answer of its call.
pub fn allow_reading<B>(response: &mut Response<B>, origin: &HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_RESPONSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The request's host (`Host` over HTTP/1.1, `:authority` over HTTP/2).
pub fn host_of<B>(request: &http::Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(values: &[&str]) -> Result<AllowedOrigins, String> {
        AllowedOrigins::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn origins_parse_and_bad_ones_are_named() {
        let allowed = origins(&["https://Console.Example.com", "http://[::1]:8080"]).expect("ok");
        let header = |text: &'static str| HeaderValue::from_static(text);
        assert!(allowed.allows(&header("https://console.example.com"), None, false));
        assert!(allowed.allows(&header("http://[::1]:8080"), None, false));
        assert!(!allowed.allows(&header("https://evil.example.com"), None, false));
        for (bad, says) in [
            ("console.example.com", "not an origin"),
            ("ftp://x", "scheme"),
            ("https://x/", "no path"),
            ("https://x:99999", "port"),
            ("https://", "not an origin"),
        ] {
            let error = origins(&[bad]).expect_err(bad);
            assert!(error.contains(says) && error.contains(bad), "{error}");
        }
        assert!(
            origins(&["*"])
                .expect("any")
                .allows(&header("https://a.b"), None, false)
        );
    }

    #[test]
    fn the_pages_own_origin_is_allowed_on_the_servers_scheme_only() {
        let none = AllowedOrigins::default();
        let origin = HeaderValue::from_static("http://127.0.0.1:50051");
        assert!(none.allows(&origin, Some("127.0.0.1:50051"), false));
        assert!(!none.allows(&origin, Some("127.0.0.1:50051"), true));
        assert!(!none.allows(&origin, Some("127.0.0.1:50052"), false));
        assert!(!none.allows(&origin, None, false));
    }
}
