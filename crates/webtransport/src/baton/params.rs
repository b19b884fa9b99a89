//! [`BatonParams`]: the query parameters of a Devious Baton session (§3.1), and the
//! local settings of this implementation that never go on the wire.

use std::time::Duration;

use super::BatonError;

/// The protocol version this module speaks (§3.2: the draft defines version 0).
pub const VERSION: u64 = 0;

/// The most parallel batons this implementation runs by default (§3.1: a server MUST
/// reject a `count` above what it can send). Each baton is one stream at a time and a few
/// bytes of state; the limit is what a peer's default stream credit comfortably allows.
pub const DEFAULT_MAX_COUNT: u64 = 100;

/// Padding sent on each stream message by default: enough to take a few packets and some
/// flow-control credit, small enough to keep a 256-message session quick.
pub const DEFAULT_PADDING: u64 = 1024;

/// Padding wanted in each datagram by default (cut to what fits, §4.4).
pub const DEFAULT_DATAGRAM_PADDING: u64 = 64;

/// The largest padding length accepted by default. Padding is counted, never stored, so
/// the limit bounds the time and traffic a peer can make a message cost, not memory. A
/// message declaring more is malformed (BRUH).
pub const DEFAULT_MAX_PADDING: u64 = 1 << 20;

/// How long a side waits for the next message by default before giving up with BORED
/// (§4.6), and how long the side that sent the last baton waits for its peer to close.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a query does not give valid parameters. The server answers each with
/// [`QueryError::status`] (§3.1: a 4xx status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A parameter's value is not a decimal integer (digits only, fitting in 64 bits).
    #[error("parameter {name:?} is not a non-negative integer: {value:?}")]
    NotAnInteger {
        /// The parameter.
        name: &'static str,
        /// Its value as sent.
        value: String,
    },
    /// A parameter appears more than once.
    #[error("parameter {0:?} appears more than once")]
    Repeated(&'static str),
    /// `version` is not one this implementation speaks.
    #[error("unsupported version {0} (this side speaks version {VERSION})")]
    UnsupportedVersion(u64),
    /// `baton` is outside 1..=255.
    #[error("baton {0} is outside 1..=255")]
    BatonOutOfRange(u64),
    /// `count` is 0 (it must be positive).
    #[error("count must be positive")]
    ZeroCount,
    /// `count` is more than this side runs.
    #[error("count {count} is over the limit of {max}")]
    CountTooLarge {
        /// The count asked for.
        count: u64,
        /// The limit ([`BatonParams::max_count`]).
        max: u64,
    },
}

impl QueryError {
    /// The HTTP status the server rejects the session with: 400 for each (§3.1 asks for a
    /// 4xx; the request is what is wrong).
    pub fn status(&self) -> u16 {
        400
    }
}

/// The parameters of a Devious Baton session.
///
/// `version`, `count` and `baton` are the query parameters of §3.1; the other fields are
/// settings of this side that the peer never sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatonParams {
    /// The protocol version (`version`; default 0, the only one defined).
    pub version: u64,
    /// How many batons run in parallel (`count`; default 1, at least 1).
    pub count: u64,
    /// The initial value of every baton (`baton`, 1..=255). `None`: the server picks one
    /// at random (§3.1), and the client accepts any value from 1 to 255.
    pub baton: Option<u8>,
    /// Bytes of padding in each stream message this side sends.
    pub padding: u64,
    /// Bytes of padding wanted in each datagram this side sends; cut so the datagram fits.
    pub datagram_padding: u64,
    /// The largest padding length accepted from the peer; above it a message is malformed.
    pub max_padding: u64,
    /// The largest `count` this side runs; a server rejects a query asking for more.
    pub max_count: u64,
    /// How long to wait for the peer's next message before closing with BORED; `None`
    /// waits as long as the session lasts.
    pub idle_timeout: Option<Duration>,
}

