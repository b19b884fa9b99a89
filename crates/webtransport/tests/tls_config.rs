//! The TLS configurations of `webtransport::tls` on real sockets: a quinn server on
//! 127.0.0.1:0 built with `quinn_server_config`, and quinn clients built with
//! `quinn_client_config` under each `CertVerification`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quinn::ConnectionError;
use webtransport::config::{CertVerification, CertificateSource, ClientConfig, ServerConfig};
use webtransport::tls::{
    certificate_sha256, generate_self_signed, quinn_client_config, quinn_server_config,
};

/// A 2048-bit RSA key made with `openssl genpkey` for this test only; it protects nothing.
/// *ring* cannot generate RSA keys, but it can sign with one, which is all rcgen and rustls
/// need to serve a certificate that browsers (and our hash verifier) must refuse.
const TEST_RSA_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDkCp5+d5Km5pBL
mezIXTlCrWOeO7f3e7JK0YZImey04wpds7pGaqQH8e4jjjmRfWG8Qyeg4lWR2Kkr
5dV89dGEKIENIfnCcT13dqZRcZmzZK45FzbTlCbcg1liSui4gmSVKs2eclOihSbM
SpN9jE/ahJZ2pBTXR4yOriC5QhxphSnb3Q6lxUzgOCiKmd7quiSJ3fil807UfMRM
fQErvddTXD1KoYKHlvgCCiQ1Sw0MlAfQaqStfxfpApIqy6iPpuv2jPIedN8y6qpH
O6LN6tWkESSDDrNouA4OOGzmbvcPh8LqcgNdaNGdRQ2SoOkpqXxP6aciEM2Bt6XH
Rh/tTsTrAgMBAAECggEACEtZcQVI8IiQnnPnqJVwB3NmeHfB4YNjIQvR6tT1RtJ1
hllBvF1eUo8V3FE1/kIlgVV6QYSnrmc1AkyY6mpZ7D/LwdmrXfAEfAlQeHsGuZGs
w3CLSa47PwzkkECtQSHtAX7N6ziUv1FlpnADZeXqB1j2FcagVbekyf8whF7HgBAc
3ilk5Qdwx/LrbD5Hm+vUA1Ol+QbFu/xj7+D1iAIEyrRPIULkHQSmUOejr+z1LXIj
I17j2pih8YDhV5fzKKEqryZajgCe1HJoFDVYPTYmPcQI8PKgtePJJTieX2JLxTgm
cVXLPerSIBzUeOY6Ie/BqSFWX+7jR0E7ofVRsa1EkQKBgQDz7TrhLouUPDHfroVZ
AK23TO9sJuZwsWXPYwYmsp0LliGdOxCnu7BiPElDb4CjxQ66jthYDw3oCoXeTQ/2
t4De8ms5f6T5UPpAVPtHwYPqjypItLYLGfcaMLvVta/VD8e0Frwp0KfIN7hb0tdk
OqrOV7Xyy0Jt/imQNjRtJjzbbQKBgQDvVBwBBRrXqrcYIXV4k105z0V92UZCBoJU
Z1PYMNKWZLWA3sZ/Lr7MKZMYPEFZKEvUGwdh2KjaF3Dj7axNadV8ZbBQClOo1Cba
Vq6WXPADfCAKL/gRpynfyBBJnrWHALXA6ccYBgrzax+j+GLcdWeKbw7n2DB+lPWk
D1NHD3lStwKBgHU2VcjHGQNOOZkGv8UY8mDWc2ZA+xLD6+xP5TDLO3PJ3LU1ILe5
FPTfi0UAW4xWsNEsuwD1mvUZuWItHbKsUxzO2H90us2i/93R+D1u2/jmeqcdTyze
eUL4kAoNmESFpK0BD8H4Jeer/scA9ceP+WvV8fSNf4pjS42kvmSEr1GxAoGAAy5D
/QN7Wthq/IgdTo/u0kDd9JE5rND3VHXXGG11rwgBnYfYbYJKiN4YlV7fo3a0o0oE
rBk8DUH4fx7+hjzc2H1lfXrVp83CAm7afScZDYLNzjTbACkPlmjLRp80XGn3AGxa
+AfEh32p+vznG3T3/lABi7VE17nVFewaODyNaTsCgYAoSJEvLhGRK7g83vUVaqyy
0D784fVMh8VuFA2clrzH+ZrfbzVfNFW/IpSLt3lmH8l/2+yvxtUnn6/ZoNBy7s9w
QuuLqklvg3T0zwvXjQrK+inyWa9h+lCjBgrdy+4HF2Bo3K6x+b9+W26i3GhB01DR
fzuYF6Plr/Hr4qHTDKALhQ==
-----END PRIVATE KEY-----
";

struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    hash: Option<[u8; 32]>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

/// Serves `cfg` on an ephemeral loopback port; every connection is held until the peer closes.
fn start_server(mut cfg: ServerConfig) -> Server {
    cfg.bind = vec!["127.0.0.1:0".parse().unwrap()];
    let (server_config, hash) = quinn_server_config(&cfg).expect("server config");
    let endpoint = quinn::Endpoint::server(server_config, cfg.bind[0]).expect("bind");
    let addr = endpoint.local_addr().unwrap();
    let acceptor = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    conn.closed().await;
                }
            });
        }
    });
    Server {
        endpoint,
        addr,
        hash,
    }
}

fn server_with(certificate: CertificateSource) -> Server {
    start_server(ServerConfig {
        certificate,
        ..ServerConfig::default()
    })
}

/// Connects with `cfg` to `server` as `name`. Returns the endpoint too: it must outlive the
/// connection.
async fn connect(
    cfg: &ClientConfig,
    server: &Server,
    name: &str,
) -> (quinn::Endpoint, Result<quinn::Connection, ConnectionError>) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn_client_config(cfg).expect("client config"));
    let connecting = endpoint.connect(server.addr, name).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("handshake neither finished nor failed within 10 s");
    (endpoint, result)
}

fn client(verification: CertVerification) -> ClientConfig {
    ClientConfig {
        verification,
        ..ClientConfig::default()
    }
}

/// The handshake worked: ALPN `h3` and QUIC datagrams are on, as WebTransport needs.
fn assert_usable(conn: &quinn::Connection) {
    let data = conn
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap();
    assert_eq!(data.protocol.as_deref(), Some(&b"h3"[..]));
    assert!(
        conn.max_datagram_size().is_some(),
        "peer did not advertise max_datagram_frame_size"
    );
}

/// The handshake failed locally because our verifier refused the certificate; returns the
/// message for further checks.
fn assert_certificate_refused(result: Result<quinn::Connection, ConnectionError>) -> String {
    let err = result.expect_err("handshake should fail");
    let ConnectionError::TransportError(e) = &err else {
        panic!("expected a local TLS error, got {err:?}");
    };
    let text = e.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
    text
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wt-tls-test-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// A self-signed certificate for localhost with an arbitrary key and validity.
fn custom_certificate(key: rcgen::KeyPair, valid_for: time::Duration) -> CertificateSource {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = params.not_before + valid_for;
    let cert = params.self_signed(&key).unwrap();
    CertificateSource::Pem {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    }
}

fn leaf_hash(source: &CertificateSource) -> [u8; 32] {
    let CertificateSource::Pem { cert, .. } = source else {
        unreachable!()
    };
    let chain = webtransport::tls::certificates_from_pem(cert, "test").unwrap();
    certificate_sha256(&chain[0])
}

#[tokio::test]
async fn pinned_hash_is_accepted() {
    let server = start_server(ServerConfig::default());
    let hash = server
        .hash
        .expect("a self-signed server certificate can be pinned");
    // The server name is not checked with hashes, as in browsers.
    for name in ["localhost", "anything.test"] {
        let cfg = client(CertVerification::ServerCertificateHashes(vec![
            [7; 32], hash,
        ]));
        let (_endpoint, result) = connect(&cfg, &server, name).await;
        assert_usable(&result.expect("handshake with the pinned hash"));
    }
}

#[tokio::test]
async fn wrong_hash_is_refused() {
    let server = start_server(ServerConfig::default());
    let cfg = client(CertVerification::ServerCertificateHashes(vec![[7; 32]]));
    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let text = assert_certificate_refused(result);
    assert!(text.contains("matches none of the 1 pinned"), "{text}");
}

#[tokio::test]
async fn fifteen_day_certificate_is_refused_even_with_its_hash() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let source = custom_certificate(key, time::Duration::days(15));
    let hash = leaf_hash(&source);
    let server = server_with(source);
    assert_eq!(
        server.hash, None,
        "the server must not offer a hash browsers refuse"
    );
    let cfg = client(CertVerification::ServerCertificateHashes(vec![hash]));
    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let text = assert_certificate_refused(result);
    assert!(
        text.contains("15.00 days") && text.contains("at most 14"),
        "{text}"
    );
}

