//! Client and server configuration.
//!
//! Four plain structs with public fields and [`Default`]:
//!
//! - [`TransportConfig`]: QUIC knobs shared by both sides (idle timeout, flow-control windows,
//!   stream limits, datagram buffers, congestion control); [`TransportConfig::to_quinn`] turns it
//!   into a [`quinn::TransportConfig`].
//! - [`SessionLimits`]: the caps on every buffer a peer can fill at the WebTransport layer.
//! - [`ClientConfig`] and [`ServerConfig`]: everything else, each with `development()` and
//!   `production()` presets, TOML (de)serialization and [`validate`](ClientConfig::validate).
//!
//! # TOML form
//!
//! Every struct reads with `#[serde(default)]` (a missing key keeps its default) and rejects
//! unknown keys, so a typo such as `max_idle_timout` is an error instead of a silently ignored
//! line. Parsing does not validate: call `validate()` after loading and after applying any
//! overrides (the `quinn_*_config` functions of the `tls` module validate for you).
//!
//! - **Durations** are strings of one number and one unit: `"30s"`, `"250ms"`, `"1.5s"`,
//!   `"2m"`, `"1h"`, `"100us"`, `"500ns"`, `"1d"`. A bare TOML number is read as seconds
//!   (`connect_timeout = 2.5`), as pywebtransport's float seconds are. Durations are written
//!   back in the largest unit that keeps them exact (`"1m"`, `"250ms"`).
//! - **Optional durations** (`keep_alive_interval`, `read_timeout`, ...) additionally take
//!   `"off"` (or `"none"`) for "no value"; that is also how `None` is written.
//! - **Enums** are externally tagged in `snake_case`: `verification = "system_roots"`,
//!   `verification = { ca_file = "ca.pem" }`,
//!   `verification = { server_certificate_hashes = ["ab:cd:..."] }`,
//!   `certificate = { files = { cert = "cert.pem", key = "key.pem" } }`,
//!   `congestion_controller = "bbr"`.
//! - **PEM blobs** (`ca_pem`, `certificate.pem.cert`/`.key`) are TOML strings holding the PEM
//!   text; **hashes** are hex strings, with or without `:` between bytes.
//! - **Headers** are an array of `[name, value]` pairs, kept in order.
//! - Relative paths are relative to the process's working directory, not to the TOML file.
//!
//! ```toml
//! connect_timeout = "5s"
//! verification = { server_certificate_hashes = ["0f1e...64 hex digits..."] }
//!
//! [transport]
//! max_idle_timeout = "60s"
//! keep_alive_interval = "15s"
//! congestion_controller = "bbr"
//! ```
//!
//! # pywebtransport 0.8.1 fields and where they went
//!
//! | 0.8.1 field | here |
//! |---|---|
//! | `alpn_protocols` | `alpn` |
//! | `ca_certs`, `verify_mode` | client: `verification`; server: `client_ca`, `require_client_certificate` |
//! | `certfile`, `keyfile` | client: `client_certificate`; server: `certificate` |
//! | `connection_idle_timeout`, `keep_alive`, `connection_keepalive_timeout` | `transport.max_idle_timeout`, `transport.keep_alive_interval` |
//! | `congestion_control_algorithm` (`reno`/`cubic`) | `transport.congestion_controller` (`new_reno`, alias `reno`; `cubic`; `bbr`) |
//! | `flow_control_window_size`, `initial_max_data` | `transport.stream_receive_window`, `transport.receive_window`, `transport.send_window` |
//! | `initial_max_streams_bidi/uni`, `max_streams`, `max_streams_per_connection` | `transport.max_concurrent_bidi_streams/uni_streams` |
//! | `max_incoming_streams` | `limits.incoming_stream_queue` |
//! | `max_pending_events_per_session`, `max_total_pending_events` | `limits.max_pending_streams`, `limits.max_pending_datagrams` |
//! | `max_sessions` | `limits.max_sessions` (per connection, see [`SessionLimits`]) |
//! | `connect_timeout`, `close_timeout`, `read_timeout`, `write_timeout`, `stream_creation_timeout` | same names |
//! | `headers`, `user_agent`, `max_retries`, `retry_delay`, `retry_backoff`, `max_retry_delay`, `max_connections` | same names |
//! | `bind_host`, `bind_port` | `bind` (a list of socket addresses) |
//!
//! Left out on purpose:
//!
//! - `debug`, `log_level`, `access_log`: logging is configured on the `tracing` subscriber,
//!   not per object.
//! - `connection_cleanup_interval`, `connection_idle_check_interval`, `session_cleanup_interval`,
//!   `stream_cleanup_interval`, `pending_event_ttl`: Python polls to garbage-collect; here
//!   resources are released when their handle drops and idle connections are timed out by QUIC.
//! - `stream_buffer_size`, `max_stream_buffer_size`: reads go straight from quinn's receive
//!   buffer, bounded by `transport.stream_receive_window`.
//! - `stream_flow_control_increment_bidi/uni`: quinn re-issues stream credit itself.
//! - `flow_control_window_auto_scale`: quinn has no auto-tuning; pick windows for the path.
//! - `max_datagram_size`: the real limit is the path MTU, which quinn reports per connection
//!   (`Connection::max_datagram_size`); a configured number would only be a second, wrong limit.
//! - `auto_reconnect`: reconnection is a type (the reconnecting client), not a flag.
//! - `proxy`: the proxy address is an argument of `Connection::connect`, as it was of
//!   0.8.1's `create_client`; HTTP CONNECT proxies are not supported.
//! - `rpc_concurrency_limit`, `middleware`: they belong to the messaging crate and the server
//!   app layer.
//!
//! # Layout
//!
//! One file per concern: `transport` ([`TransportConfig`]), `limits` ([`SessionLimits`]),
//! `certs` ([`CertVerification`], [`CertificateSource`]), `client` ([`ClientConfig`]), `server`
//! ([`ServerConfig`]), `serde_util` (the TOML forms above), `hex` (SHA-256 hashes as text)
//! and `validate` (the field checks they share). Nothing here uses the `tls` module: `tls`
//! builds rustls and quinn configurations from these types, never the reverse.

