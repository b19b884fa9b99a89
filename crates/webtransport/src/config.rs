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
//! overrides (the `quinn_*_config` functions in [`crate::tls`] validate for you).
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

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/// The QUIC congestion controller (quinn's implementations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CongestionController {
    /// CUBIC (RFC 9438): quinn's and pywebtransport's default.
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7). TOML also accepts `"reno"`, pywebtransport's name for it.
    #[serde(alias = "reno")]
    NewReno,
    /// BBR (quinn's experimental BBRv1): higher throughput on lossy long-delay paths.
    Bbr,
}

/// QUIC transport settings shared by clients and servers.
///
/// The defaults aim at >1 Gbit/s on loopback and on ordinary paths: a single stream may have
/// 8 MiB in flight (at 10 ms RTT that is 6.7 Gbit/s per stream; at 100 ms, 670 Mbit/s) and a
/// connection 16 MiB. Receive windows are memory a peer can make us hold while the application
/// does not read, so a server with many connections may want smaller ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Close the connection after this long without any packet from the peer (RFC 9000 §10.1).
    /// The effective value is the smaller of ours and the peer's. Default 30 s (RFC 9308 §3.2;
    /// Chromium also uses 30 s).
    #[serde(with = "duration_serde")]
    pub max_idle_timeout: Duration,
    /// Send a PING after this long without sending anything, so an idle session survives the
    /// idle timeout and NAT bindings stay open. Must be shorter than `max_idle_timeout`.
    /// Default 10 s: a third of the idle timeout, so two lost PINGs are survivable.
    #[serde(with = "opt_duration_serde")]
    pub keep_alive_interval: Option<Duration>,
    /// Bytes the peer may send on one stream before we read them. Default 8 MiB.
    pub stream_receive_window: u64,
    /// Bytes the peer may send on all streams together before we read them. Default 16 MiB.
    pub receive_window: u64,
    /// Bytes we keep unacknowledged in flight on all streams together. Default 16 MiB.
    pub send_window: u64,
    /// Bidirectional streams the peer may have open at once. Default 256 (RFC 9114 §6.1
    /// recommends at least 100 for the server's limit).
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once. A peer's HTTP/3 uses up to three
    /// (control and two QPACK streams; we open only the control stream). Default 256.
    pub max_concurrent_uni_streams: u32,
    /// Bytes of received datagrams quinn buffers before the application reads them (the oldest
    /// are dropped beyond). Always advertised, so the `max_datagram_frame_size` transport
    /// parameter that WebTransport needs is non-zero. Default 4 MiB.
    pub datagram_receive_buffer: usize,
    /// Bytes of outgoing datagrams quinn queues before dropping the oldest. Default 4 MiB.
    /// Datagrams are built in 32 KiB blocks that are reused once sent: a connection keeps
    /// at most this many bytes of them (the most quinn can hold queued anyway), gives them
    /// back while its datagram rate falls, and holds what it has while it sends none.
    pub datagram_send_buffer: usize,
    /// Congestion controller. Default CUBIC.
    pub congestion_controller: CongestionController,
    /// RTT assumed before the first measurement. Default 333 ms (RFC 9002 §6.2.2's kInitialRtt).
    #[serde(with = "duration_serde")]
    pub initial_rtt: Duration,
    /// Probe for a path MTU above 1200 bytes (RFC 8899 DPLPMTUD): larger datagrams and fewer
    /// packets. Default on.
    pub mtu_discovery: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            stream_receive_window: 8 * MIB,
            receive_window: 16 * MIB,
            send_window: 16 * MIB,
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 256,
            datagram_receive_buffer: 4 * MIB as usize,
            datagram_send_buffer: 4 * MIB as usize,
            congestion_controller: CongestionController::Cubic,
            initial_rtt: Duration::from_millis(333),
            mtu_discovery: true,
        }
    }
}

impl TransportConfig {
    /// Builds quinn's transport config.
    ///
    /// Values that [`validate`](Self::validate) would reject are clamped into quinn's ranges
    /// instead of panicking (a window above [`VARINT_MAX`] becomes `VARINT_MAX`, an idle timeout
    /// too large for QUIC disables the idle timeout); validate first to be told about them.
    pub fn to_quinn(&self) -> quinn::TransportConfig {
        let varint = |v: u64| quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX);
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.max_idle_timeout).ok())
            .keep_alive_interval(self.keep_alive_interval)
            .stream_receive_window(varint(self.stream_receive_window))
            .receive_window(varint(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_concurrent_uni_streams.into())
            // `Some` makes quinn advertise max_datagram_frame_size (RFC 9221 §3), which
            // WebTransport datagrams require.
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .initial_rtt(self.initial_rtt)
            .mtu_discovery_config(self.mtu_discovery.then(quinn::MtuDiscoveryConfig::default));
        let factory: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match self
            .congestion_controller
        {
            CongestionController::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            CongestionController::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
            CongestionController::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        };
        t.congestion_controller_factory(factory);
        t
    }

    /// Checks every field; field paths in the error start with `transport.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const P: &str = "transport";
        positive(P, "max_idle_timeout", self.max_idle_timeout)?;
        // RFC 9000 §18.2: max_idle_timeout is a varint count of milliseconds.
        if self.max_idle_timeout.as_millis() > u128::from(VARINT_MAX) {
            return Err(ConfigError::invalid(
                "transport.max_idle_timeout",
                "too large for the QUIC transport parameter (2^62 - 1 ms)",
            ));
        }
        if let Some(keep_alive) = self.keep_alive_interval {
            positive(P, "keep_alive_interval", keep_alive)?;
            if keep_alive >= self.max_idle_timeout {
                return Err(ConfigError::invalid(
                    "transport.keep_alive_interval",
                    format!(
                        "{} is not shorter than max_idle_timeout ({}): the connection would \
                         time out between keep-alives",
                        format_duration(keep_alive),
                        format_duration(self.max_idle_timeout)
                    ),
                ));
            }
        }
        window(P, "stream_receive_window", self.stream_receive_window)?;
        window(P, "receive_window", self.receive_window)?;
        window(P, "send_window", self.send_window)?;
        // RFC 9114 §6.1: the client opens the CONNECT request (and our bidi streams) on a
        // bidirectional stream, so a limit of 0 makes WebTransport impossible.
        if self.max_concurrent_bidi_streams == 0 {
            return Err(ConfigError::invalid(
                "transport.max_concurrent_bidi_streams",
                "must be at least 1: requests and WebTransport bidi streams need it",
            ));
        }
        // RFC 9114 §6.2: "the transport parameters sent by both clients and servers MUST allow
        // the peer to create at least three unidirectional streams".
        if self.max_concurrent_uni_streams < 3 {
            return Err(ConfigError::invalid(
                "transport.max_concurrent_uni_streams",
                "must be at least 3: HTTP/3 needs the control and two QPACK streams \
                 (RFC 9114 §6.2)",
            ));
        }
        // RFC 9297 §2.1.1 / draft-ietf-webtrans-http3 §3.1: datagrams need a non-zero
        // max_datagram_frame_size, which quinn derives from this buffer.
        if self.datagram_receive_buffer == 0 {
            return Err(ConfigError::invalid(
                "transport.datagram_receive_buffer",
                "must be > 0: WebTransport requires a non-zero max_datagram_frame_size",
            ));
        }
        if self.datagram_send_buffer == 0 {
            return Err(ConfigError::invalid(
                "transport.datagram_send_buffer",
                "must be > 0 or no datagram can be sent",
            ));
        }
        positive(P, "initial_rtt", self.initial_rtt)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Session limits
