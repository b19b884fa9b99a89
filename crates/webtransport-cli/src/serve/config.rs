//! `wt serve --config FILE`: the TOML file that describes a whole server (its listeners,
//! certificate, limits, routes to built-in handlers, and HTTP endpoints), read with the
//! same conventions as the library's `ServerConfig` (unknown keys are errors, durations
//! are strings like `"30s"`) and checked field by field before anything binds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webtransport::app::{handlers::Builtin, AppLimits};
use webtransport::{CertificateSource, ConfigError, ServerConfig, SessionLimits, TransportConfig};

/// A `wt serve` configuration file. Every key is optional; [`ServeFile::default`] is what
/// `wt serve` runs without `--config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeFile {
    /// Browser origins (`scheme://host[:port]`) allowed to open sessions; a request with
    /// another `Origin` gets 403. Empty (the default) allows every origin and requests
    /// without one (non-browser clients).
    pub allowed_origins: Vec<String>,
    /// Port of the HTTP page server on 127.0.0.1 (the demo page at `/`, the chat page at
    /// `/chat`, Prometheus metrics at `/metrics`). Default: the first listener's port + 1.
    pub http_port: Option<u16>,
    /// Serve the HTTP pages at all. Default true.
    pub http: bool,
    /// A second address for `/metrics` alone (for a scraper that should not reach the demo
    /// pages, or listens elsewhere than 127.0.0.1). Default: none.
    pub metrics: Option<SocketAddr>,
    /// Connections served at once by each listener; more are refused. Default 3000.
    pub max_connections: usize,
    /// Time sessions get to end after GOAWAY/DRAIN when the server shuts down. Default 3 s.
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    /// The certificate of every listener without one of its own. Default: a fresh
    /// self-signed certificate that browsers accept by its hash (printed at startup).
    pub certificate: Option<CertificateSource>,
    /// The listeners: each is a server of its own with one app over all of them (one
    /// registry, one set of statistics). Default: one, on `127.0.0.1:4433` and `[::1]:4433`.
    pub listeners: Vec<Listener>,
    /// Routes to built-in handlers, matched in the framework's way (exact paths before
    /// patterns with `{name}` segments). Default: `/echo`, `/chat/{room}` and
    /// `/webtransport/devious-baton`.
    pub routes: Vec<RouteConfig>,
    /// QUIC settings of every listener.
    pub transport: TransportConfig,
    /// WebTransport buffer caps of every connection.
    pub limits: SessionLimits,
    /// The app's session limits (sessions in total and per IP, idle sessions, broadcast
    /// queues, shutdown grace).
    pub app: AppLimits,
}

/// One listener: UDP addresses served by one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listener {
    /// Its addresses (at least one).
    pub bind: Vec<SocketAddr>,
    /// Its certificate; default: the file's `certificate`.
    pub certificate: Option<CertificateSource>,
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            bind: vec![crate::serve::default_bind()],
            certificate: None,
        }
    }
}

/// A route to a built-in handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path, exact (`/echo`) or a pattern (`/chat/{room}`).
    pub path: String,
    /// Which handler serves it.
    pub handler: HandlerName,
    /// What `hello` sends (required for it, refused for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The built-in handlers a route can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerName {
    /// Everything echoed back (`webtransport::app::handlers::echo`).
    Echo,
    /// A chat room per `{room}` (`handlers::chat`).
    Chat,
    /// The Devious Baton interop protocol (`handlers::baton`).
    DeviousBaton,
    /// A static text (`handlers::hello`), from `text`.
    Hello,
}

impl HandlerName {
    /// What it does, in a few words (for `wt serve`'s banner).
    pub fn describe(self) -> &'static str {
        match self {
            HandlerName::Echo => "echo",
            HandlerName::Chat => "chat room",
            HandlerName::DeviousBaton => "Devious Baton",
            HandlerName::Hello => "hello (static text)",
        }
    }
}

impl RouteConfig {
    fn new(path: &str, handler: HandlerName) -> Self {
        RouteConfig {
            path: path.into(),
            handler,
            text: None,
        }
    }

    /// The library's handler for this route (the file is validated first).
    pub fn builtin(&self) -> Builtin {
        match self.handler {
            HandlerName::Echo => Builtin::Echo,
            HandlerName::Chat => Builtin::Chat,
            HandlerName::DeviousBaton => Builtin::DeviousBaton,
            HandlerName::Hello => Builtin::Hello {
                text: self.text.clone().unwrap_or_default(),
            },
        }
    }
}

