//! The web dashboard every node serves at `/`: a page of plain HTML, CSS and JavaScript compiled
//! into the binary, so it runs with no build step and fetches nothing from elsewhere.
//!
//! The page reads the node through the public API (`/v1/status`, `/v1/peers`, `/v1/kv`,
//! `/v1/services`) and stays live over the `/v1/ws` WebSocket. Its files hold no data, so they
//! are served without the API token; the page sends the token (given as `?token=` in its URL, or
//! asked for) with every API request.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const ICON: &str = include_str!("icon.svg");

/// Only this origin's files and API, and no framing by other sites.
const POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes: the page at `/` and its files under `/dashboard/`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { file(ICON, "image/svg+xml") }),
        )
}

/// One embedded file. Revalidated on every load, so a new binary's page is never mixed with an
/// old cached script.
fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        for asset in [
            "/dashboard/app.js",
            "/dashboard/app.css",
            "/dashboard/icon.svg",
        ] {
            assert!(INDEX.contains(asset), "index.html does not load {asset}");
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        assert!(!STYLE.contains("@import") && !STYLE.contains("url("));
    }
}