// ---------------------------------------------------------------------------------------------

/// Caps on what a peer can make the WebTransport layer buffer, and the application-side
/// queues. Every buffer a peer can fill has one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// WebTransport sessions on one connection (advertised as WT_MAX_SESSIONS /
    /// WEBTRANSPORT_MAX_SESSIONS). Default 16: browsers that pool sessions
    /// (`allowPooling`) put several on one connection, and Chromium's own draft-07 mode
    /// advertises 16; the cap keeps one connection's memory bounded. Must be >= 1.
    pub max_sessions: u32,
    /// Streams that name a session not yet established (or not yet accepted by the
    /// application) and are held until it is; beyond this they are reset with
    /// WT_BUFFERED_STREAM_REJECTED. Default 32. 0 refuses every early stream.
    pub max_pending_streams: usize,
    /// Datagrams held for a session not yet established; beyond this they are dropped.
    /// Default 64. 0 drops every early datagram.
    pub max_pending_datagrams: usize,
    /// Accepted incoming streams queued per session until the application takes them.
    /// Default 256 (the default stream concurrency, so QUIC flow control is the limit).
    pub incoming_stream_queue: usize,
    /// Received datagrams queued per session until the application reads them (the oldest are
    /// dropped beyond). Default 1024.
    pub incoming_datagram_queue: usize,
    /// Largest header section we accept, advertised as SETTINGS_MAX_FIELD_SECTION_SIZE
    /// (RFC 9114 §4.2.2). Default 16 KiB, what Chromium sends.
    pub max_field_section_size: u64,
    /// Largest capsule payload buffered on a CONNECT stream. Default 64 KiB (room for a
    /// DATAGRAM capsule of maximal size); must be >= 1028 so a CLOSE_WEBTRANSPORT_SESSION
    /// capsule with a maximal reason fits.
    pub max_capsule_size: u64,
    /// Interop switch: write capsules on the CONNECT stream without the HTTP/3 DATA frame
    /// around them. pywebtransport 0.8.1 expects that and closes the connection with
    /// H3_FRAME_UNEXPECTED on a correctly framed close capsule (docs/protocol.md). Capsules
    /// are accepted in both forms whatever this says. Default false.
    pub unframed_capsules: bool,
}

/// Payload of the largest CLOSE_WEBTRANSPORT_SESSION capsule: a 32-bit code and a reason of at
/// most 1024 bytes (draft-ietf-webtrans-http3 §5 "Session Termination").
const MAX_CLOSE_CAPSULE_PAYLOAD: u64 = 4 + 1024;

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 16,
            max_pending_streams: 32,
            max_pending_datagrams: 64,
            incoming_stream_queue: 256,
            incoming_datagram_queue: 1024,
            max_field_section_size: 16 * KIB,
            max_capsule_size: 64 * KIB,
            unframed_capsules: false,
        }
    }
}

