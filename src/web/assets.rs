//! The web console's files, built by `console/` (`npm run build`) into `console/dist/` and
//! compiled into the binary, so serving it needs no files beside the binary and `cargo build`
//! needs no Node.js. They are served under [`CONSOLE_PATH`] with their content type, an ETag,
//! and a Content-Security-Policy that lets the page load only its own script and style and
//! call only its own origin.

use std::sync::OnceLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// Where the console lives on the gRPC port (gRPC paths are `/<package>.<Service>/<Method>`,
/// so the two cannot meet).
pub const CONSOLE_PATH: &str = "/console/";

/// No inline script or style, no other origin: a message body or queue name that slipped into
/// the page as markup could run nothing and send nothing anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    /// Its name under [`CONSOLE_PATH`].
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../console/dist/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/dist/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../console/dist/console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../console/dist/favicon.svg"),
    },
];

/// Whether `path` is the console's (or one of the addresses that lead to it).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with(CONSOLE_PATH)
}

/// The answer to a request for a console path.
pub fn serve<B>(request: &Request<B>) -> Response<Body> {
    let path = request.uri().path();
    if path == "/" || path == "/console" {
        // The console's files are addressed relative to /console/.
        let mut response = plain(
            StatusCode::PERMANENT_REDIRECT,
            "the console is at /console/\n",
        );
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(CONSOLE_PATH));
        return response;
    }
    let name = match &path[CONSOLE_PATH.len()..] {
        "" => "index.html",
        name => name,
    };
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return plain(StatusCode::NOT_FOUND, "no such file of the console\n");
    };
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| given.as_bytes() == etag.as_bytes() || given == "*");
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if head {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.bytes))
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if status == StatusCode::OK {
        headers.insert(header::CONTENT_LENGTH, asset.bytes.len().into());
    }
    headers.insert(header::ETAG, etag.clone());
    // The files keep their names from one version of the binary to the next: browsers may
    // keep them, but ask (a 304 when unchanged) before each use.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A short text answer.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A body of one chunk.
fn full(bytes: Bytes) -> Body {
    Body::new(http_body_util::Full::new(bytes))
}

/// Each asset's ETag: a digest of its bytes, computed once.
fn etags() -> &'static [HeaderValue; ASSETS.len()] {
    static ETAGS: OnceLock<[HeaderValue; ASSETS.len()]> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.each_ref().map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            // Hex digits and quotes only: always a valid header value.
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
    })
}
