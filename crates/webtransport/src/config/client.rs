//! [`ClientConfig`]: everything a client needs besides the URL.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use webtransport_proto::settings::WtDrafts;

use super::serde_util::{
    drafts_serde, duration_serde, opt_duration_serde, opt_string_serde, parse_toml, read_toml,
};
use super::validate::{
    file_exists, optional_positive, positive, valid_field_value, validate_alpn, validate_drafts,
    validate_headers,
};
use super::{CertVerification, CertificateSource, ConfigError, SessionLimits, TransportConfig};

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
    /// The WebTransport drafts offered, in TOML a list of names (`["draft-15",
    /// "draft-17"]`). Their SETTINGS go out, and the draft spoken is the newest both sides
    /// offer (draft-ietf-webtrans-http3-17 §7.1). Known: `draft-02` (what browsers ship),
    /// `draft-07` (07..12), `draft-13` (13/14), `draft-15` (15/16, also written
    /// `draft-16`) and `draft-17` (SETTINGS_WT_ENABLED 0x20b8933b, see docs/interop.md).
    /// Default: all of them. Must not be empty.
    #[serde(with = "drafts_serde")]
    pub drafts: WtDrafts,
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
    /// Resume TLS sessions (RFC 8446 §2.2) with servers reached before through the same
    /// TLS state: the server then sends no certificate and no signature, and the client
    /// checks none. Connections made by one [`Client`](crate::Client) share that state, and
    /// so do those of a pool, load balancer or reconnecting client built on one config.
    /// Never 0-RTT: a WebTransport session may not be requested in early data
    /// (draft-ietf-webtrans-http3 §3.2). `false` makes every handshake a full one (and
    /// connections unlinkable by their tickets). Default `true`.
    pub tls_resumption: bool,
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
            drafts: WtDrafts::ALL,
            headers: Vec::new(),
            user_agent: Some(default_user_agent()),
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
            retry_backoff: 2.0,
            max_retry_delay: Duration::from_secs(30),
            verification: CertVerification::SystemRoots,
            client_certificate: None,
            tls_resumption: true,
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

    /// Parses a TOML document (see the [module docs](crate::config) for its form). Does not validate.
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
        validate_drafts(self.drafts)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::client_fails;
    use crate::config::CongestionController;

    #[test]
    fn defaults_and_presets_validate() {
        ClientConfig::default().validate().unwrap();
        ClientConfig::development().validate().unwrap();
        ClientConfig::production().validate().unwrap();
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
}
