//! [`ServerConfig`]: everything a server needs besides its routes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use webtransport_proto::settings::WtDrafts;

use super::serde_util::{drafts_serde, duration_serde, opt_duration_serde, parse_toml, read_toml};
use super::validate::{file_exists, optional_positive, positive, validate_alpn, validate_drafts};
use super::{CertificateSource, ConfigError, SessionLimits, TransportConfig};

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
    /// UDP addresses to listen on; one endpoint each. Default `127.0.0.1:4433`. An IPv6
    /// address whose port is also listed for IPv4 is bound IPv6-only, so
    /// `0.0.0.0:4433` with `[::]:4433` works; `[::]` alone keeps the system's default
    /// (dual-stack on Linux).
    pub bind: Vec<SocketAddr>,
    /// The server certificate. Default: self-signed for `localhost`, `127.0.0.1` and `::1`.
    pub certificate: CertificateSource,
    /// TLS ALPN protocols accepted. Must contain `"h3"`. Default `["h3"]`.
    pub alpn: Vec<String>,
    /// The WebTransport drafts offered, in TOML a list of names (`["draft-15",
    /// "draft-17"]`). Their SETTINGS go out, and the draft spoken is the newest both sides
    /// offer (draft-ietf-webtrans-http3-17 §7.1). Known: `draft-02` (what browsers ship),
    /// `draft-07` (07..12), `draft-13` (13/14), `draft-15` (15/16, also written
    /// `draft-16`) and `draft-17` (SETTINGS_WT_ENABLED 0x20b8933b, see docs/interop.md).
    /// Default: all of them. Must not be empty.
    #[serde(with = "drafts_serde")]
    pub drafts: WtDrafts,
    /// Connections served at once; more are refused. Default 3000 (pywebtransport's).
    pub max_connections: usize,
    /// Time a new connection has to complete the QUIC handshake and its first WebTransport
    /// CONNECT; a connection that takes longer is closed (after the QUIC handshake: with
    /// H3_NO_ERROR, reason "no session request within the handshake timeout"). Default 10 s.
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
    /// Close a connection (gracefully, reason `idle timeout`) after this long without
    /// WebTransport activity: no session opened, no stream or datagram traffic, no
    /// `Connection::record_activity`. QUIC keep-alives do not count, so this catches a
    /// client that keeps its connection up but does nothing (pywebtransport's
    /// `connection_idle_timeout`); `transport.max_idle_timeout` catches one that went
    /// silent. Default `None` (off).
    #[serde(with = "opt_duration_serde")]
    pub connection_idle_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            limits: SessionLimits::default(),
            bind: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 4433))],
            certificate: CertificateSource::default(),
            alpn: vec!["h3".into()],
            drafts: WtDrafts::ALL,
            max_connections: 3000,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            client_ca: None,
            require_client_certificate: false,
            read_timeout: None,
            write_timeout: None,
            stream_creation_timeout: Duration::from_secs(10),
            connection_idle_timeout: None,
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
        validate_drafts(self.drafts)?;
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max_connections",
                "must be at least 1",
            ));
        }
        positive("", "handshake_timeout", self.handshake_timeout)?;
        positive("", "stream_creation_timeout", self.stream_creation_timeout)?;
        optional_positive("connection_idle_timeout", self.connection_idle_timeout)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::server_fails;

    #[test]
    fn defaults_and_presets_validate() {
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
    fn each_server_rule_names_its_field() {
        let this_file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/server.rs"));
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
}
