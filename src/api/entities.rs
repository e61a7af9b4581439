//! `/api/v1/meetings`, `/meeting-instances`, `/recordings`, `/users`, `/webinars`: the current
//! state kept by sync, with filters and key-cursor pagination.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::extract::{Path, Query};
use crate::api::model::Page;
use crate::api::model::entity::{Entity, Participant};
use crate::core::clock::parse_time;
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::entities::{EntityQuery, MAX_ENTITY_PAGE};
use crate::sync::project::EntityRow;
use crate::sync::rules::Kind;
use crate::sync::status::MeetingStatus;

/// Query parameters shared by the entity lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Host user id (meetings, instances, recordings, webinars).
    pub host: Option<String>,
    /// Status, e.g. `started` (meetings: one of scheduled, started, ended, deleted, recovered, permanently_deleted).
    pub status: Option<String>,
    pub email: Option<String>,
    /// Meeting id (recordings).
    pub meeting_id: Option<String>,
    /// Start at or after (RFC 3339 or epoch ms).
    pub since: Option<String>,
    /// Start before (RFC 3339 or epoch ms).
    pub until: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, HttpError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            parse_time(v).ok_or_else(|| {
                HttpError::bad_request(format!(
                    "`{name}` must be RFC 3339 (2024-05-01T00:00:00Z) or epoch milliseconds, got {v:?}"
                ))
            })
        })
        .transpose()
}

fn query(kind: Kind, parent: Option<String>, p: &ListParams) -> Result<EntityQuery, HttpError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_ENTITY_PAGE).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "`limit` must be between 1 and {MAX_ENTITY_PAGE}"
        )));
    }
    let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    // A cursor is an entity key this API handed out: never longer than a stored key, never
    // holding a control character. Anything else is a client bug, not "no more data".
    if let Some(cursor) = text(&p.cursor)
        && (cursor.len() > 1024 || cursor.chars().any(char::is_control))
    {
        return Err(HttpError::bad_request(
            "`cursor` must be the `next_cursor` of an earlier page",
        ));
    }
    Ok(EntityQuery {
        kind: kind.as_str().to_owned(),
        parent: parent.or_else(|| text(&p.meeting_id)),
        status: text(&p.status),
        host_id: text(&p.host),
        email: text(&p.email),
        start_from: time_param("since", p.since.as_deref())?,
        start_until: time_param("until", p.until.as_deref())?,
        after_key: text(&p.cursor),
        limit,
    })
}

async fn page<T>(
    state: &AppState,
    q: EntityQuery,
    render: impl Fn(&EntityRow) -> T,
) -> Result<Json<Page<T>>, HttpError> {
    let rows = state.store.list_entities(&q).await?;
    Ok(page_of(&q, &rows, render))
}

fn page_of<T>(
    q: &EntityQuery,
    rows: &[EntityRow],
    render: impl Fn(&EntityRow) -> T,
) -> Json<Page<T>> {
    let next_cursor = (rows.len() as i64 == q.limit)
        .then(|| rows.last().map(|r| r.key.clone()))
        .flatten();
    Json(Page {
        data: rows.iter().map(render).collect(),
        next_cursor,
    })
}

async fn one(state: &AppState, kind: Kind, key: &str) -> Result<EntityRow, HttpError> {
    state
        .store
        .get_entity(kind.as_str(), key)
        .await?
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "no {} {key:?} (yet)",
                kind.as_str().replace('_', " ")
            ))
        })
}

/// A `status` filter for meetings or webinars must name one of their statuses: a typo would
/// otherwise match nothing and look like "no such meetings".
fn meeting_status_param(p: &ListParams) -> Result<(), HttpError> {
    match p.status.as_deref().filter(|s| !s.is_empty()) {
        Some(status) if MeetingStatus::parse(status).is_none() => {
            Err(HttpError::bad_request(format!(
                "`status` must be one of {}",
                MeetingStatus::NAMES.join(", ")
            )))
        }
        _ => Ok(()),
    }
}

/// `GET /api/v1/meetings`
#[utoipa::path(get, path = "/api/v1/meetings", operation_id = "list_meetings", tag = "meetings", summary = "Meetings, with filters.",
    params(ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of meetings"), crate::api::openapi::Errors))]
pub async fn meetings(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    meeting_status_param(&p)?;
    page(&s, query(Kind::Meeting, None, &p)?, Entity::from_row).await
}

/// `GET /api/v1/meetings/{id}`
#[utoipa::path(get, path = "/api/v1/meetings/{id}", operation_id = "get_meeting", tag = "meetings", summary = "One meeting.",
    params(("id" = String, Path)),
    responses((status = 200, body = Entity, description = "The meeting"), crate::api::openapi::Errors))]