impl Default for ServeFile {
    fn default() -> Self {
        ServeFile {
            allowed_origins: Vec::new(),
            http_port: None,
            http: true,
            metrics: None,
            max_connections: ServerConfig::default().max_connections,
            drain_timeout: Duration::from_secs(3),
            certificate: None,
            listeners: Vec::new(),
            routes: vec![
                RouteConfig::new("/echo", HandlerName::Echo),
                RouteConfig::new("/chat/{room}", HandlerName::Chat),
                RouteConfig::new("/webtransport/devious-baton", HandlerName::DeviousBaton),
            ],
            transport: TransportConfig::default(),
            limits: SessionLimits::default(),
            app: AppLimits::default(),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ServeFile {
    /// Reads a file (not validated: call [`ServeFile::validate`]).
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: Some(path.to_owned()),
            source: Box::new(e),
        })
    }

    /// The file as TOML text.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// The server settings of listener `index` (certificate defaulted to `fallback`).
    pub fn server_config(&self, listener: &Listener, fallback: &CertificateSource) -> ServerConfig {
        ServerConfig {
            transport: self.transport.clone(),
            limits: self.limits.clone(),
            bind: listener.bind.clone(),
            certificate: listener
                .certificate
                .clone()
                .or_else(|| self.certificate.clone())
                .unwrap_or_else(|| fallback.clone()),
            max_connections: self.max_connections,
            drain_timeout: self.drain_timeout,
            ..ServerConfig::default()
        }
    }

    /// Checks every field; the error names the first bad one by its path in the file,
    /// such as `routes[1].text` or `listeners[0].bind`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            check_origin(origin).map_err(|why| invalid(format!("allowed_origins[{i}]"), why))?;
        }
        if self.routes.is_empty() {
            return Err(invalid("routes", "needs at least one route"));
        }
        let mut seen = BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = |name: &str| format!("routes[{i}].{name}");
            if !route.path.starts_with('/') {
                return Err(invalid(field("path"), "must start with `/`"));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(invalid(field("path"), "routed twice"));
            }
            match (route.handler, &route.text) {
                (HandlerName::Hello, None) => {
                    return Err(invalid(field("text"), "`hello` needs the text it sends"))
                }
                (HandlerName::Hello, Some(_)) | (_, None) => {}
                (_, Some(_)) => return Err(invalid(field("text"), "only `hello` takes a text")),
            }
        }
        if self.app.max_sessions == 0 {
            return Err(invalid("app.max_sessions", "must be at least 1"));
        }
        if self.app.max_sessions_per_ip == 0 {
            return Err(invalid("app.max_sessions_per_ip", "must be at least 1"));
        }
        if self.app.broadcast_queue == 0 {
            return Err(invalid("app.broadcast_queue", "must be at least 1"));
        }
        if self.app.idle_session_timeout == Some(Duration::ZERO) {
            return Err(invalid(
                "app.idle_session_timeout",
                "must be positive (or \"off\")",
            ));
        }
        // What every listener shares is checked once, as the file names it...
        let fallback = CertificateSource::default();
        self.server_config(&Listener::default(), &fallback)
            .validate()?;
        // ...then what each listener has of its own, under its index.
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.bind.is_empty() {
                return Err(invalid(
                    format!("listeners[{i}].bind"),
                    "needs at least one address",
                ));
            }
            self.server_config(listener, &fallback)
                .validate()
                .map_err(|e| under(&format!("listeners[{i}]"), e))?;
        }
        Ok(())
    }
}

/// `e` with its field moved under `prefix` when it is about the listener's own fields.
fn under(prefix: &str, e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid { field, reason } if is_listener_field(&field) => {
            ConfigError::Invalid {
                field: format!("{prefix}.{field}"),
                reason,
            }
        }
        ConfigError::FileNotFound { field, path } if is_listener_field(&field) => {
            ConfigError::FileNotFound {
                field: format!("{prefix}.{field}"),
                path,
            }
        }
        e => e,
    }
}

fn is_listener_field(field: &str) -> bool {
    field == "bind" || field.starts_with("certificate")
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("an origin is `scheme://host[:port]`, like `https://example.com`");
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err("the scheme is not valid");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#']) || rest.contains(char::is_whitespace) {
        return Err("an origin has a host and no path, query or fragment");
    }
    Ok(())
}

