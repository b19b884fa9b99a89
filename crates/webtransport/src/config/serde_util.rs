//! The TOML forms of the [module docs](super): durations with units, `"off"` for optional
//! durations, `""` for no user agent, PEM text, hashes as hex; and reading TOML text or files.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

pub(super) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.map(Path::to_owned),
        source: Box::new(e),
    })
}

pub(super) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
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

pub(crate) mod duration_serde {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor { optional: false })?
            .ok_or_else(|| serde::de::Error::custom("a duration is required here"))
    }
}

pub(crate) mod opt_duration_serde {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_str("off"),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor { optional: true })
    }
}

/// A set of WebTransport drafts as a list of names: `["draft-15", "draft-17"]` (`"16"` or
/// `"draft-16"` name the draft-15/16 family, see `WtDraft::from_name`).
pub(super) mod drafts_serde {
    use serde::ser::SerializeSeq;
    use webtransport_proto::settings::{WtDraft, WtDrafts};

    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(v: &WtDrafts, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for d in v.iter() {
            seq.serialize_element(d.name())?;
        }
        seq.end()
    }

    pub(in crate::config) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<WtDrafts, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| n.parse::<WtDraft>().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// `None` is written as `""` (TOML has no null) and `""` is read as `None`.
pub(super) mod opt_string_serde {
    use super::*;

    pub(crate) fn serialize<S: serde::Serializer>(
        v: &Option<String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_deref().unwrap_or(""))
    }

    pub(in crate::config) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then_some(s))
    }
}

/// PEM blobs as TOML strings.
pub(super) mod pem_text {
    use super::*;

    pub(in crate::config) fn serialize<S: serde::Serializer>(
        v: &[u8],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(v)
            .map_err(|_| serde::ser::Error::custom("PEM data is not UTF-8 text"))?;
        s.serialize_str(text)
    }

    pub(in crate::config) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// SHA-256 hashes as hex strings (`"ab:cd:.."` or plain hex).
pub(super) mod hashes_hex {
    use super::*;
    use crate::config::hex::{parse_sha256_hex, sha256_hex};

    pub(in crate::config) fn serialize<S: serde::Serializer>(
        v: &[[u8; 32]],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(sha256_hex))
    }

    pub(in crate::config) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|h| {
                parse_sha256_hex(h).map_err(|e| {
                    serde::de::Error::custom(format_args!("invalid SHA-256 hash {h:?}: {e}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, ServerConfig};

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
        assert!(
            e.to_string()
                .contains("invalid SHA-256 hash \"abcd\": expected 32 bytes"),
            "{e}"
        );
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
}
