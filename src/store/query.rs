//! Filters over the event log and their translation to SQL, shared by both backends (only the
//! placeholder syntax differs: `?N` for SQLite, `$N` for PostgreSQL).

use crate::core::pattern::EventPattern;
use crate::core::storable;

/// Largest page the store returns, whatever the caller asks.
pub const MAX_PAGE: i64 = 1000;

/// A filter over the event log. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Event-name patterns, OR-ed (`meeting.*`, `user.created`).
    pub patterns: Vec<EventPattern>,
    /// Received at or after (epoch ms).
    pub since: Option<i64>,
    /// Received strictly before (epoch ms).
    pub until: Option<i64>,
    /// Object id or uuid (a meeting id, a meeting instance uuid, a user id …).
    pub entity: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Only entries with `seq` greater than this (ascending cursor).
    pub after_seq: Option<i64>,
    /// Only entries with `seq` less than this (descending cursor).
    pub before_seq: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// Page size (clamped to 1..=[`MAX_PAGE`]).
    pub limit: i64,
}

/// A bind parameter of a generated query.
#[derive(Debug, Clone)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// The columns of `events`, in the order the backends read them.
pub const EVENT_COLUMNS: &str = "seq, id, source, event, event_ts, account_id, object_id, object_uuid, received_at, request_id, dedupe_key, body";

impl EventQuery {
    /// Builds `SELECT … FROM events WHERE … ORDER BY seq LIMIT …`; `placeholder(n)` renders the
    /// n-th (1-based) bind parameter in the backend's syntax.
    pub fn to_sql(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<Param>) {
        let (clauses, mut params) = self.clauses(&placeholder);
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let order = if self.descending { "DESC" } else { "ASC" };
        params.push(Param::Int(self.limit.clamp(1, MAX_PAGE)));
        let limit = placeholder(params.len());
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events{where_sql} ORDER BY seq {order} LIMIT {limit}"
        );
        (sql, params)
    }

    /// Whether anything but the `seq` cursor filters (what a secondary index serves).
    pub fn has_filters(&self) -> bool {
        !self.patterns.is_empty()
            || self.since.is_some()
            || self.until.is_some()
            || self.entity.is_some()
            || self.source.is_some()
    }

    /// The WHERE conditions (AND-ed) over the columns `event`, `received_at`, `object_id`,
    /// `object_uuid`, `source` and `seq`, and their parameters.
    pub fn clauses(&self, placeholder: impl Fn(usize) -> String) -> (Vec<String>, Vec<Param>) {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        let bind = |p: Param, params: &mut Vec<Param>| {
            params.push(p);
            placeholder(params.len())
        };
        if !self.patterns.is_empty() {
            let alternatives: Vec<String> = self
                .patterns
                .iter()
                .map(|p| match p.to_sql_like() {
                    Some(like) => format!(
                        "event LIKE {} ESCAPE '\\'",
                        bind(Param::Text(like), &mut params)
                    ),
                    None => format!(
                        "event = {}",
                        bind(Param::Text(p.as_str().to_owned()), &mut params)
                    ),
                })
                .collect();
            clauses.push(format!("({})", alternatives.join(" OR ")));
        }
        if let Some(since) = self.since {
            clauses.push(format!(
                "received_at >= {}",
                bind(Param::Int(since), &mut params)
            ));
        }
        if let Some(until) = self.until {
            clauses.push(format!(
                "received_at < {}",
                bind(Param::Int(until), &mut params)
            ));
        }
        if let Some(entity) = &self.entity {
            // Stored ids are in their storable form; so is what they are compared with.
            let entity = storable::key(entity).into_owned();
            let a = bind(Param::Text(entity.clone()), &mut params);
            let b = bind(Param::Text(entity), &mut params);
            clauses.push(format!("(object_id = {a} OR object_uuid = {b})"));
        }
        if let Some(source) = &self.source {
            clauses.push(format!(
                "source = {}",
                bind(
                    Param::Text(storable::key_owned(source.clone())),
                    &mut params
                )
            ));
        }
        if let Some(after) = self.after_seq {
            clauses.push(format!("seq > {}", bind(Param::Int(after), &mut params)));
        }
        if let Some(before) = self.before_seq {
            clauses.push(format!("seq < {}", bind(Param::Int(before), &mut params)));
        }
        (clauses, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_filters_with_backend_placeholders() {
        let q = EventQuery {
            patterns: EventPattern::parse_list("meeting.*,user.created").unwrap(),
            entity: Some("123".into()),
            after_seq: Some(5),
            limit: 50,
            ..EventQuery::default()
        };
        let (sql, params) = q.to_sql(|n| format!("${n}"));
        assert!(
            sql.contains("(event LIKE $1 ESCAPE '\\' OR event = $2)"),
            "{sql}"
        );
        assert!(
            sql.contains("(object_id = $3 OR object_uuid = $4)"),
            "{sql}"
        );
        assert!(sql.contains("seq > $5"), "{sql}");
        assert!(sql.ends_with("ORDER BY seq ASC LIMIT $6"), "{sql}");
        assert_eq!(params.len(), 6);
    }
}
