//! The admin API (`/api/v1/*`, bearer-token protected), its OpenAPI document, and the
//! operational endpoints. One file per resource; the wire types in [`model`].

pub mod auth;
pub mod deliveries;
pub mod entities;
pub mod errors;
pub mod events;
pub mod extract;
pub mod health;
pub mod model;
pub mod openapi;
pub mod sources;
pub mod stats;
pub mod stream;
pub mod subscriptions;
pub mod sync;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::server::AppState;

/// Every admin route, each registered with its OpenAPI operation (so none can be served
/// undocumented). The stream is among them but checks its token itself: it also accepts
/// `?token=`, because browsers cannot set headers on a WebSocket.
fn documented() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let admin = OpenApiRouter::with_openapi(openapi::Header::openapi())
        .routes(routes!(events::list, events::publish))
        .routes(routes!(events::show))
        .routes(routes!(events::raw))
        .routes(routes!(subscriptions::list, subscriptions::create))
        .routes(routes!(
            subscriptions::show,
            subscriptions::update,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::secret))
        .routes(routes!(deliveries::list))
        .routes(routes!(subscriptions::replay))
        .routes(routes!(subscriptions::test))
        .routes(routes!(deliveries::show))
        .routes(routes!(deliveries::retry))
        .routes(routes!(entities::meetings))
        .routes(routes!(entities::meeting))
        .routes(routes!(entities::meeting_instances))
        .routes(routes!(entities::instance))
        .routes(routes!(entities::participants))
        .routes(routes!(entities::recordings))
        .routes(routes!(entities::recording))
        .routes(routes!(entities::users))
        .routes(routes!(entities::user))
        .routes(routes!(entities::webinars))
        .routes(routes!(entities::webinar))
        .routes(routes!(entities::registrants))
        .routes(routes!(sources::list))
        .routes(routes!(sync::status))
        .routes(routes!(sync::quarantine))
        .routes(routes!(stats::show));
    let self_authenticated = OpenApiRouter::new().routes(routes!(stream::stream));
    (admin, self_authenticated)
}

/// The OpenAPI document of the admin API, as `/api/openapi.json` serves it.
pub fn document() -> openapi::Document {
    let (admin, stream) = documented();
    openapi::Document::new(admin.merge(stream).into_openapi())
}

/// Routes of the admin API and operational endpoints, and the fallback for unknown paths. Every
/// error they answer is `{"error", "detail"}` JSON.
pub fn router(state: AppState) -> Router<AppState> {
    let (admin, stream) = documented();
    let admin = admin.route_layer(middleware::from_fn_with_state(state, auth::require_admin));
    let (routes, openapi) = admin.merge(stream).split_for_parts();
    let doc = openapi::Document::new(openapi);
    let page = doc.clone();
    Router::new()
        .merge(routes)
        .route("/api/openapi.json", get(move || async move { doc.json() }))
        .route("/api/docs", get(move || async move { page.page() }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(crate::ui::router())
        .fallback(errors::no_route)
        .layer(middleware::from_fn(errors::limit_uri_length))
}
