//! One line of documentation for every configuration key: its default (or an example when it has
//! none), the form it takes and what it is for. `zoomhook config example` renders this table as
//! the annotated `zoomhook.example.toml`.
//!
//! Why a table beside the parser rather than inside it: the parser's defaults sit next to the
//! validation that needs them (`mod.rs`, `limits.rs`), and threading documentation through every
//! call would make those functions harder to read. Instead the tests in `example.rs` hold the two
//! together: the keys here must be exactly the parser's key lists (`raw.rs`), every value shown
//! here must be accepted, and setting every documented default explicitly must resolve to the
//! same configuration as setting nothing — so a default changed on one side fails the build.

/// What the example shows as a key's value (a TOML literal).
#[derive(Debug, Clone, Copy)]
pub enum Shown {
    /// What the parser uses when the key is not set.
    Default(&'static str),
    /// The key has no value by default (the feature is off, or the value is derived, as the
    /// line's text says); this is an illustration of the form.
    Example(&'static str),
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key as written in TOML (`listen`; within a source table, `secret`).
    pub key: &'static str,
    pub shown: Shown,
    /// The accepted form, e.g. `duration (300s, 5m, 7d)`.
    pub form: &'static str,
    /// What the key is for, in one line.
    pub doc: &'static str,
}

/// A group of keys rendered under one heading.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub title: &'static str,
    /// `None` for top-level keys; else the name of the `[sources.NAME]` table shown.
    pub source: Option<&'static str>,
    /// A few lines introducing the group (may be empty).
    pub intro: &'static str,
    pub keys: &'static [KeyDoc],
}

const fn default(
    key: &'static str,
    value: &'static str,
    form: &'static str,
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        shown: Shown::Default(value),
        form,
        doc,
    }
}

const fn example(
    key: &'static str,
    value: &'static str,
    form: &'static str,
    doc: &'static str,
) -> KeyDoc {
    KeyDoc {
        key,
        shown: Shown::Example(value),
        form,
        doc,
    }
}

const DURATION: &str = "duration (10s, 5m, 2h, 7d)";
const PATH: &str = "path of a file holding the secret";