use std::io;
use std::path::PathBuf;

mod certs;
mod client;
pub(crate) mod hex;
mod limits;
mod serde_util;
pub(crate) use serde_util::{duration_serde, opt_duration_serde};
mod server;
mod transport;
mod validate;

pub use certs::{CertVerification, CertificateSource};
pub use client::ClientConfig;
pub use limits::SessionLimits;
pub use serde_util::{format_duration, parse_duration};
pub use server::ServerConfig;
pub use transport::{CongestionController, TransportConfig, MTU_SEARCH_STEP};

/// The largest value a QUIC variable-length integer can hold (RFC 9000 §16): every
/// flow-control window and stream count travels as one.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// A configuration value that [`ClientConfig::validate`] or [`ServerConfig::validate`]
/// rejected, or a TOML document that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value that cannot work.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// Path of the field from the top of the config, such as `transport.receive_window`.
        field: String,
        /// Why the value was rejected.
        reason: String,
    },
    /// A field names a file that does not exist.
    #[error("`{field}`: file not found: {}", path.display())]
    FileNotFound {
        /// Path of the field from the top of the config, such as `certificate.files.cert`.
        field: String,
        /// The missing file.
        path: PathBuf,
    },
    /// A config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The TOML text is not a valid config (syntax, a wrong type, an unknown key).
    #[error("invalid TOML config{}: {source}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The config could not be written as TOML (for example a path that is not UTF-8).
    #[error("cannot write config as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

impl ConfigError {
    /// The path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::FileNotFound { field, .. } => Some(field),
            _ => None,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Helpers shared by the tests of the config modules.
#[cfg(test)]
mod testing {
    use super::{ClientConfig, ConfigError, ServerConfig};

    fn field_of<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> String {
        r.expect_err("validation should fail")
            .field()
            .expect("error names a field")
            .to_owned()
    }

    pub(super) fn client_fails(field: &str, mutate: impl FnOnce(&mut ClientConfig)) {
        let mut c = ClientConfig::default();
        mutate(&mut c);
        assert_eq!(field_of(c.validate()), field, "{c:?}");
    }

    pub(super) fn server_fails(field: &str, mutate: impl FnOnce(&mut ServerConfig)) {
        let mut c = ServerConfig::default();
        mutate(&mut c);
        assert_eq!(field_of(c.validate()), field, "{c:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn error_messages_name_field_and_reason() {
        let mut c = ClientConfig::default();
        c.transport.keep_alive_interval = Some(Duration::from_secs(45));
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("`transport.keep_alive_interval`"), "{msg}");
        assert!(msg.contains("45s") && msg.contains("30s"), "{msg}");

        let s = ServerConfig {
            certificate: CertificateSource::Files {
                cert: "/nope/cert.pem".into(),
                key: "/nope/key.pem".into(),
            },
            ..ServerConfig::default()
        };
        let msg = s.validate().unwrap_err().to_string();
        assert!(
            msg.contains("/nope/cert.pem") && msg.contains("not found"),
            "{msg}"
        );
    }

    #[test]
    fn drafts_in_toml() {
        use webtransport_proto::settings::{WtDraft, WtDrafts};

        // Every draft by default, written by name.
        let text = ClientConfig::default().to_toml_string().unwrap();
        assert!(
            text.contains(
                r#"drafts = ["draft-02", "draft-07", "draft-13", "draft-15", "draft-17"]"#
            ),
            "{text}"
        );
        // `draft-16` names the draft-15/16 family.
        let c = ClientConfig::from_toml_str(r#"drafts = ["draft-16", "17"]"#).unwrap();
        assert_eq!(
            c.drafts,
            WtDrafts::only(WtDraft::Draft15).with(WtDraft::Draft17)
        );
        let s = ServerConfig::from_toml_str(r#"drafts = ["draft-17"]"#).unwrap();
        assert_eq!(s.drafts, WtDrafts::only(WtDraft::Draft17));
        let e = ServerConfig::from_toml_str(r#"drafts = ["draft-18"]"#).unwrap_err();
        assert!(e.to_string().contains("draft-18"), "{e}");
        super::testing::client_fails("drafts", |c| c.drafts = WtDrafts::NONE);
        super::testing::server_fails("drafts", |c| c.drafts = WtDrafts::NONE);
    }
}
