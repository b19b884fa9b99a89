//! Output helpers shared by the subcommands: JSON lines, warnings, errors, and the bits of
//! text (dates, JavaScript snippets) more than one command prints.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A JSON object with its keys in the order given (serde_json's own maps sort them, and
/// the first key tells a reader what kind of line it is).
pub fn json_object(fields: &[(&str, serde_json::Value)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(*key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// Prints one JSON object as a line on stdout and flushes, so a program reading the pipe
/// sees each event as it happens. A closed stdout is ignored: the reader went away.
pub fn json_line(fields: &[(&str, serde_json::Value)]) {
    line(json_object(fields));
}

/// Prints one line for a person on stdout and flushes.
pub fn line(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// A warning on stderr, in the same one-line form as errors.
pub fn warn(text: impl std::fmt::Display) {
    eprintln!("wt: warning: {text}");
}

/// The error line every failing command ends with. `{:#}` joins anyhow's context chain
/// with ": " on one line.
pub fn error(e: &anyhow::Error) {
    eprintln!("wt: error: {e:#}");
}

/// Milliseconds with one decimal, for JSON and tables.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// JavaScript that turns the hex hash into the `Uint8Array` that
/// `serverCertificateHashes` wants.
pub fn js_hash_bytes(hash_hex: &str) -> String {
    format!("Uint8Array.from(\"{hash_hex}\".match(/../g), (b) => parseInt(b, 16))")
}

/// A browser console snippet that opens `url` pinning the certificate by hash.
pub fn js_snippet(url: &str, hash_hex: &str) -> String {
    format!(
        "const transport = new WebTransport(\"{url}\", {{\n  \
           serverCertificateHashes: [{{ algorithm: \"sha-256\", value: {} }}],\n\
         }});\n\
         await transport.ready;\n\
         const {{ readable, writable }} = await transport.createBidirectionalStream();\n\
         const writer = writable.getWriter();\n\
         await writer.write(new TextEncoder().encode(\"hello\"));\n\
         await writer.close();\n\
         console.log(new TextDecoder().decode((await readable.getReader().read()).value));",
        js_hash_bytes(hash_hex)
    )
}

/// `2026-05-01 12:00 UTC`, without a date library.
pub fn utc_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Days to civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// `13 days 23 hours` and the like, for certificate lifetimes.
pub fn days_hours(d: Duration) -> String {
    let hours = d.as_secs() / 3600;
    match (hours / 24, hours % 24) {
        (0, h) => format!("{h} hours"),
        (days, 0) => format!("{days} days"),
        (days, h) => format!("{days} days {h} hours"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_keep_their_order() {
        let text = json_object(&[
            ("event", "listening".into()),
            ("addrs", serde_json::json!(["127.0.0.1:1"])),
            ("a\"b", serde_json::Value::Null),
        ]);
        assert_eq!(
            text,
            r#"{"event":"listening","addrs":["127.0.0.1:1"],"a\"b":null}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["event"], "listening");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3600 + 120); // 2000-02-29
        assert_eq!(utc_date(t), "2000-02-29 01:02 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // 2025-12-31 23:59:59
        assert_eq!(utc_date(t), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn durations() {
        assert_eq!(
            days_hours(Duration::from_secs(14 * 86_400 - 3600)),
            "13 days 23 hours"
        );
        assert_eq!(days_hours(Duration::from_secs(2 * 86_400)), "2 days");
        assert_eq!(days_hours(Duration::from_secs(7200)), "2 hours");
        assert_eq!(millis(Duration::from_micros(1234)), 1.2);
    }
}
