//! `wt cert`: writes a self-signed certificate and key that browsers accept through
//! `serverCertificateHashes`, and prints the hash to pin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Args;
use webtransport::tls;

use crate::output;

pub const LONG_ABOUT: &str = "\
Write a self-signed certificate (cert.pem) and its private key (key.pem) that browsers accept
without any certificate authority, and print the SHA-256 hash of the certificate.

The certificate is what browsers require for hash pinning: ECDSA P-256, X.509 v3, valid from
now for just under 14 days. A page then trusts it by passing the hash to
`new WebTransport(url, {serverCertificateHashes: [{algorithm: \"sha-256\", value: ...}]})`;
`wt connect --cert-hash` does the same. Make a new one when it expires.";

pub const AFTER_HELP: &str = "\
Examples:
  wt cert --out ./certs
  wt cert --out ./certs --name example.test --name 192.0.2.7
  wt serve --cert certs/cert.pem --key certs/key.pem";

/// Names used when none are given: what a local browser or `wt connect` dials.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory to write cert.pem and key.pem into (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// A DNS name or IP address the certificate is for; repeat for several
    /// [default: localhost, 127.0.0.1, ::1]
    #[arg(long = "name", value_name = "NAME", value_parser = parse_name)]
    names: Vec<String>,

    /// Replace cert.pem and key.pem if they already exist
    #[arg(long)]
    force: bool,

    /// Print one JSON object (paths, hash, validity) instead of text
    #[arg(long)]
    json: bool,
}

fn parse_name(text: &str) -> Result<String, String> {
    match rustls_pki_types::ServerName::try_from(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err(format!(
            "{text:?} is neither a DNS name (such as example.test) nor an IP address"
        )),
    }
}

pub fn run(args: CertArgs) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = if args.names.is_empty() {
        DEFAULT_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.names.clone()
    };
    let cert = tls::generate_self_signed(&names).context("cannot generate the certificate")?;

    let cert_path = args.out.join("cert.pem");
    let key_path = args.out.join("key.pem");
    if !args.force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                bail!(
                    "{} already exists (pass --force to replace it)",
                    path.display()
                );
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create directory {}", args.out.display()))?;
    write_file(&cert_path, cert.cert_pem.as_bytes(), false)?;
    write_file(&key_path, cert.key_pem.as_bytes(), true)?;

    let hash = cert.sha256_hex();
    let spki =
        tls::spki_sha256_base64(&cert.cert_der).context("cannot read back the certificate")?;
    let lifetime = cert
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();

    if args.json {
        output::json_line(&[
            ("cert", cert_path.display().to_string().into()),
            ("key", key_path.display().to_string().into()),
            ("cert_sha256", hash.into()),
            ("spki_sha256_base64", spki.into()),
            ("names", names.into()),
            ("not_after", output::utc_date(cert.not_after).into()),
        ]);
        return Ok(ExitCode::SUCCESS);
    }

    let url = "https://127.0.0.1:4433/echo";
    output::line(format!(
        "Wrote {} and {} (the key is private: keep it out of version control).\n\
         \n\
         Certificate: self-signed ECDSA P-256 for {}, valid until {} ({} from now).\n\
         \n\
         SHA-256 of the certificate (what a client pins):\n\
         \x20 {hash}\n\
         \n\
         Use it:\n\
         \x20 server:   wt serve --cert {} --key {}\n\
         \x20 client:   wt connect {url} --cert-hash {hash}\n\
         \x20 browser:  new WebTransport(\"{url}\", {{ serverCertificateHashes:\n\
         \x20             [{{ algorithm: \"sha-256\", value: {} }}] }})\n\
         \x20 Chromium without pinning in the page: start it with\n\
         \x20           --ignore-certificate-errors-spki-list={spki} --origin-to-force-quic-on=127.0.0.1:4433",
        cert_path.display(),
        key_path.display(),
        names.join(", "),
        output::utc_date(cert.not_after),
        output::days_hours(lifetime),
        cert_path.display(),
        key_path.display(),
        output::js_hash_bytes(&hash),
    ));
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only to a new file; a replaced key file gets narrowed too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    file.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}