#[tokio::test]
async fn rsa_certificate_is_refused_even_with_its_hash() {
    let key = rcgen::KeyPair::from_pem_and_sign_algo(TEST_RSA_KEY, &rcgen::PKCS_RSA_SHA256)
        .expect("ring signs with RSA keys it cannot generate");
    let source = custom_certificate(key, time::Duration::days(10));
    let hash = leaf_hash(&source);
    let server = server_with(source);
    assert_eq!(server.hash, None);
    let cfg = client(CertVerification::ServerCertificateHashes(vec![hash]));
    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let text = assert_certificate_refused(result);
    assert!(text.contains("key is RSA"), "{text}");

    // The same server is fine for a client that does not pin: RSA itself works in TLS.
    let (_endpoint, result) = connect(
        &client(CertVerification::DangerousNoVerify),
        &server,
        "localhost",
    )
    .await;
    assert_usable(&result.unwrap());
}

#[tokio::test]
async fn ca_file_with_the_self_signed_certificate_is_accepted() {
    let cert = generate_self_signed(&["localhost"]).unwrap();
    let server = server_with(cert.to_certificate_source());
    assert_eq!(server.hash, Some(cert.sha256));
    let ca = temp_file("ca.pem", cert.cert_pem.as_bytes());
    let cfg = client(CertVerification::CaFile(ca.clone()));

    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let accepted = result.map(|conn| assert_usable(&conn));
    // With a CA, the name is checked.
    let (_endpoint, wrong_name) = connect(&cfg, &server, "other.test").await;
    let _ = std::fs::remove_file(&ca);
    accepted.expect("handshake trusting the certificate as CA");
    let text = assert_certificate_refused(wrong_name);
    assert!(text.contains("not valid for name"), "{text}");
}

#[tokio::test]
async fn dangerous_no_verify_is_accepted() {
    let server = start_server(ServerConfig::default());
    let (_endpoint, result) = connect(
        &client(CertVerification::DangerousNoVerify),
        &server,
        "whatever.test",
    )
    .await;
    assert_usable(&result.expect("handshake without verification"));
}

#[tokio::test]
async fn required_client_certificate() {
    let client_cert = generate_self_signed(&["client.test"]).unwrap();
    let ca = temp_file("client-ca.pem", client_cert.cert_pem.as_bytes());
    let server = start_server(ServerConfig {
        client_ca: Some(ca.clone()),
        require_client_certificate: true,
        ..ServerConfig::default()
    });
    let _ = std::fs::remove_file(&ca);

    let mut cfg = client(CertVerification::ServerCertificateHashes(vec![server
        .hash
        .unwrap()]));
    cfg.client_certificate = Some(client_cert.to_certificate_source());
    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let conn = result.expect("handshake with a client certificate");
    assert_usable(&conn);
    // The connection stays up: the server did not reject the certificate after the fact.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), conn.closed())
            .await
            .is_err(),
        "server closed a connection with a valid client certificate"
    );

    // Without one, TLS 1.3 lets the client finish first; the server then closes.
    cfg.client_certificate = None;
    let (_endpoint, result) = connect(&cfg, &server, "localhost").await;
    let err = match result {
        Err(e) => e,
        Ok(conn) => tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("server should close a connection without a client certificate"),
    };
    assert!(err.to_string().contains("certificate"), "{err}");
}