impl Default for BatonParams {
    /// The draft's defaults (version 0, one baton, a random initial value) and this
    /// module's defaults for the local settings.
    fn default() -> Self {
        BatonParams {
            version: VERSION,
            count: 1,
            baton: None,
            padding: DEFAULT_PADDING,
            datagram_padding: DEFAULT_DATAGRAM_PADDING,
            max_padding: DEFAULT_MAX_PADDING,
            max_count: DEFAULT_MAX_COUNT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

impl BatonParams {
    /// Parameters from a query string (without the leading `?`), with the defaults of
    /// [`BatonParams::default`] for what it leaves out. See [`BatonParams::with_query`].
    pub fn from_query(query: &str) -> Result<BatonParams, BatonError> {
        BatonParams::default().with_query(query)
    }

    /// These parameters with the query's `version`, `count` and `baton` put in, checked
    /// against §3.1 and against [`BatonParams::max_count`].
    ///
    /// Values are plain decimal integers. Parameters the draft does not define are
    /// ignored; one of its parameters given twice is refused, since which one counts would
    /// be a guess. An empty query is valid (all defaults).
    pub fn with_query(mut self, query: &str) -> Result<BatonParams, BatonError> {
        let (mut version, mut count, mut baton) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, name) = match name {
                "version" => (&mut version, "version"),
                "count" => (&mut count, "count"),
                "baton" => (&mut baton, "baton"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(QueryError::Repeated(name).into());
            }
            *slot = Some(integer(name, value)?);
        }
        // §3.1: "If the version is invalid or the server does not support the specified
        // version, it MUST reject the WebTransport session with a 4xx status code."
        if let Some(v) = version {
            if v != VERSION {
                return Err(QueryError::UnsupportedVersion(v).into());
            }
            self.version = v;
        }
        // §3.1: "If the baton value is invalid, the server MUST reject the WebTransport
        // session with a 4xx status code."
        if let Some(b) = baton {
            match u8::try_from(b) {
                Ok(b) if b != 0 => self.baton = Some(b),
                _ => return Err(QueryError::BatonOutOfRange(b).into()),
            }
        }
        // §3.1: "If the client asks for more batons than the server is capable of sending,
        // the server MUST reject the WebTransport session with a 4xx status code."
        if let Some(c) = count {
            if c == 0 {
                return Err(QueryError::ZeroCount.into());
            }
            if c > self.max_count {
                return Err(QueryError::CountTooLarge {
                    count: c,
                    max: self.max_count,
                }
                .into());
            }
            self.count = c;
        }
        Ok(self)
    }

    /// The query string for these parameters (without `?`): `version` and `count` always,
    /// `baton` when set.
    pub fn to_query(&self) -> String {
        let mut q = format!("version={}&count={}", self.version, self.count);
        if let Some(b) = self.baton {
            q.push_str(&format!("&baton={b}"));
        }
        q
    }

    /// The path and query a client requests: [`PATH`](super::PATH)`?`[`to_query`](Self::to_query).
    pub fn to_path(&self) -> String {
        format!("{}?{}", super::PATH, self.to_query())
    }
}

/// The query of a request path if its path part is [`PATH`](super::PATH) (`Some("")`
/// when it has no query); `None` for any other path.
pub fn query_of(path: &str) -> Option<&str> {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    (p == super::PATH).then_some(q)
}

/// A decimal integer: ASCII digits only (no sign, no spaces), fitting in a `u64`.
fn integer(name: &'static str, value: &str) -> Result<u64, QueryError> {
    let bad = || QueryError::NotAnInteger {
        name,
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_err(q: &str) -> QueryError {
        match BatonParams::from_query(q) {
            Err(BatonError::Query(e)) => e,
            other => panic!("{q:?}: {other:?}"),
        }
    }

    #[test]
    fn empty_query_gives_the_drafts_defaults() {
        let p = BatonParams::from_query("").unwrap();
        assert_eq!(p, BatonParams::default());
        assert_eq!((p.version, p.count, p.baton), (0, 1, None));
    }

    #[test]
    fn all_parameters_are_read() {
        let p = BatonParams::from_query("version=0&count=7&baton=250").unwrap();
        assert_eq!((p.version, p.count, p.baton), (0, 7, Some(250)));
        // Order does not matter; unknown parameters and empty pieces are ignored.
        let q = BatonParams::from_query("&baton=250&x=1&&count=7&color=blue&version=0").unwrap();
        assert_eq!(p, q);
        // Leading zeros are still decimal.
        assert_eq!(BatonParams::from_query("baton=007").unwrap().baton, Some(7));
    }

    #[test]
    fn round_trips() {
        for (count, baton) in [(1, None), (1, Some(1)), (3, Some(255)), (100, Some(128))] {
            let p = BatonParams {
                count,
                baton,
                ..BatonParams::default()
            };
            assert_eq!(BatonParams::from_query(&p.to_query()).unwrap(), p);
        }
        assert_eq!(BatonParams::default().to_query(), "version=0&count=1");
        assert_eq!(
            BatonParams::default().to_path(),
            "/webtransport/devious-baton?version=0&count=1"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert_eq!(query_err("version=1"), QueryError::UnsupportedVersion(1));
        assert_eq!(query_err("baton=0"), QueryError::BatonOutOfRange(0));
        assert_eq!(query_err("baton=256"), QueryError::BatonOutOfRange(256));
        assert_eq!(query_err("count=0"), QueryError::ZeroCount);
        assert_eq!(
            query_err("count=101"),
            QueryError::CountTooLarge {
                count: 101,
                max: DEFAULT_MAX_COUNT
            }
        );
        // The limit is a setting of this side.
        let small = BatonParams {
            max_count: 2,
            ..BatonParams::default()
        };
        assert!(small.clone().with_query("count=2").is_ok());
        assert!(matches!(
            small.with_query("count=3"),
            Err(BatonError::Query(QueryError::CountTooLarge {
                count: 3,
                max: 2
            }))
        ));
    }

    #[test]
    fn malformed_values_are_refused() {
        for q in [
            "count=",
            "count",
            "count=abc",
            "count=+1",
            "count=-1",
            "count= 1",
            "count=1.0",
            "count=0x10",
            "baton=%31",
            "version=18446744073709551616",
        ] {
            let e = query_err(q);
            assert!(matches!(e, QueryError::NotAnInteger { .. }), "{q}: {e:?}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        assert_eq!(query_err("baton=1&baton=2"), QueryError::Repeated("baton"));
        assert_eq!(query_err("count=1&count=1"), QueryError::Repeated("count"));
    }

    #[test]
    fn every_query_error_maps_to_a_4xx() {
        let e = BatonParams::from_query("version=9").unwrap_err();
        assert_eq!(e.http_status(), Some(400));
        assert_eq!(e.session_code(), None);
    }

    #[test]
    fn paths_are_matched_without_their_query() {
        assert_eq!(query_of("/webtransport/devious-baton"), Some(""));
        assert_eq!(
            query_of("/webtransport/devious-baton?count=2"),
            Some("count=2")
        );
        assert_eq!(query_of("/webtransport/devious-baton/x?count=2"), None);
        assert_eq!(query_of("/echo?count=2"), None);
    }
}