impl SessionLimits {
    /// Checks every field; field paths in the error start with `limits.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::invalid(
                "limits.max_sessions",
                "must be at least 1 (Safari also refuses a server advertising 0)",
            ));
        }
        if self.incoming_stream_queue == 0 {
            return Err(ConfigError::invalid(
                "limits.incoming_stream_queue",
                "must be at least 1: a zero-capacity queue can never deliver a stream",
            ));
        }
        if self.incoming_datagram_queue == 0 {
            return Err(ConfigError::invalid(
                "limits.incoming_datagram_queue",
                "must be at least 1: a zero-capacity queue can never deliver a datagram",
            ));
        }
        if self.max_field_section_size == 0 || self.max_field_section_size > VARINT_MAX {
            return Err(ConfigError::invalid(
                "limits.max_field_section_size",
                "must be between 1 and 2^62 - 1 (it is sent as an HTTP/3 setting)",
            ));
        }
        if self.max_capsule_size < MAX_CLOSE_CAPSULE_PAYLOAD || self.max_capsule_size > VARINT_MAX {
            return Err(ConfigError::invalid(
                "limits.max_capsule_size",
                format!(
                    "must be between {MAX_CLOSE_CAPSULE_PAYLOAD} (a CLOSE_WEBTRANSPORT_SESSION \
                     capsule with a 1024-byte reason) and 2^62 - 1"
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// How a client decides whether to trust the server's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertVerification {
    /// The operating system's trust store (via `rustls-native-certs`; honours `SSL_CERT_FILE`
    /// and `SSL_CERT_DIR`), with the server name checked. The default.
    #[default]
    SystemRoots,
    /// Trust the CA certificates (or self-signed certificates) in this PEM file, with the
    /// server name checked.
    CaFile(PathBuf),
    /// Trust the CA certificates in this PEM text, with the server name checked.
    CaPem(#[serde(with = "pem_text")] Vec<u8>),
    /// Trust exactly the certificates with these SHA-256 hashes, as a browser's
    /// `serverCertificateHashes` does: the certificate must also be ECDSA P-256, X.509v3,
    /// currently valid and valid for at most 14 days. The server name is not checked.
    ServerCertificateHashes(#[serde(with = "hashes_hex")] Vec<[u8; 32]>),
    /// Accept any certificate. The TLS handshake signature is still checked, so the peer
    /// holds the key of the certificate it sent, but anyone can be that peer: use only on
    /// networks you control.
    DangerousNoVerify,
}

/// Where a certificate chain and its private key come from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertificateSource {
    /// PEM files: `cert` holds the chain, leaf first; `key` a PKCS#8, PKCS#1 or SEC1 key.
    Files {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// PEM text in memory.
    Pem {
        /// The certificate chain, leaf first.
        #[serde(with = "pem_text")]
        cert: Vec<u8>,
        /// The private key.
        #[serde(with = "pem_text")]
        key: Vec<u8>,
    },
    /// A fresh ECDSA P-256 certificate valid for just under 14 days, made at startup, that a
    /// browser accepts through `serverCertificateHashes` (see
    /// [`generate_self_signed`](crate::tls::generate_self_signed)). Each name becomes a SAN: an
    /// IP address when it parses as one, a DNS name otherwise.
    SelfSigned {
        /// The subject alternative names.
        names: Vec<String>,
    },
}

impl Default for CertificateSource {
    fn default() -> Self {
        Self::SelfSigned {
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

// Hand-written so a private key given as PEM never ends up in a log line.
impl fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pem { cert, key } => f
                .debug_struct("Pem")
                .field("cert", &format_args!("<{} bytes>", cert.len()))
                .field("key", &format_args!("<redacted, {} bytes>", key.len()))
                .finish(),
            Self::SelfSigned { names } => {
                f.debug_struct("SelfSigned").field("names", names).finish()
            }
        }
    }
}

impl CertificateSource {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match self {
            Self::Files { cert, key } => {
                file_exists(&format!("{field}.files.cert"), cert)?;
                file_exists(&format!("{field}.files.key"), key)
            }
            Self::Pem { cert, key } => {
                if cert.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{field}.pem.cert"),
                        "is empty",
                    ));
                }
                if key.is_empty() {
                    return Err(ConfigError::invalid(format!("{field}.pem.key"), "is empty"));
                }
                Ok(())
            }
            Self::SelfSigned { names } => {
                let field = format!("{field}.self_signed.names");
                if names.is_empty() {
                    return Err(ConfigError::invalid(
                        field,
                        "needs at least one DNS name or IP address",
                    ));
                }
                for name in names {
                    if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                        return Err(ConfigError::invalid(
                            field,
                            format!("{name:?} is neither a DNS name nor an IP address"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Everything a client needs besides the URL.
///
/// Presets:
///
/// | | `default()` | `development()` | `production()` |
/// |---|---|---|---|
/// | verification | system roots | **no verification** | system roots |
/// | idle timeout / keep-alive | 30 s / 10 s | 10 s / 3 s | 60 s / 15 s |
/// | connect timeout | 10 s | 5 s | 10 s |
/// | retries | 3 | 0 | 5 |
///
/// Development notices a dead server within seconds and trusts whatever certificate a local
/// test server makes; production rides out longer network stalls and retries more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// QUIC settings.
    pub transport: TransportConfig,
    /// WebTransport buffer caps.
    pub limits: SessionLimits,
    /// Give up on a connection attempt (QUIC handshake plus WebTransport CONNECT) after this
    /// long. Default 10 s.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,
    /// Wait this long for a graceful close (close capsule delivered, streams finished) before
    /// closing the QUIC connection outright. Default 5 s.
    #[serde(with = "duration_serde")]
    pub close_timeout: Duration,
    /// TLS ALPN protocols offered, in order of preference. Must contain `"h3"`. Default
    /// `["h3"]`.
    pub alpn: Vec<String>,
    /// Extra request headers sent with every CONNECT, in order. Names must be lowercase
    /// (RFC 9114 §4.2) and may not be pseudo-headers or connection-specific.
    pub headers: Vec<(String, String)>,
    /// Sent as `user-agent` unless `headers` already has one; `None` sends none (as browsers
    /// do). Default `webtransport-rs/<version>`. In TOML, `""` means `None`.
    #[serde(with = "opt_string_serde")]
    pub user_agent: Option<String>,
    /// Connection attempts after the first that fail with a retriable error. Default 3.
    pub max_retries: u32,
    /// Delay before the first retry. Default 1 s.
    #[serde(with = "duration_serde")]
    pub retry_delay: Duration,
    /// Each further retry waits this many times longer. Must be >= 1. Default 2.
    pub retry_backoff: f64,
    /// Upper bound of the retry delay. Default 30 s.
    #[serde(with = "duration_serde")]
    pub max_retry_delay: Duration,
    /// How the server certificate is checked. Default [`CertVerification::SystemRoots`].
    pub verification: CertVerification,
    /// Certificate presented when the server asks for one. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateSource>,
    /// Default limit for one stream read to make progress; `None` waits forever (compose
    /// `tokio::time::timeout` for finer control). Default `None`: a long-lived stream may be
    /// quiet for minutes.
    #[serde(with = "opt_duration_serde")]
    pub read_timeout: Option<Duration>,
    /// Default limit for one stream write to make progress (flow control can block writes);
    /// `None` waits forever. Default `None`.
    #[serde(with = "opt_duration_serde")]
    pub write_timeout: Option<Duration>,
    /// Limit for opening a stream, which waits while the peer's stream limit is exhausted.
    /// Default 10 s.
    #[serde(with = "duration_serde")]
    pub stream_creation_timeout: Duration,
    /// Connections a pool or fleet built from this config keeps open at most. Default 100.
    pub max_connections: usize,
}

fn default_user_agent() -> String {
    format!("webtransport-rs/{}", env!("CARGO_PKG_VERSION"))
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            limits: SessionLimits::default(),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            alpn: vec!["h3".into()],
            headers: Vec::new(),
            user_agent: Some(default_user_agent()),
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
            retry_backoff: 2.0,
            max_retry_delay: Duration::from_secs(30),
            verification: CertVerification::SystemRoots,
            client_certificate: None,
            read_timeout: None,
            write_timeout: None,
            stream_creation_timeout: Duration::from_secs(10),
            max_connections: 100,
        }
    }
}

impl ClientConfig {
    /// For talking to a local test server: **no certificate verification**, 10 s idle timeout
    /// with 3 s keep-alive, 5 s connect timeout, no retries. See the table on [`ClientConfig`].
    pub fn development() -> Self {
        let mut c = Self::default();
        c.transport.max_idle_timeout = Duration::from_secs(10);
        c.transport.keep_alive_interval = Some(Duration::from_secs(3));
        c.connect_timeout = Duration::from_secs(5);
        c.max_retries = 0;
        c.verification = CertVerification::DangerousNoVerify;
        c
    }

    /// For real servers: system roots, 60 s idle timeout with 15 s keep-alive, 5 retries. See
    /// the table on [`ClientConfig`].
    pub fn production() -> Self {
        let mut c = Self::default();
        c.transport.max_idle_timeout = Duration::from_secs(60);
        c.transport.keep_alive_interval = Some(Duration::from_secs(15));
        c.max_retries = 5;
        c.verification = CertVerification::SystemRoots;
        c
    }

    /// The delay before retry number `attempt` (0 for the first retry):
    /// `retry_delay * retry_backoff^attempt`, capped at `max_retry_delay`.
    pub fn retry_delay_for(&self, attempt: u32) -> Duration {
        let factor = self
            .retry_backoff
            .max(1.0)
            .powi(attempt.min(i32::MAX as u32) as i32);
        let secs = self.retry_delay.as_secs_f64() * factor;
        match Duration::try_from_secs_f64(secs) {
            Ok(d) => d.min(self.max_retry_delay),
            Err(_) => self.max_retry_delay,
        }
    }

    /// Parses a TOML document (see the [module docs](self) for its form). Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text, None)
    }

    /// Reads and parses a TOML file. Does not validate.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        read_toml(path.as_ref())
    }

    /// Writes the config as TOML; [`from_toml_str`](Self::from_toml_str) reads it back equal.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks every field and names the first bad one by its path (`transport.receive_window`,
    /// `verification.ca_file`, ...). Also checks that the files it names exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        self.limits.validate()?;
        positive("", "connect_timeout", self.connect_timeout)?;
        positive("", "close_timeout", self.close_timeout)?;
        positive("", "stream_creation_timeout", self.stream_creation_timeout)?;
        optional_positive("read_timeout", self.read_timeout)?;
        optional_positive("write_timeout", self.write_timeout)?;
        validate_alpn(&self.alpn)?;
        validate_headers(&self.headers)?;
        if let Some(ua) = &self.user_agent {
            if !valid_field_value(ua) {
                return Err(ConfigError::invalid(
                    "user_agent",
                    "contains CR, LF or NUL, which are not allowed in a field value \
                     (RFC 9110 §5.5)",
                ));
            }
        }
        positive("", "retry_delay", self.retry_delay)?;
        if !(self.retry_backoff.is_finite() && self.retry_backoff >= 1.0) {
            return Err(ConfigError::invalid(
                "retry_backoff",
                format!(
                    "{} must be a finite number >= 1.0 (delays may not shrink)",
                    self.retry_backoff
                ),
            ));
        }
        if self.max_retry_delay < self.retry_delay {
            return Err(ConfigError::invalid(
                "max_retry_delay",
                "is shorter than retry_delay",
            ));
        }
        match &self.verification {
            CertVerification::SystemRoots | CertVerification::DangerousNoVerify => {}
            CertVerification::CaFile(path) => file_exists("verification.ca_file", path)?,
            CertVerification::CaPem(pem) => {
                if pem.is_empty() {
                    return Err(ConfigError::invalid("verification.ca_pem", "is empty"));
                }
            }
            CertVerification::ServerCertificateHashes(hashes) => {
                if hashes.is_empty() {
                    return Err(ConfigError::invalid(
                        "verification.server_certificate_hashes",
                        "is empty, which would reject every server; use system_roots for \
                         ordinary verification",
                    ));
                }
            }
        }
        if let Some(source) = &self.client_certificate {
            source.validate("client_certificate")?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Everything a server needs besides its routes.
///
/// Presets:
///
/// | | `default()` | `development()` | `production(cert)` |
/// |---|---|---|---|
/// | bind | 127.0.0.1:4433 | 127.0.0.1:4433 | \[::\]:443 |
/// | certificate | self-signed for localhost | self-signed for localhost | the one given |
/// | idle timeout / keep-alive | 30 s / 10 s | 10 s / 3 s | 60 s / 15 s |
/// | drain timeout | 10 s | 1 s | 30 s |
///
/// Development restarts fast and notices vanished clients within seconds; production listens
/// on every interface (dual-stack where the OS allows) on the port browsers use by default,
/// lets clients ride out longer stalls, and gives sessions time to finish on shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// QUIC settings.
    pub transport: TransportConfig,
    /// WebTransport buffer caps.
    pub limits: SessionLimits,
    /// UDP addresses to listen on; one endpoint each. Default `127.0.0.1:4433`.
    pub bind: Vec<SocketAddr>,
    /// The server certificate. Default: self-signed for `localhost`, `127.0.0.1` and `::1`.
    pub certificate: CertificateSource,
    /// TLS ALPN protocols accepted. Must contain `"h3"`. Default `["h3"]`.
    pub alpn: Vec<String>,
    /// Connections served at once; more are refused. Default 3000 (pywebtransport's).
    pub max_connections: usize,
    /// Time a new connection has to complete the QUIC handshake and its first WebTransport
    /// CONNECT; a connection that takes longer is closed. Default 10 s.
    #[serde(with = "duration_serde")]
    pub handshake_timeout: Duration,
    /// On graceful shutdown, time sessions get to finish after GOAWAY/DRAIN before their
    /// connections are closed. Zero closes at once. Default 10 s.
    #[serde(with = "duration_serde")]
    pub drain_timeout: Duration,
    /// PEM file of CAs that client certificates must chain to; `None` asks for no client
    /// certificate. Default `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate from `client_ca` (otherwise one is optional).
    /// Default false.
    pub require_client_certificate: bool,
    /// Default limit for one stream read to make progress; `None` waits forever. Default
    /// `None`.
    #[serde(with = "opt_duration_serde")]
    pub read_timeout: Option<Duration>,
    /// Default limit for one stream write to make progress; `None` waits forever. Default
    /// `None`.
    #[serde(with = "opt_duration_serde")]
    pub write_timeout: Option<Duration>,
    /// Limit for opening a stream, which waits while the peer's stream limit is exhausted.
    /// Default 10 s.
    #[serde(with = "duration_serde")]
    pub stream_creation_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            limits: SessionLimits::default(),
            bind: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 4433))],
            certificate: CertificateSource::default(),
            alpn: vec!["h3".into()],
            max_connections: 3000,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            client_ca: None,
            require_client_certificate: false,
            read_timeout: None,
            write_timeout: None,
            stream_creation_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// For local work: self-signed certificate for localhost, 127.0.0.1:4433, 10 s idle
    /// timeout with 3 s keep-alive, 1 s drain. See the table on [`ServerConfig`].
    pub fn development() -> Self {
        let mut c = Self::default();
        c.transport.max_idle_timeout = Duration::from_secs(10);
        c.transport.keep_alive_interval = Some(Duration::from_secs(3));
        c.drain_timeout = Duration::from_secs(1);
        c
    }

    /// For deployment with a real certificate (production needs one, so it is an argument):
    /// `[::]:443`, 60 s idle timeout with 15 s keep-alive, 30 s drain. See the table on
    /// [`ServerConfig`].
    pub fn production(certificate: CertificateSource) -> Self {
        let mut c = Self {
            bind: vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, 443))],
            certificate,
            ..Self::default()
        };
        c.transport.max_idle_timeout = Duration::from_secs(60);
        c.transport.keep_alive_interval = Some(Duration::from_secs(15));
        c.drain_timeout = Duration::from_secs(30);
        c
    }

    /// Parses a TOML document (see the [module docs](self) for its form). Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text, None)
    }

    /// Reads and parses a TOML file. Does not validate.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        read_toml(path.as_ref())
    }

    /// Writes the config as TOML; [`from_toml_str`](Self::from_toml_str) reads it back equal.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Checks every field and names the first bad one by its path (`limits.max_sessions`,
    /// `certificate.files.key`, ...). Also checks that the files it names exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        self.limits.validate()?;
        if self.bind.is_empty() {
            return Err(ConfigError::invalid("bind", "needs at least one address"));
        }
        self.certificate.validate("certificate")?;
        validate_alpn(&self.alpn)?;
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max_connections",
                "must be at least 1",
            ));
        }
        positive("", "handshake_timeout", self.handshake_timeout)?;
        positive("", "stream_creation_timeout", self.stream_creation_timeout)?;
        optional_positive("read_timeout", self.read_timeout)?;
        optional_positive("write_timeout", self.write_timeout)?;
        match &self.client_ca {
            Some(path) => file_exists("client_ca", path)?,
            None if self.require_client_certificate => {
                return Err(ConfigError::invalid(
                    "client_ca",
                    "is required when require_client_certificate is true",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------------

fn path_of(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn positive(prefix: &str, name: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(path_of(prefix, name), "must be > 0"));
    }
    Ok(())
}

fn optional_positive(name: &str, d: Option<Duration>) -> Result<(), ConfigError> {
    if d.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::invalid(
            name,
            "must be > 0; use \"off\" to disable it",
        ));
    }
    Ok(())
}

fn window(prefix: &str, name: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(
            path_of(prefix, name),
            "must be > 0: a zero window lets no data through",
        ));
    }
    if v > VARINT_MAX {
        return Err(ConfigError::invalid(
            path_of(prefix, name),
            "is above 2^62 - 1, the largest QUIC flow-control value (RFC 9000 §16)",
        ));
    }
    Ok(())
}

