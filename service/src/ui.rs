//! The web UI, served at `/` from the files of `ui/dist` built into the binary (one binary to
//! deploy; `cargo build` needs no Node, since `ui/dist` is committed and CI rebuilds it from
//! `ui/src` and compares).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

/// The built UI: `index.html` and the hashed bundles under `assets/`.
#[derive(Embed)]
#[folder = "../ui/dist"]
struct Assets;

/// The routes of the UI: `/` and its files, gzipped for clients that take it.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", axum::routing::get(|| async { file("index.html") }))
        .route(
            "/assets/{*path}",
            axum::routing::get(|Path(p): Path<String>| async move { file(&format!("assets/{p}")) }),
        )
        .route(
            "/favicon.svg",
            axum::routing::get(|| async { file("favicon.svg") }),
        )
        .layer(tower_http::compression::CompressionLayer::new())
}

/// One embedded file with its media type; hashed bundles are cached for good, the page is
/// revalidated so a new binary's UI shows at once.
fn file(path: &str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let cache = if path.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, f.metadata.mimetype().to_string()),
                    (header::CACHE_CONTROL, cache.to_string()),
                ],
                f.data,
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{path}: no such file in the UI built into this binary"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_bundles_it_loads_are_built_in() {
        let index = Assets::get("index.html").expect("ui/dist/index.html is built in");
        let html = std::str::from_utf8(&index.data).unwrap();
        let script = html
            .split("src=\"/")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the page loads a script");
        assert!(Assets::get(script).is_some(), "{script} is not built in");
    }
}
