//! `/api/v1/meetings`, `/meeting-instances`, `/recordings`, `/users`, `/webinars`: the current
//! state kept by sync, with filters and key-cursor pagination.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::extract::{Path, Query};
use crate::core::clock::{parse_time, rfc3339};
use crate::http_error::HttpError;
use crate::server::AppState;
use crate::store::entities::{EntityQuery, MAX_ENTITY_PAGE};
use crate::sync::doc::EntityDoc;
use crate::sync::project::{self, EntityRow};
use crate::sync::rules::Kind;
use crate::sync::status::MeetingStatus;

/// Query parameters shared by the entity lists.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Host user id (meetings, instances, recordings, webinars).
    pub host: Option<String>,
    pub status: Option<String>,
    pub email: Option<String>,
    /// Meeting id (recordings).
    pub meeting_id: Option<String>,
    /// Start at or after (RFC 3339 or epoch ms).
    pub since: Option<String>,
    /// Start before (RFC 3339 or epoch ms).
    pub until: Option<String>,
    /// Cursor: the `next_cursor` of the previous page.
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// A page of entities.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntityPage {
    pub data: Vec<Value>,
    /// Pass as `after` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
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
    Ok(EntityQuery {
        kind: kind.as_str().to_owned(),
        parent: parent.or_else(|| text(&p.meeting_id)),
        status: text(&p.status),
        host_id: text(&p.host),
        email: text(&p.email),
        start_from: time_param("since", p.since.as_deref())?,
        start_until: time_param("until", p.until.as_deref())?,
        after_key: text(&p.after),
        limit,
    })
}

/// The JSON an entity is shown as: its current state plus where it stands in the log.
pub fn view(row: &EntityRow) -> Value {
    let mut state: Map<String, Value> = serde_json::from_str(&row.state).unwrap_or_default();
    for (field, ms) in [("start_at", row.start_at), ("end_at", row.end_at)] {
        if let Some(ms) = ms {
            state.entry(field).or_insert_with(|| json!(rfc3339(ms)));
        }
    }
    state.insert("updated_seq".into(), json!(row.updated_seq));
    Value::Object(state)
}

async fn page(
    state: &AppState,
    q: EntityQuery,
    render: impl Fn(&EntityRow) -> Value,
) -> Result<Json<EntityPage>, HttpError> {
    let rows = state.store.list_entities(&q).await?;
    Ok(page_of(&q, &rows, render))
}

fn page_of(
    q: &EntityQuery,
    rows: &[EntityRow],
    render: impl Fn(&EntityRow) -> Value,
) -> Json<EntityPage> {
    let next_cursor = (rows.len() as i64 == q.limit)
        .then(|| rows.last().map(|r| r.key.clone()))
        .flatten();
    Json(EntityPage {
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
pub async fn meetings(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    meeting_status_param(&p)?;
    page(&s, query(Kind::Meeting, None, &p)?, view).await
}

/// `GET /api/v1/meetings/{id}`
pub async fn meeting(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(view(&one(&s, Kind::Meeting, &id).await?)))
}

/// `GET /api/v1/meetings/{id}/instances`
pub async fn meeting_instances(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    page(&s, query(Kind::Instance, Some(id), &p)?, view).await
}

/// `GET /api/v1/meeting-instances/{uuid}`
pub async fn instance(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(view(&one(&s, Kind::Instance, &uuid).await?)))
}

/// `GET /api/v1/meeting-instances/{uuid}/participants` — each participant with sessions and
/// attendance. An open session of an ended instance counts until the instance's end.
pub async fn participants(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    let q = query(Kind::Participant, Some(uuid.clone()), &p)?;
    // Participants and the instance's end from one snapshot: open sessions are counted until
    // the end, so a torn read would report them with no time at all.
    let (rows, instance) = s
        .store
        .list_entities_with(&q, Kind::Instance.as_str(), &uuid)
        .await?;
    let instance_end = instance.and_then(|i| i.end_at);
    Ok(page_of(&q, &rows, |row| {
        participant_view(row, instance_end)
    }))
}

/// A participant with its sessions (times in RFC 3339) and attendance.
pub fn participant_view(row: &EntityRow, instance_end: Option<i64>) -> Value {
    let mut value = view(row);
    let doc: EntityDoc = serde_json::from_str(&row.doc).unwrap_or_default();
    let sessions = project::sessions(&doc);
    let summary = project::attendance(&sessions, instance_end);
    let time = |ms: Option<i64>| ms.map(rfc3339);
    let rendered: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let seconds = match (s.join_time, s.leave_time.or(instance_end)) {
                (Some(j), Some(l)) => Some((l - j).max(0) / 1000),
                _ => None,
            };
            json!({
                "join_time": time(s.join_time),
                "leave_time": time(s.leave_time),
                "leave_reason": s.leave_reason,
                "seconds": seconds,
            })
        })
        .collect();
    if let Value::Object(map) = &mut value {
        map.insert("sessions".into(), json!(rendered));
        map.insert(
            "attendance".into(),
            json!({
                "sessions": summary.sessions,
                "total_seconds": summary.total_seconds,
                "first_join": time(summary.first_join),
                "last_leave": time(summary.last_leave),
            }),
        );
    }
    value
}

/// `GET /api/v1/recordings`
pub async fn recordings(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    page(&s, query(Kind::Recording, None, &p)?, view).await
}

/// `GET /api/v1/recordings/{uuid}`
pub async fn recording(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(view(&one(&s, Kind::Recording, &uuid).await?)))
}

/// `GET /api/v1/users`
pub async fn users(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    page(&s, query(Kind::User, None, &p)?, view).await
}

/// `GET /api/v1/users/{id}`
pub async fn user(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(view(&one(&s, Kind::User, &id).await?)))
}

/// `GET /api/v1/webinars`
pub async fn webinars(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    meeting_status_param(&p)?;
    page(&s, query(Kind::Webinar, None, &p)?, view).await
}

/// `GET /api/v1/webinars/{id}`
pub async fn webinar(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    Ok(Json(view(&one(&s, Kind::Webinar, &id).await?)))
}

/// `GET /api/v1/webinars/{id}/registrants`
pub async fn registrants(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<EntityPage>, HttpError> {
    page(&s, query(Kind::Registrant, Some(id), &p)?, view).await
}
