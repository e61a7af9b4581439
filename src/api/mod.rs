//! The admin API (`/api/v1/*`, bearer-token protected) and the operational endpoints.
//! One file per resource.

pub mod auth;
pub mod events;
pub mod health;

use axum::Router;
use axum::middleware;
use axum::routing::get;

use crate::server::AppState;

/// Routes of the admin API and operational endpoints.
pub fn router(state: AppState) -> Router<AppState> {
    let admin = Router::new()
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/events/{id}", get(events::show))
        .route("/api/v1/events/{id}/raw", get(events::raw))
        .route_layer(middleware::from_fn_with_state(state, auth::require_admin));
    Router::new()
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}
