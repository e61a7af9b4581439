//! The web dashboard: `GET /` and its assets under `GET /ui/{file}`, built into the binary.
//!
//! Why plain files and `include_bytes!`: the dashboard is a handful of HTML/CSS/JS files with no
//! framework and no build step, so what is in `src/ui/assets/` is exactly what the browser runs,
//! a reviewer reads the same text, and `zoomhook serve` needs nothing on disk. A crate such as
//! `rust-embed` would add directory walking and compression we do not need for ~90 KB.
//!
//! The page is a client of the admin API like the CLI: it signs in with an admin token kept in
//! the tab's `sessionStorage` and sends it as `Authorization: Bearer` (never in a URL, except on
//! the WebSocket stream, which browsers cannot give headers). Serving the assets needs no token:
//! they hold no data.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and connections only
//! from this origin, no inline script or style, no frames. The dashboard handles an admin token
//! and renders event bodies sent by strangers; with this policy a body that slipped past the
//! escaping still could not run. Assets are revalidated on every load (`no-cache` with a strong
//! `ETag`): after an upgrade the browser never mixes old and new files, and an unchanged file
//! costs a 304.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::http_error::HttpError;

/// The policy on every dashboard answer. `connect-src 'self'` covers the same-origin `ws:`/`wss:`
/// stream (CSP Level 3). `form-action 'none'`: every form is handled by the page's script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its name under `/ui/`, its media type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Everything the dashboard is made of. `index.html` is also served at `/`.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("overview.js", JS),
    asset!("events.js", JS),
    asset!("meetings.js", JS),
    asset!("subscriptions.js", JS),
    asset!("operations.js", JS),
];

/// Strong ETags of [`ASSETS`], in the same order, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32]))
        .collect()
});

/// Routes of the dashboard; they need no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(file))
}

/// `GET /`
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`
async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// The asset called `name`, or 304 when the client's copy is current, or 404.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return HttpError::not_found(format!("the dashboard has no file {name:?}")).into_response();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| {
            given
                .split(',')
                .any(|t| t.trim() == etag || t.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let set = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        set.insert(header::ETAG, value);
    }
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(name: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        serve(name, &headers)
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let response = get(asset.name, None);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self';")
            );
        }
    }

    #[test]
    fn a_current_copy_is_answered_304() {
        let etag = get("app.js", None).headers()[header::ETAG].clone();
        let again = get("app.js", Some(etag.to_str().unwrap()));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("app.js", Some("\"stale\"")).status(), StatusCode::OK);
    }

    #[test]
    fn unknown_files_and_paths_outside_the_assets_are_404() {
        assert_eq!(get("nope.js", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("../mod.rs", None).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style="));
        for tag in html.split("<script").skip(1) {
            assert!(tag.contains("src=\"/ui/"), "a script from elsewhere: {tag}");
        }
    }
}