pub async fn meeting(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entity>, HttpError> {
    Ok(Json(Entity::from_row(&one(&s, Kind::Meeting, &id).await?)))
}

/// `GET /api/v1/meetings/{id}/instances`
#[utoipa::path(get, path = "/api/v1/meetings/{id}/instances", operation_id = "list_meeting_instances", tag = "meetings", summary = "A meeting's instances (occurrences that started).",
    params(("id" = String, Path), ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of the meeting's instances"), crate::api::openapi::Errors))]
pub async fn meeting_instances(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    page(&s, query(Kind::Instance, Some(id), &p)?, Entity::from_row).await
}

/// `GET /api/v1/meeting-instances/{uuid}`
#[utoipa::path(get, path = "/api/v1/meeting-instances/{uuid}", operation_id = "get_meeting_instance", tag = "meetings", summary = "One meeting instance.",
    params(("uuid" = String, Path)),
    responses((status = 200, body = Entity, description = "The meeting instance"), crate::api::openapi::Errors))]
pub async fn instance(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<Entity>, HttpError> {
    Ok(Json(Entity::from_row(
        &one(&s, Kind::Instance, &uuid).await?,
    )))
}

/// `GET /api/v1/meeting-instances/{uuid}/participants` — each participant with sessions and
/// attendance. An open session of an ended instance counts until the instance's end.
#[utoipa::path(get, path = "/api/v1/meeting-instances/{uuid}/participants", operation_id = "list_participants", tag = "meetings", summary = "An instance's participants with sessions and attendance.",
    params(("uuid" = String, Path), ListParams),
    responses((status = 200, body = Page<Participant>, description = "A page of the instance's participants"), crate::api::openapi::Errors))]
pub async fn participants(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Participant>>, HttpError> {
    let q = query(Kind::Participant, Some(uuid.clone()), &p)?;
    // Participants and the instance's end from one snapshot: open sessions are counted until
    // the end, so a torn read would report them with no time at all.
    let (rows, instance) = s
        .store
        .list_entities_with(&q, Kind::Instance.as_str(), &uuid)
        .await?;
    let instance_end = instance.and_then(|i| i.end_at);
    Ok(page_of(&q, &rows, |row| {
        Participant::from_row(row, instance_end)
    }))
}

/// `GET /api/v1/recordings`
#[utoipa::path(get, path = "/api/v1/recordings", operation_id = "list_recordings", tag = "recordings", summary = "Recordings.",
    params(ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of recordings"), crate::api::openapi::Errors))]
pub async fn recordings(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    page(&s, query(Kind::Recording, None, &p)?, Entity::from_row).await
}

/// `GET /api/v1/recordings/{uuid}`
#[utoipa::path(get, path = "/api/v1/recordings/{uuid}", operation_id = "get_recording", tag = "recordings", summary = "One recording.",
    params(("uuid" = String, Path)),
    responses((status = 200, body = Entity, description = "The recording"), crate::api::openapi::Errors))]
pub async fn recording(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<Entity>, HttpError> {
    Ok(Json(Entity::from_row(
        &one(&s, Kind::Recording, &uuid).await?,
    )))
}

/// `GET /api/v1/users`
#[utoipa::path(get, path = "/api/v1/users", operation_id = "list_users", tag = "users", summary = "Users.",
    params(ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of users"), crate::api::openapi::Errors))]
pub async fn users(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    page(&s, query(Kind::User, None, &p)?, Entity::from_row).await
}

/// `GET /api/v1/users/{id}`
#[utoipa::path(get, path = "/api/v1/users/{id}", operation_id = "get_user", tag = "users", summary = "One user.",
    params(("id" = String, Path)),
    responses((status = 200, body = Entity, description = "The user"), crate::api::openapi::Errors))]
pub async fn user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entity>, HttpError> {
    Ok(Json(Entity::from_row(&one(&s, Kind::User, &id).await?)))
}

/// `GET /api/v1/webinars`
#[utoipa::path(get, path = "/api/v1/webinars", operation_id = "list_webinars", tag = "webinars", summary = "Webinars.",
    params(ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of webinars"), crate::api::openapi::Errors))]
pub async fn webinars(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    meeting_status_param(&p)?;
    page(&s, query(Kind::Webinar, None, &p)?, Entity::from_row).await
}

/// `GET /api/v1/webinars/{id}`
#[utoipa::path(get, path = "/api/v1/webinars/{id}", operation_id = "get_webinar", tag = "webinars", summary = "One webinar.",
    params(("id" = String, Path)),
    responses((status = 200, body = Entity, description = "The webinar"), crate::api::openapi::Errors))]
pub async fn webinar(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Entity>, HttpError> {
    Ok(Json(Entity::from_row(&one(&s, Kind::Webinar, &id).await?)))
}

/// `GET /api/v1/webinars/{id}/registrants`
#[utoipa::path(get, path = "/api/v1/webinars/{id}/registrants", operation_id = "list_registrants", tag = "webinars", summary = "A webinar's registrants.",
    params(("id" = String, Path), ListParams),
    responses((status = 200, body = Page<Entity>, description = "A page of the webinar's registrants"), crate::api::openapi::Errors))]
pub async fn registrants(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Entity>>, HttpError> {
    page(&s, query(Kind::Registrant, Some(id), &p)?, Entity::from_row).await
}