/// Every key, in the order the example shows them. Top-level sections come first (TOML puts
/// tables after all top-level keys).
pub const SECTIONS: &[Section] = &[
    Section {
        title: "Server",
        source: None,
        intro: "",
        keys: &[
            default(
                "listen",
                "\"127.0.0.1:8080\"",
                "HOST:PORT",
                "Address of the HTTP server (webhooks, admin API, dashboard, /metrics); 0.0.0.0:8080 in a container.",
            ),
            example(
                "instance_id",
                "\"zoomhook-1\"",
                "at most 40 printable characters, no spaces",
                "This instance's name among those sharing a database (/readyz, /api/v1/sources); by default host name and process id.",
            ),
            default(
                "database_url",
                "\"sqlite://zoomhook.db\"",
                "sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
                "The event log and all state; a relative SQLite path is relative to the working directory.",
            ),
            example(
                "database_url_file",
                "\"/run/secrets/zoomhook_database_url\"",
                PATH,
                "database_url, read from a file (for a PostgreSQL password kept out of the environment; set one of the two).",
            ),
            example(
                "admin_token",
                "\"a-long-random-string\"",
                "string",
                "An admin API token accepted as given; without one, the first start creates one, stores its hash and prints it once.",
            ),
            example(
                "admin_token_file",
                "\"/run/secrets/zoomhook_admin_token\"",
                PATH,
                "admin_token, read from a file (set one of the two).",
            ),
            default(
                "shutdown_timeout",
                "\"30s\"",
                DURATION,
                "On SIGTERM: stop accepting, and give in-flight requests this long to finish and commit.",
            ),
            default(
                "log_format",
                "\"text\"",
                "text or json",
                "Log lines on stderr: text for people, json (one object per line) for log collectors. Verbosity: ZOOMHOOK_LOG.",
            ),
        ],
    },
    Section {
        title: "Requests and connections",
        source: None,
        intro: "Limits that hold against unauthenticated, slow or hostile clients.",
        keys: &[
            default(
                "max_body_bytes",
                "2097152",
                "bytes, at least 1024",
                "Largest accepted webhook body; a larger one gets 413. A reverse proxy in front must allow at least this.",
            ),
            default(
                "read_timeout",
                "\"10s\"",
                DURATION,
                "Time a client has to send a whole request body; a slower one gets 408.",
            ),
            default(
                "max_connections",
                "\"auto\"",
                "number of connections, or auto",
                "Most open connections; auto is half of `ulimit -n` after 128 kept for the database and deliveries, between 16 and 1024.",
            ),
            default(
                "header_read_timeout",
                "\"10s\"",
                DURATION,
                "Time to send request line and headers, from the connection's start or from their first byte.",
            ),
            default(
                "keep_alive_timeout",
                "\"60s\"",
                DURATION,
                "An idle connection between two requests is closed after this.",
            ),
            default(
                "http2_max_concurrent_streams",
                "64",
                "number, at least 1",
                "Most requests at once on one HTTP/2 connection.",
            ),
            default(
                "max_body_bytes_in_flight",
                "67108864",
                "bytes, at least max_body_bytes",
                "Body bytes (over 64 KiB each) all requests may hold together; beyond it webhooks get 503 with Retry-After: 1.",
            ),
            default(
                "dedupe_window",
                "\"7d\"",
                DURATION,
                "How long dedupe keys are kept: a retry or re-send of an event within it is answered 2xx and not stored again.",
            ),
        ],
    },
    Section {
        title: "Streams (GET /api/v1/stream)",
        source: None,
        intro: "",
        keys: &[
            default(
                "stream_send_timeout",
                "\"10s\"",
                DURATION,
                "A stream client whose socket accepts no frame for this long is closed as a slow consumer.",
            ),
            default(
                "stream_ping_interval",
                "\"20s\"",
                DURATION,
                "How often stream clients are pinged; keep a proxy's idle timeout above it.",
            ),
        ],
    },
    Section {
        title: "SQLite",
        source: None,
        intro: "Only used with a sqlite:// database_url.",
        keys: &[
            default(
                "sqlite_busy_timeout",
                "\"2s\"",
                DURATION,
                "How long a write waits for a lock before the request gets 503 (and Zoom retries).",
            ),
            default(
                "sqlite_wal_limit",
                "67108864",
                "bytes, at least 1048576",
                "WAL size past which it is started over as soon as readers let it; watch zoomhook_sqlite_wal_bytes.",
            ),
        ],
    },
    Section {
        title: "Zoom app credentials",
        source: None,
        intro: "Defaults for the OAuth credentials of zoom_websocket sources (see the end of this file).",
        keys: &[
            example(
                "zoom_account_id",
                "\"your-account-id\"",
                "string",
                "The Zoom account id (Server-to-Server OAuth apps).",
            ),
            example(
                "zoom_client_id",
                "\"your-client-id\"",
                "string",
                "The Zoom app's client id.",
            ),
            example(
                "zoom_client_secret",
                "\"your-client-secret\"",
                "string",
                "The Zoom app's client secret.",
            ),
            example(
                "zoom_client_secret_file",
                "\"/run/secrets/zoom_client_secret\"",
                PATH,
                "zoom_client_secret, read from a file.",
            ),
        ],
    },
    Section {
        title: "Outbound delivery",
        source: None,
        intro: "Subscriptions themselves are managed through the admin API or `zoomhook subs`.",
        keys: &[
            default(
                "delivery_enabled",
                "true",
                "true or false",
                "Run the fan-out reader and delivery workers in this process (false: ingest only).",
            ),
            default(
                "delivery_retry_schedule",
                "\"5s,5m,30m,2h,5h,10h,10h\"",
                "comma-separated durations",
                "Delays between attempts after the first; after the last the delivery is failed (retry or replay by hand).",
            ),
            example(
                "delivery_allow_cidrs",
                "\"10.0.0.0/8, 127.0.0.0/8\"",
                "comma-separated CIDRs",
                "Private or loopback networks deliveries may reach anyway; by default none (SSRF guard).",
            ),
            default(
                "delivery_disable_after",
                "\"5d\"",
                DURATION,
                "A subscription failing this long without a single success is disabled.",
            ),
            default(
                "delivery_retention",
                "\"30d\"",
                DURATION,
                "Finished deliveries and their attempts are deleted this long after their last update.",
            ),
        ],
    },
    Section {
        title: "Email",
        source: None,
        intro: "",
        keys: &[
            example(
                "smtp_url",
                "\"smtp://user:password@mail.example.com:587?tls=required\"",
                "smtp://HOST:PORT, smtp://USER:PASS@HOST:587?tls=required or smtps://…",
                "SMTP server for email subscriptions; by default none, and email cannot be sent.",
            ),
            example(
                "smtp_url_file",
                "\"/run/secrets/zoomhook_smtp_url\"",
                PATH,
                "smtp_url, read from a file.",
            ),
            default(
                "smtp_from",
                "\"zoomhook@localhost\"",
                "email address",
                "Sender of notification emails.",
            ),
        ],
    },
    Section {
        title: "Webhook sources",
        source: Some("zoom"),
        intro: "[sources.zoom] is the source at POST /webhooks/zoom; add [sources.NAME] tables for\n\
                POST /webhooks/zoom/NAME (NAME: lowercase letters, digits, '-'). A source with no\n\
                check configured refuses every request: set at least `secret`.",
        keys: &[
            default(
                "kind",
                "\"webhook\"",
                "webhook or zoom_websocket",
                "webhook: Zoom posts events here; zoom_websocket: read Zoom's WebSocket instead (next section).",
            ),
            default(
                "timestamp_tolerance",
                "\"300s\"",
                DURATION,
                "Accepted age (and clock skew) of x-zm-request-timestamp, both ways; beyond it 401.",
            ),
            example(
                "secret",
                "\"your-zoom-secret-token\"",
                "string",
                "The Secret Token of the Zoom app's event subscription: verifies x-zm-signature over the raw body.",
            ),
            example(
                "secret_file",
                "\"/run/secrets/zoom_webhook_secret\"",
                PATH,
                "secret, read from a file.",
            ),
            example(
                "previous_secret",
                "\"your-previous-secret-token\"",
                "string",
                "The previous Secret Token, accepted as well while you rotate.",
            ),
            example(
                "previous_secret_file",
                "\"/run/secrets/zoom_webhook_previous_secret\"",
                PATH,
                "previous_secret, read from a file.",
            ),
            example(
                "basic_username",
                "\"zoom\"",
                "string",
                "Zoom's Basic Authentication option: the username (needs basic_password).",
            ),
            example(
                "basic_password",
                "\"a-basic-password\"",
                "string",
                "Zoom's Basic Authentication option: the password.",
            ),
            example(
                "basic_password_file",
                "\"/run/secrets/zoom_basic_password\"",
                PATH,
                "basic_password, read from a file.",
            ),
            example(
                "token_client_id",
                "\"a-client-id\"",
                "string",
                "Zoom's Token Authentication: the client id Zoom uses at /oauth/token/NAME (needs token_client_secret).",
            ),
            example(
                "token_client_secret",
                "\"a-client-secret\"",
                "string",
                "Zoom's Token Authentication: the client secret.",
            ),
            example(
                "token_client_secret_file",
                "\"/run/secrets/zoom_token_client_secret\"",
                PATH,
                "token_client_secret, read from a file.",
            ),
            example(
                "custom_header_name",
                "\"x-zoomhook-key\"",
                "header name starting with x-",
                "Zoom's Custom Header option: the header (needs custom_header_value).",
            ),
            example(
                "custom_header_value",
                "\"a-header-value\"",
                "string",
                "Zoom's Custom Header option: its value.",
            ),
            example(
                "custom_header_value_file",
                "\"/run/secrets/zoom_custom_header_value\"",
                PATH,
                "custom_header_value, read from a file.",
            ),
            example(
                "verification_token",
                "\"a-verification-token\"",
                "string",
                "Zoom's deprecated verification token (the authorization header of old apps).",
            ),
            example(
                "verification_token_file",
                "\"/run/secrets/zoom_verification_token\"",
                PATH,
                "verification_token, read from a file.",
            ),
            example(
                "allow_ips",
                "\"3.235.82.0/23, 3.235.96.0/23\"",
                "comma-separated CIDRs or addresses",
                "Only these networks may post to this source; by default any.",
            ),
        ],
    },
    Section {
        title: "Zoom's WebSocket as a source",
        source: Some("live"),
        intro: "Instead of receiving webhooks, a source can hold Zoom's event WebSocket open. Uncomment\n\
                the table header too. Credentials default to the Zoom app credentials above.",
        keys: &[
            example(
                "kind",
                "\"zoom_websocket\"",
                "webhook or zoom_websocket",
                "Makes this a WebSocket source (POST /webhooks/zoom/NAME then answers 404).",
            ),
            example(
                "subscription_id",
                "\"your-event-subscription-id\"",
                "string",
                "Required: the event subscription's id (subscriptionId in the wss:// URL Zoom shows).",
            ),
            example(
                "account_id",
                "\"your-account-id\"",
                "string",
                "Account id for Server-to-Server OAuth; by default zoom_account_id.",
            ),
            example(
                "client_id",
                "\"your-client-id\"",
                "string",
                "The app's client id; by default zoom_client_id.",
            ),
            example(
                "client_secret",
                "\"your-client-secret\"",
                "string",
                "The app's client secret; by default zoom_client_secret.",
            ),
            example(
                "client_secret_file",
                "\"/run/secrets/zoom_client_secret\"",
                PATH,
                "client_secret, read from a file.",
            ),
            default(
                "grant_type",
                "\"account_credentials\"",
                "account_credentials or client_credentials",
                "account_credentials for Server-to-Server OAuth apps, client_credentials for general apps.",
            ),
            default(
                "oauth_url",
                "\"https://zoom.us/oauth/token\"",
                "https:// URL",
                "Zoom's token endpoint.",
            ),
            default(
                "websocket_url",
                "\"wss://ws.zoom.us/ws\"",
                "wss:// URL",
                "Zoom's WebSocket endpoint.",
            ),
            default(
                "heartbeat_interval",
                "\"30s\"",
                DURATION,
                "How often a heartbeat is sent (Zoom expects one every 30 s).",
            ),
            default(
                "silence_timeout",
                "\"45s\"",
                DURATION,
                "A connection silent this long is dead and reconnected; longer than heartbeat_interval.",
            ),
        ],
    },
];