fn file_exists(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::FileNotFound {
            field: field.to_owned(),
            path: path.to_owned(),
        })
    }
}

fn validate_alpn(alpn: &[String]) -> Result<(), ConfigError> {
    if alpn.is_empty() {
        return Err(ConfigError::invalid(
            "alpn",
            "is empty; WebTransport over HTTP/3 needs \"h3\"",
        ));
    }
    // RFC 7301 §3.1: "Empty strings MUST NOT be included and byte strings MUST NOT be
    // truncated", and each protocol name is 1 to 255 bytes long.
    for (i, p) in alpn.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            return Err(ConfigError::invalid(
                format!("alpn[{i}]"),
                "an ALPN protocol name is 1 to 255 bytes (RFC 7301 §3.1)",
            ));
        }
    }
    // RFC 9114 §3.1: HTTP/3 is negotiated with the "h3" token; without it no browser connects.
    if !alpn.iter().any(|p| p == "h3") {
        return Err(ConfigError::invalid(
            "alpn",
            "must contain \"h3\" (RFC 9114 §3.1); browsers offer nothing else",
        ));
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.5: CR, LF and NUL are never valid in a field value.
fn valid_field_value(v: &str) -> bool {
    !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn validate_headers(headers: &[(String, String)]) -> Result<(), ConfigError> {
    for (i, (name, value)) in headers.iter().enumerate() {
        let field = format!("headers[{i}]");
        if name.starts_with(':') {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is a pseudo-header; the library sets those"),
            ));
        }
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is not a valid field name (RFC 9110 §5.1)"),
            ));
        }
        // RFC 9114 §4.2: "Characters in field names MUST be converted to lowercase prior to
        // their encoding. A request or response containing uppercase characters in field names
        // MUST be treated as malformed."
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} has uppercase letters; HTTP/3 field names are lowercase"),
            ));
        }
        // RFC 9114 §4.2: "An endpoint MUST NOT generate an HTTP/3 field section containing
        // connection-specific fields".
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
        ) {
            return Err(ConfigError::invalid(
                field,
                format!("{name:?} is connection-specific and forbidden in HTTP/3 (RFC 9114 §4.2)"),
            ));
        }
        if !valid_field_value(value) {
            return Err(ConfigError::invalid(
                field,
                format!("value of {name:?} contains CR, LF or NUL (RFC 9110 §5.5)"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TOML
// ---------------------------------------------------------------------------------------------

fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.map(Path::to_owned),
        source: Box::new(e),
    })
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, Some(path))
}