/// Durations as the library's config files write them (`"3s"`, `"250ms"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&webtransport::config::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        webtransport::config::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ServeFile {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn field_of(file: &ServeFile) -> String {
        file.validate()
            .expect_err("validation should fail")
            .field()
            .expect("the error names a field")
            .to_owned()
    }

    /// Every key the docs show, read back to an equal value after a write.
    const FULL: &str = r#"
allowed_origins = ["https://example.com", "http://127.0.0.1:4434"]
http_port = 8080
metrics = "127.0.0.1:9464"
max_connections = 500
drain_timeout = "2s"
certificate = { self_signed = { names = ["localhost"] } }

[[listeners]]
bind = ["127.0.0.1:4433", "[::1]:4433"]

[[listeners]]
bind = ["127.0.0.1:5433"]
certificate = { files = { cert = "Cargo.toml", key = "Cargo.toml" } }

[[routes]]
path = "/echo"
handler = "echo"

[[routes]]
path = "/rooms/{room}"
handler = "chat"

[[routes]]
path = "/webtransport/devious-baton"
handler = "devious-baton"

[[routes]]
path = "/hello"
handler = "hello"
text = "hi there"

[transport]
max_idle_timeout = "20s"

[limits]
max_sessions = 4

[app]
max_sessions = 100
max_sessions_per_ip = 10
idle_session_timeout = "5m"
slow_member = "disconnect"
"#;

    #[test]
    fn a_full_file_round_trips_and_validates() {
        let file = parse(FULL);
        file.validate().unwrap();
        assert_eq!(file.listeners.len(), 2);
        assert_eq!(
            file.routes[3].builtin(),
            Builtin::Hello {
                text: "hi there".into()
            }
        );
        assert_eq!(
            file.app.idle_session_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(file.drain_timeout, Duration::from_secs(2));
        let text = file.to_toml_string().unwrap();
        assert_eq!(parse(&text), file, "{text}");
        // So does the default, which is what `wt serve` runs without --config.
        let default = ServeFile::default();
        default.validate().unwrap();
        assert_eq!(parse(&default.to_toml_string().unwrap()), default);
        assert_eq!(parse(""), default);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |text: &str| field_of(&parse(text));
        assert_eq!(
            bad(r#"allowed_origins = ["example.com"]"#),
            "allowed_origins[0]"
        );
        assert_eq!(
            bad(r#"allowed_origins = ["https://a.com/x"]"#),
            "allowed_origins[0]"
        );
        assert_eq!(
            bad("[[routes]]\npath = \"/hello\"\nhandler = \"hello\""),
            "routes[0].text"
        );
        assert_eq!(
            bad("[[routes]]\npath = \"/e\"\nhandler = \"echo\"\ntext = \"x\""),
            "routes[0].text"
        );
        assert_eq!(
            bad("[[routes]]\npath = \"/e\"\nhandler = \"echo\"\n[[routes]]\npath = \"/e\"\nhandler = \"chat\""),
            "routes[1].path"
        );
        assert_eq!(
            bad("[[routes]]\npath = \"e\"\nhandler = \"echo\""),
            "routes[0].path"
        );
        assert_eq!(bad("routes = []"), "routes");
        assert_eq!(bad("[[listeners]]\nbind = []"), "listeners[0].bind");
        assert_eq!(
            bad("[[listeners]]\n[[listeners]]\ncertificate = { files = { cert = \"/nope.pem\", key = \"/nope.key\" } }"),
            "listeners[1].certificate.files.cert"
        );
        assert_eq!(bad("max_connections = 0"), "max_connections");
        assert_eq!(bad("[app]\nmax_sessions = 0"), "app.max_sessions");
        assert_eq!(bad("[app]\nbroadcast_queue = 0"), "app.broadcast_queue");
        assert_eq!(
            bad("[transport]\nmax_idle_timeout = \"0s\""),
            "transport.max_idle_timeout"
        );
        assert_eq!(bad("[limits]\nmax_sessions = 0"), "limits.max_sessions");
    }

    #[test]
    fn typos_and_unknown_handlers_are_errors() {
        assert!(toml::from_str::<ServeFile>("max_conections = 1").is_err());
        assert!(
            toml::from_str::<ServeFile>("[[routes]]\npath = \"/x\"\nhandler = \"nope\"").is_err()
        );
        assert!(toml::from_str::<ServeFile>(
            "[[routes]]\npath = \"/x\"\nhandler = \"echo\"\ntxt = \"\""
        )
        .is_err());
    }
}
