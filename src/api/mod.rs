//! The admin API (`/api/v1/*`, bearer-token protected) and the operational endpoints.
//! One file per resource.

pub mod auth;
pub mod entities;
pub mod errors;
pub mod events;
pub mod extract;
pub mod health;
pub mod sources;
pub mod stats;
pub mod stream;
pub mod subscriptions;
pub mod sync;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::server::AppState;

/// Routes of the admin API and operational endpoints, and the fallback for unknown paths. Every
/// error they answer is `{"error", "detail"}` JSON.
pub fn router(state: AppState) -> Router<AppState> {
    let admin = Router::new()
        .route("/api/v1/events", get(events::list).post(events::publish))
        .route("/api/v1/events/{id}", get(events::show))
        .route("/api/v1/events/{id}/raw", get(events::raw))
        .route(
            "/api/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/api/v1/subscriptions/{id}",
            get(subscriptions::show)
                .patch(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/api/v1/subscriptions/{id}/deliveries",
            get(subscriptions::deliveries),
        )
        .route(
            "/api/v1/subscriptions/{id}/replay",
            post(subscriptions::replay),
        )
        .route("/api/v1/subscriptions/{id}/test", post(subscriptions::test))
        .route("/api/v1/deliveries/{id}", get(subscriptions::delivery))
        .route("/api/v1/deliveries/{id}/retry", post(subscriptions::retry))
        .route("/api/v1/meetings", get(entities::meetings))
        .route("/api/v1/meetings/{id}", get(entities::meeting))
        .route(
            "/api/v1/meetings/{id}/instances",
            get(entities::meeting_instances),
        )
        .route("/api/v1/meeting-instances/{uuid}", get(entities::instance))
        .route(
            "/api/v1/meeting-instances/{uuid}/participants",
            get(entities::participants),
        )
        .route("/api/v1/recordings", get(entities::recordings))
        .route("/api/v1/recordings/{uuid}", get(entities::recording))
        .route("/api/v1/users", get(entities::users))
        .route("/api/v1/users/{id}", get(entities::user))
        .route("/api/v1/webinars", get(entities::webinars))
        .route("/api/v1/webinars/{id}", get(entities::webinar))
        .route(
            "/api/v1/webinars/{id}/registrants",
            get(entities::registrants),
        )
        .route("/api/v1/sources", get(sources::list))
        .route("/api/v1/stats", get(stats::show))
        .route("/api/v1/sync", get(sync::status))
        .route("/api/v1/sync/quarantine", get(sync::quarantine))
        .route_layer(middleware::from_fn_with_state(state, auth::require_admin));
    Router::new()
        .merge(admin)
        // Outside `require_admin`: the stream checks its token itself, because it also accepts
        // `?token=` (browsers cannot set headers on a WebSocket); no other route does.
        .route("/api/v1/stream", get(stream::stream))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(crate::ui::router())
        .fallback(errors::no_route)
        .layer(middleware::from_fn(errors::limit_uri_length))
}