/// Parses a duration written as one number and one unit: `"30s"`, `"250ms"`, `"1.5s"`, `"2m"`,
/// `"1h"`, `"1d"`, `"100us"` (or `"100µs"`), `"500ns"`. Whitespace around the text and between
/// number and unit is allowed. Digits past nanosecond precision are dropped.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit; write e.g. \"{s}s\" or \"{s}ms\""))?;
    let (number, unit) = s.split_at(split);
    let unit_nanos: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ns, us, ms, s, m, h or d"
            ))
        }
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(format!("{text:?} has no number"));
    }
    if frac_part.contains('.') {
        return Err(format!("{text:?} is not a number followed by a unit"));
    }
    let too_long = || format!("{text:?} is too long a duration");
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| too_long())?
    };
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(too_long)?;
    // Each fractional digit is worth a tenth of the one before; stop when below 1 ns.
    let mut place = unit_nanos;
    for digit in frac_part.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos += u128::from(digit - b'0') * place;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Writes a duration in the form [`parse_duration`] reads, in the largest unit that keeps it
/// exact: `"1m"`, `"90s"`, `"250ms"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    const S: u128 = 1_000_000_000;
    if nanos == 0 {
        return "0s".into();
    }
    if nanos % S == 0 {
        let secs = nanos / S;
        return if secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
    }
    if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Visitor shared by the duration (de)serializers: a string with a unit or a number of seconds.
struct DurationVisitor {
    optional: bool,
}

impl<'de> serde::de::Visitor<'de> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\" or \"250ms\", or a number of seconds")?;
        if self.optional {
            f.write_str(", or \"off\"")?;
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.optional && matches!(v.trim(), "off" | "none") {
            return Ok(None);
        }
        parse_duration(v).map(Some).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Duration::from_secs(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(|v| Some(Duration::from_secs(v)))
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Duration::try_from_secs_f64(v)
            .map(Some)
            .map_err(|_| E::custom(format!("{v} is not a valid number of seconds")))
    }
}

mod duration_serde {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor { optional: false })?
            .ok_or_else(|| serde::de::Error::custom("a duration is required here"))
    }
}

mod opt_duration_serde {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_str("off"),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor { optional: true })
    }
}

/// `None` is written as `""` (TOML has no null) and `""` is read as `None`.
mod opt_string_serde {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then_some(s))
    }
}

/// PEM blobs as TOML strings.
mod pem_text {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(v)
            .map_err(|_| serde::ser::Error::custom("PEM data is not UTF-8 text"))?;
        s.serialize_str(text)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// SHA-256 hashes as hex strings (`"ab:cd:.."` or plain hex).
mod hashes_hex {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(crate::tls::sha256_hex))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|h| crate::tls::parse_sha256_hex(h).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> String {
        r.expect_err("validation should fail")
            .field()
            .expect("error names a field")
            .to_owned()
    }

    #[test]
    fn defaults_and_presets_validate() {
        ClientConfig::default().validate().unwrap();
        ClientConfig::development().validate().unwrap();
        ClientConfig::production().validate().unwrap();
        ServerConfig::default().validate().unwrap();
        ServerConfig::development().validate().unwrap();
        let pem = CertificateSource::Pem {
            cert: b"-----BEGIN CERTIFICATE-----".to_vec(),
            key: b"-----BEGIN PRIVATE KEY-----".to_vec(),
        };
        ServerConfig::production(pem).validate().unwrap();
    }

    #[test]
    fn presets_differ_as_documented() {
        let (d, c, p) = (
            ClientConfig::default(),
            ClientConfig::development(),
            ClientConfig::production(),
        );
        assert_eq!(c.verification, CertVerification::DangerousNoVerify);
        assert_eq!(d.verification, CertVerification::SystemRoots);
        assert_eq!(p.verification, CertVerification::SystemRoots);
        assert!(c.transport.max_idle_timeout < d.transport.max_idle_timeout);
        assert!(p.transport.max_idle_timeout > d.transport.max_idle_timeout);
        assert!(p.transport.keep_alive_interval.is_some());
        assert_eq!(c.max_retries, 0);
        assert!(p.max_retries > d.max_retries);

        let (d, c) = (ServerConfig::default(), ServerConfig::development());
        let p = ServerConfig::production(CertificateSource::Files {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        assert!(matches!(
            c.certificate,
            CertificateSource::SelfSigned { .. }
        ));
        assert!(matches!(p.certificate, CertificateSource::Files { .. }));
        assert!(c.bind[0].ip().is_loopback());
        assert!(p.bind[0].ip().is_unspecified());
        assert_eq!(p.bind[0].port(), 443);
        assert!(c.transport.max_idle_timeout < d.transport.max_idle_timeout);
        assert!(p.transport.max_idle_timeout > d.transport.max_idle_timeout);
        assert!(c.drain_timeout < d.drain_timeout && d.drain_timeout < p.drain_timeout);
    }

    #[test]
    fn default_windows_are_large_and_datagrams_on() {
        let t = TransportConfig::default();
        assert!(t.stream_receive_window >= 8 * MIB);
        assert!(t.receive_window >= 16 * MIB);
        assert!(t.max_concurrent_bidi_streams >= 100 && t.max_concurrent_uni_streams >= 100);
        assert!(t.datagram_receive_buffer >= MIB as usize);
        // Builds without panicking, for every controller and with clamping.
        for cc in [
            CongestionController::Cubic,
            CongestionController::NewReno,
            CongestionController::Bbr,
        ] {
            let t = TransportConfig {
                congestion_controller: cc,
                receive_window: u64::MAX,
                max_idle_timeout: Duration::MAX,
                mtu_discovery: false,
                ..TransportConfig::default()
            };
            let _ = t.to_quinn();
        }
    }

    fn client_fails(field: &str, mutate: impl FnOnce(&mut ClientConfig)) {
        let mut c = ClientConfig::default();
        mutate(&mut c);
        assert_eq!(field_of(c.validate()), field, "{c:?}");
    }

    fn server_fails(field: &str, mutate: impl FnOnce(&mut ServerConfig)) {
        let mut c = ServerConfig::default();
        mutate(&mut c);
        assert_eq!(field_of(c.validate()), field, "{c:?}");
    }

    #[test]
    fn each_transport_rule_names_its_field() {
        client_fails("transport.max_idle_timeout", |c| {
            c.transport.max_idle_timeout = Duration::ZERO
        });
        client_fails("transport.max_idle_timeout", |c| {
            c.transport.max_idle_timeout = Duration::from_secs(u64::MAX / 2);
            c.transport.keep_alive_interval = None;
        });
        client_fails("transport.keep_alive_interval", |c| {
            c.transport.keep_alive_interval = Some(Duration::from_secs(30))
        });
        client_fails("transport.keep_alive_interval", |c| {
            c.transport.keep_alive_interval = Some(Duration::ZERO)
        });
        client_fails("transport.stream_receive_window", |c| {
            c.transport.stream_receive_window = 0
        });
        client_fails("transport.receive_window", |c| {
            c.transport.receive_window = 1 << 62
        });
        client_fails("transport.send_window", |c| c.transport.send_window = 0);
        client_fails("transport.max_concurrent_bidi_streams", |c| {
            c.transport.max_concurrent_bidi_streams = 0
        });
        client_fails("transport.max_concurrent_uni_streams", |c| {
            c.transport.max_concurrent_uni_streams = 2
        });
        client_fails("transport.datagram_receive_buffer", |c| {
            c.transport.datagram_receive_buffer = 0
        });
        client_fails("transport.datagram_send_buffer", |c| {
            c.transport.datagram_send_buffer = 0
        });
        client_fails("transport.initial_rtt", |c| {
            c.transport.initial_rtt = Duration::ZERO
        });
        client_fails("limits.max_sessions", |c| c.limits.max_sessions = 0);
        client_fails("limits.incoming_stream_queue", |c| {
            c.limits.incoming_stream_queue = 0
        });
        client_fails("limits.incoming_datagram_queue", |c| {
            c.limits.incoming_datagram_queue = 0
        });
        client_fails("limits.max_field_section_size", |c| {
            c.limits.max_field_section_size = 0
        });
        client_fails("limits.max_capsule_size", |c| {
            c.limits.max_capsule_size = 1000
        });
    }

    #[test]
    fn each_client_rule_names_its_field() {
        client_fails("connect_timeout", |c| c.connect_timeout = Duration::ZERO);
        client_fails("close_timeout", |c| c.close_timeout = Duration::ZERO);
        client_fails("read_timeout", |c| c.read_timeout = Some(Duration::ZERO));
        client_fails("write_timeout", |c| c.write_timeout = Some(Duration::ZERO));
        client_fails("stream_creation_timeout", |c| {
            c.stream_creation_timeout = Duration::ZERO
        });
        client_fails("alpn", |c| c.alpn.clear());
        client_fails("alpn", |c| c.alpn = vec!["h3-29".into()]);
        client_fails("alpn[1]", |c| c.alpn.push(String::new()));
        client_fails("alpn[1]", |c| c.alpn.push("x".repeat(256)));
        let header = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        client_fails("headers[0]", |c| c.headers = vec![header("X-Token", "a")]);
        client_fails("headers[0]", |c| c.headers = vec![header(":path", "/")]);
        client_fails("headers[0]", |c| c.headers = vec![header("bad name", "v")]);
        client_fails("headers[0]", |c| {
            c.headers = vec![header("x-a", "b\r\nx-evil: 1")]
        });
        client_fails("headers[1]", |c| {
            c.headers = vec![header("x-ok", "1"), header("connection", "close")]
        });
        client_fails("user_agent", |c| c.user_agent = Some("a\nb".into()));
        client_fails("retry_delay", |c| c.retry_delay = Duration::ZERO);
        client_fails("retry_backoff", |c| c.retry_backoff = 0.5);
        client_fails("retry_backoff", |c| c.retry_backoff = f64::NAN);
        client_fails("max_retry_delay", |c| {
            c.max_retry_delay = Duration::from_millis(10)
        });
        client_fails("verification.ca_file", |c| {
            c.verification = CertVerification::CaFile("/definitely/not/here.pem".into())
        });
        client_fails("verification.ca_pem", |c| {
            c.verification = CertVerification::CaPem(Vec::new())
        });
        client_fails("verification.server_certificate_hashes", |c| {
            c.verification = CertVerification::ServerCertificateHashes(vec![])
        });
        client_fails("client_certificate.files.cert", |c| {
            c.client_certificate = Some(CertificateSource::Files {
                cert: "/nope/cert.pem".into(),
                key: "/nope/key.pem".into(),
            })
        });
        client_fails("max_connections", |c| c.max_connections = 0);
    }

    #[test]
    fn each_server_rule_names_its_field() {
        let this_file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs"));
        server_fails("bind", |c| c.bind.clear());
        server_fails("certificate.self_signed.names", |c| {
            c.certificate = CertificateSource::SelfSigned { names: vec![] }
        });
        server_fails("certificate.self_signed.names", |c| {
            c.certificate = CertificateSource::SelfSigned {
                names: vec!["not a name!".into()],
            }
        });
        server_fails("certificate.files.key", |c| {
            c.certificate = CertificateSource::Files {
                cert: this_file,
                key: "/nope/key.pem".into(),
            }
        });
        server_fails("certificate.pem.key", |c| {
            c.certificate = CertificateSource::Pem {
                cert: b"x".to_vec(),
                key: vec![],
            }
        });
        server_fails("alpn", |c| c.alpn.clear());
        server_fails("max_connections", |c| c.max_connections = 0);
        server_fails("handshake_timeout", |c| {
            c.handshake_timeout = Duration::ZERO
        });
        server_fails("client_ca", |c| c.require_client_certificate = true);
        server_fails("client_ca", |c| c.client_ca = Some("/nope/ca.pem".into()));
        server_fails("limits.max_sessions", |c| c.limits.max_sessions = 0);
    }

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
    fn toml_round_trip_client() {
        let mut c = ClientConfig::production();
        c.headers = vec![("x-api-key".into(), "k".into()), ("x-b".into(), "2".into())];
        c.user_agent = None;
        c.read_timeout = Some(Duration::from_millis(1500));
        c.transport.keep_alive_interval = None;
        c.transport.congestion_controller = CongestionController::Bbr;
        c.verification = CertVerification::ServerCertificateHashes(vec![[0xab; 32], [1; 32]]);
        c.client_certificate = Some(CertificateSource::Pem {
            cert: b"-----BEGIN CERTIFICATE-----\nAA==\n".to_vec(),
            key: b"-----BEGIN PRIVATE KEY-----\nAA==\n".to_vec(),
        });
        let text = c.to_toml_string().unwrap();
        assert_eq!(ClientConfig::from_toml_str(&text).unwrap(), c, "{text}");

        for v in [
            CertVerification::SystemRoots,
            CertVerification::DangerousNoVerify,
            CertVerification::CaFile("/etc/ca.pem".into()),
            CertVerification::CaPem(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        ] {
            let c = ClientConfig {
                verification: v,
                ..ClientConfig::default()
            };
            let text = c.to_toml_string().unwrap();
            assert_eq!(ClientConfig::from_toml_str(&text).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn toml_round_trip_server() {
        for cert in [
            CertificateSource::default(),
            CertificateSource::Files {
                cert: "cert.pem".into(),
                key: "key.pem".into(),
            },
        ] {
            let mut s = ServerConfig::production(cert);
            s.bind.push("127.0.0.1:4433".parse().unwrap());
            s.client_ca = Some("ca.pem".into());
            s.write_timeout = Some(Duration::from_secs(90));
            let text = s.to_toml_string().unwrap();
            assert_eq!(ServerConfig::from_toml_str(&text).unwrap(), s, "{text}");
        }
        let text = ServerConfig::default().to_toml_string().unwrap();
        assert_eq!(
            ServerConfig::from_toml_str(&text).unwrap(),
            ServerConfig::default()
        );
    }

    #[test]
    fn hand_written_toml() {
        let c = ClientConfig::from_toml_str(
            r#"
            connect_timeout = 2.5
            close_timeout = "750ms"
            user_agent = ""
            headers = [["origin", "https://example.com"]]
            verification = { server_certificate_hashes = [
                "AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89",
            ] }

            [transport]
            max_idle_timeout = "1m"
            keep_alive_interval = "off"
            congestion_controller = "reno"
            stream_receive_window = 1048576

            [limits]
            max_sessions = 4
            "#,
        )
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.close_timeout, Duration::from_millis(750));
        assert_eq!(c.user_agent, None);
        assert_eq!(c.headers[0].0, "origin");
        let CertVerification::ServerCertificateHashes(h) = &c.verification else {
            panic!("{:?}", c.verification)
        };
        assert_eq!(h[0][..4], [0xab, 0xcd, 0xef, 0x01]);
        assert_eq!(c.transport.max_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.transport.keep_alive_interval, None);
        assert_eq!(
            c.transport.congestion_controller,
            CongestionController::NewReno
        );
        assert_eq!(c.transport.stream_receive_window, 1 << 20);
        // Unset keys keep their defaults.
        assert_eq!(
            c.transport.receive_window,
            TransportConfig::default().receive_window
        );
        assert_eq!(c.limits.max_sessions, 4);
        assert_eq!(c.limits.max_pending_streams, 32);
        assert_eq!(c.max_retries, 3);
        c.validate().unwrap();

        let s = ServerConfig::from_toml_str(
            r#"
            bind = ["0.0.0.0:4433", "[::]:4433"]
            drain_timeout = "0s"
            certificate = { files = { cert = "cert.pem", key = "key.pem" } }
            "#,
        )
        .unwrap();
        assert_eq!(s.bind.len(), 2);
        assert_eq!(s.drain_timeout, Duration::ZERO);
        assert_eq!(
            s.certificate,
            CertificateSource::Files {
                cert: "cert.pem".into(),
                key: "key.pem".into()
            }
        );
        let s = ServerConfig::from_toml_str(
            "[certificate.self_signed]\nnames = [\"example.test\", \"10.0.0.1\"]\n",
        )
        .unwrap();
        s.validate().unwrap();
    }

    #[test]
    fn toml_errors() {
        let e = ClientConfig::from_toml_str("conect_timeout = \"1s\"").unwrap_err();
        assert!(e.to_string().contains("conect_timeout"), "{e}");
        let e = ClientConfig::from_toml_str("connect_timeout = \"5 parsecs\"").unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
        let e = ClientConfig::from_toml_str("connect_timeout = -1").unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let e = ServerConfig::from_toml_file("/nope/server.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        let e = ClientConfig::from_toml_str(
            "verification = { server_certificate_hashes = [\"abcd\"] }",
        )
        .unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
    }

    #[test]
    fn toml_file() {
        let path = std::env::temp_dir().join(format!(
            "wt-config-test-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        let s = ServerConfig::development();
        std::fs::write(&path, s.to_toml_string().unwrap()).unwrap();
        let back = ServerConfig::from_toml_file(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.unwrap(), s);
    }

    #[test]
    fn durations_parse_and_format() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            (" 250ms ", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2 m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
            ("0.0000000019s", Duration::from_nanos(1)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "30",
            "s",
            "1.2.3s",
            "-1s",
            "1x",
            "99999999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_secs(90),
            Duration::from_secs(60),
            Duration::from_secs(7200),
            Duration::from_millis(1500),
            Duration::from_micros(3),
            Duration::from_nanos(1_000_000_001),
            Duration::MAX,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn retry_delays_back_off_and_cap() {
        let c = ClientConfig::default();
        assert_eq!(c.retry_delay_for(0), Duration::from_secs(1));
        assert_eq!(c.retry_delay_for(1), Duration::from_secs(2));
        assert_eq!(c.retry_delay_for(3), Duration::from_secs(8));
        assert_eq!(c.retry_delay_for(10), Duration::from_secs(30));
        assert_eq!(c.retry_delay_for(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn pem_key_is_not_debug_printed() {
        let s = CertificateSource::Pem {
            cert: b"CERT".to_vec(),
            key: b"SECRET-KEY-MATERIAL".to_vec(),
        };
        let text = format!("{s:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
