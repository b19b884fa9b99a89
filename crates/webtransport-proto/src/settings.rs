//! HTTP/3 SETTINGS (RFC 9114 §7.2.4) and the WebTransport draft they announce.

use bytes::BufMut;

use crate::error::{is_grease_id, Code};
use crate::varint;

/// Setting identifiers this crate knows.
pub mod id {
    /// QPACK_MAX_TABLE_CAPACITY (RFC 9204 §5).
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
    /// MAX_FIELD_SECTION_SIZE (RFC 9114 §7.2.4.1).
    pub const MAX_FIELD_SECTION_SIZE: u64 = 0x06;
    /// QPACK_BLOCKED_STREAMS (RFC 9204 §5).
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x07;
    /// ENABLE_CONNECT_PROTOCOL (RFC 9220 §3).
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x08;
    /// H3_DATAGRAM (RFC 9297 §2.1.1).
    pub const H3_DATAGRAM: u64 = 0x33;
    /// H3_DATAGRAM of draft-ietf-masque-h3-datagram-04, still sent by browsers.
    pub const H3_DATAGRAM_DRAFT04: u64 = 0xffd277;
    /// ENABLE_WEBTRANSPORT (draft-02).
    pub const ENABLE_WEBTRANSPORT: u64 = 0x2b603742;
    /// WEBTRANSPORT_MAX_SESSIONS (draft-07 to draft-12).
    pub const WEBTRANSPORT_MAX_SESSIONS_DRAFT07: u64 = 0xc671706a;
    /// WT_MAX_SESSIONS (draft-13/14).
    pub const WT_MAX_SESSIONS: u64 = 0x14e9cd29;
    /// WT_ENABLED (draft-15/16).
    pub const WT_ENABLED: u64 = 0x2c7cf000;
    /// WT_ENABLED (draft-17): the same setting under the codepoint draft-17 gives it
    /// (draft-ietf-webtrans-http3-17 §9.2; source in docs/interop.md, "draft-17").
    pub const WT_ENABLED_DRAFT17: u64 = 0x20b8933b;
    /// WT_INITIAL_MAX_DATA (draft-12+).
    pub const WT_INITIAL_MAX_DATA: u64 = 0x2b61;
    /// WT_INITIAL_MAX_STREAMS_UNI (draft-12+).
    pub const WT_INITIAL_MAX_STREAMS_UNI: u64 = 0x2b64;
    /// WT_INITIAL_MAX_STREAMS_BIDI (draft-12+).
    pub const WT_INITIAL_MAX_STREAMS_BIDI: u64 = 0x2b65;

    /// Identifiers that were HTTP/2 settings and must not appear (RFC 9114 §7.2.4.1,
    /// §11.2.2): 0x00 and 0x02-0x05.
    pub const fn is_http2_only(id: u64) -> bool {
        matches!(id, 0x00 | 0x02 | 0x03 | 0x04 | 0x05)
    }

    /// A readable name for a known identifier.
    pub fn name(id: u64) -> Option<&'static str> {
        Some(match id {
            QPACK_MAX_TABLE_CAPACITY => "QPACK_MAX_TABLE_CAPACITY",
            MAX_FIELD_SECTION_SIZE => "MAX_FIELD_SECTION_SIZE",
            QPACK_BLOCKED_STREAMS => "QPACK_BLOCKED_STREAMS",
            ENABLE_CONNECT_PROTOCOL => "ENABLE_CONNECT_PROTOCOL",
            H3_DATAGRAM => "H3_DATAGRAM",
            H3_DATAGRAM_DRAFT04 => "H3_DATAGRAM_DRAFT04",
            ENABLE_WEBTRANSPORT => "ENABLE_WEBTRANSPORT",
            WEBTRANSPORT_MAX_SESSIONS_DRAFT07 => "WEBTRANSPORT_MAX_SESSIONS",
            WT_MAX_SESSIONS => "WT_MAX_SESSIONS",
            WT_ENABLED => "WT_ENABLED",
            WT_ENABLED_DRAFT17 => "WT_ENABLED_DRAFT17",
            WT_INITIAL_MAX_DATA => "WT_INITIAL_MAX_DATA",
            WT_INITIAL_MAX_STREAMS_UNI => "WT_INITIAL_MAX_STREAMS_UNI",
            WT_INITIAL_MAX_STREAMS_BIDI => "WT_INITIAL_MAX_STREAMS_BIDI",
            _ => return None,
        })
    }
}

/// Why a SETTINGS frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The payload ended inside an identifier or value.
    #[error("SETTINGS payload truncated")]
    Truncated,
    /// The same identifier appeared twice.
    #[error("duplicate setting {0:#x}")]
    Duplicate(u64),
    /// An HTTP/2 setting identifier.
    #[error("HTTP/2 setting {0:#x} is not allowed in HTTP/3")]
    Http2Setting(u64),
    /// A boolean setting with a value other than 0 or 1.
    #[error("setting {id:#x} must be 0 or 1, got {value}")]
    NotBoolean {
        /// Identifier.
        id: u64,
        /// Value received.
        value: u64,
    },
}

impl SettingsError {
    /// The connection error code for this failure.
    pub fn code(&self) -> Code {
        match self {
            // RFC 9114 §7.1: a frame payload that ends inside a field is H3_FRAME_ERROR.
            SettingsError::Truncated => Code::H3_FRAME_ERROR,
            _ => Code::H3_SETTINGS_ERROR,
        }
    }
}

/// The settings of one endpoint, in the order they were sent; GREASE entries are dropped
/// on decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The entries as the wire has them (id and value, each a minimal varint), in
    /// order: a connection keeps its peer's for its life, and this takes about a third
    /// of the room of `(u64, u64)` pairs.
    wire: Vec<u8>,
}

/// The WebTransport draft family announced in SETTINGS, oldest first so that `Ord` picks
/// the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WtDraft {
    /// draft-02: `ENABLE_WEBTRANSPORT = 1` (what browsers ship).
    Draft02,
    /// draft-07..12: `WEBTRANSPORT_MAX_SESSIONS > 0`.
    Draft07,
    /// draft-13/14: `WT_MAX_SESSIONS > 0`.
    Draft13,
    /// draft-15/16: `WT_ENABLED (0x2c7cf000) = 1`; upgrade token `webtransport-h3`.
    Draft15,
    /// draft-17: `WT_ENABLED (0x20b8933b) = 1`; wire formats and upgrade token as
    /// draft-15/16.
    Draft17,
}

impl WtDraft {
    /// Every draft family, oldest first.
    pub const ALL: [WtDraft; 5] = [
        WtDraft::Draft02,
        WtDraft::Draft07,
        WtDraft::Draft13,
        WtDraft::Draft15,
        WtDraft::Draft17,
    ];

    /// A short name for logs (and the form configuration files use).
    pub fn name(self) -> &'static str {
        match self {
            WtDraft::Draft02 => "draft-02",
            WtDraft::Draft07 => "draft-07",
            WtDraft::Draft13 => "draft-13",
            WtDraft::Draft15 => "draft-15",
            WtDraft::Draft17 => "draft-17",
        }
    }

    /// The draft family a name stands for: `draft-NN` or `NN`, where NN is any draft
    /// of the family (`draft-16` is [`WtDraft::Draft15`], `draft-12` is
    /// [`WtDraft::Draft07`]).
    pub fn from_name(name: &str) -> Option<WtDraft> {
        let n = name.strip_prefix("draft-").unwrap_or(name);
        Some(match n {
            "02" => WtDraft::Draft02,
            "07" | "08" | "09" | "10" | "11" | "12" => WtDraft::Draft07,
            "13" | "14" => WtDraft::Draft13,
            "15" | "16" => WtDraft::Draft15,
            "17" => WtDraft::Draft17,
            _ => return None,
        })
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for WtDraft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name [`WtDraft::from_name`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown WebTransport draft {0:?} (known: draft-02, draft-07, draft-13, draft-15, draft-17)"
)]
pub struct UnknownDraft(pub String);

impl std::str::FromStr for WtDraft {
    type Err = UnknownDraft;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WtDraft::from_name(s).ok_or_else(|| UnknownDraft(s.to_owned()))
    }
}

/// A set of draft families: the ones an endpoint offers, or the ones a peer's SETTINGS
/// announce.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WtDrafts(u8);

impl WtDrafts {
    /// No draft.
    pub const NONE: WtDrafts = WtDrafts(0);
    /// Every draft this crate speaks (what an endpoint offers unless told otherwise).
    pub const ALL: WtDrafts = WtDrafts(
        WtDraft::Draft02.bit()
            | WtDraft::Draft07.bit()
            | WtDraft::Draft13.bit()
            | WtDraft::Draft15.bit()
            | WtDraft::Draft17.bit(),
    );

    /// The set holding `draft` alone.
    pub const fn only(draft: WtDraft) -> WtDrafts {
        WtDrafts(draft.bit())
    }

    /// This set and `draft`.
    #[must_use]
    pub const fn with(self, draft: WtDraft) -> WtDrafts {
        WtDrafts(self.0 | draft.bit())
    }

    /// This set without `draft`.
    #[must_use]
    pub const fn without(self, draft: WtDraft) -> WtDrafts {
        WtDrafts(self.0 & !draft.bit())
    }

    /// Whether `draft` is in the set.
    pub const fn contains(self, draft: WtDraft) -> bool {
        self.0 & draft.bit() != 0
    }

    /// The drafts in both sets.
    #[must_use]
    pub const fn intersection(self, other: WtDrafts) -> WtDrafts {
        WtDrafts(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The newest draft in the set.
    pub fn newest(self) -> Option<WtDraft> {
        self.iter().last()
    }

    /// The drafts in the set, oldest first.
    pub fn iter(self) -> impl Iterator<Item = WtDraft> {
        WtDraft::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

impl Default for WtDrafts {
    fn default() -> Self {
        WtDrafts::ALL
    }
}

impl FromIterator<WtDraft> for WtDrafts {
    fn from_iter<I: IntoIterator<Item = WtDraft>>(iter: I) -> Self {
        iter.into_iter().fold(WtDrafts::NONE, WtDrafts::with)
    }
}

impl std::fmt::Debug for WtDrafts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Settings {
    /// No settings.
    pub fn new() -> Self {
        Settings::default()
    }

    /// Sets `id` to `value`, replacing an earlier value.
    ///
    /// # Panics
    /// If `id` or `value` exceeds 2^62 - 1.
    pub fn set(&mut self, id: u64, value: u64) {
        assert!(
            id < 1 << 62 && value < 1 << 62,
            "setting out of varint range"
        );
        let mut entries: Vec<(u64, u64)> = self.iter().collect();
        match entries.iter_mut().find(|(i, _)| *i == id) {
            Some(e) => e.1 = value,
            None => entries.push((id, value)),
        }
        *self = Settings::from_entries(&entries);
    }

    /// Settings of these entries (in range, without repeats).
    fn from_entries(entries: &[(u64, u64)]) -> Settings {
        let len = entries
            .iter()
            .map(|&(i, v)| varint::encoded_len(i) + varint::encoded_len(v))
            .sum();
        let mut wire = Vec::with_capacity(len);
        for &(id, v) in entries {
            varint::encode(id, &mut wire);
            varint::encode(v, &mut wire);
        }
        Settings { wire }
    }

    /// The value of `id`, if sent.
    pub fn get(&self, id: u64) -> Option<u64> {
        self.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            // Written by `from_entries` alone: whole varints, in pairs.
            let (id, a) = varint::decode(rest)?;
            let (value, b) = varint::decode(&rest[a..])?;
            rest = &rest[a + b..];
            Some((id, value))
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    /// Parses a SETTINGS frame payload.
    pub fn decode(mut payload: &[u8]) -> Result<Settings, SettingsError> {
        let mut entries: Vec<(u64, u64)> = Vec::new();
        let mut seen_grease = Vec::new();
        while !payload.is_empty() {
            let (id, a) = varint::decode(payload).ok_or(SettingsError::Truncated)?;
            let (value, b) = varint::decode(&payload[a..]).ok_or(SettingsError::Truncated)?;
            payload = &payload[a + b..];
            // RFC 9114 §7.2.4: "The same setting identifier MUST NOT occur more than once
            // in the SETTINGS frame. A receiver MAY treat the presence of duplicate
            // setting identifiers as a connection error of type H3_SETTINGS_ERROR."
            if entries.iter().any(|&(i, _)| i == id) || seen_grease.contains(&id) {
                return Err(SettingsError::Duplicate(id));
            }
            // RFC 9114 §7.2.4.1: "Setting identifiers that were defined in [HTTP/2] where
            // there is no corresponding HTTP/3 setting have also been reserved. These
            // reserved settings MUST NOT be sent, and their receipt MUST be treated as a
            // connection error of type H3_SETTINGS_ERROR."
            if id::is_http2_only(id) {
                return Err(SettingsError::Http2Setting(id));
            }
            // RFC 9220 §3 and RFC 9297 §2.1.1: these take only 0 or 1.
            if matches!(id, id::ENABLE_CONNECT_PROTOCOL | id::H3_DATAGRAM) && value > 1 {
                return Err(SettingsError::NotBoolean { id, value });
            }
            if is_grease_id(id) {
                // RFC 9114 §7.2.4.1: reserved identifiers are ignored by receivers; they
                // are remembered only to catch duplicates.
                seen_grease.push(id);
                continue;
            }
            entries.push((id, value));
        }
        Ok(Settings::from_entries(&entries))
    }

    /// Writes the SETTINGS payload (no frame header).
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.wire);
    }

    /// Bytes [`Settings::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        self.wire.len()
    }

    /// Whether the peer supports HTTP datagrams (RFC 9297 or the draft-04 codepoint that
    /// browsers still send).
    pub fn datagrams_enabled(&self) -> bool {
        self.get(id::H3_DATAGRAM) == Some(1) || self.get(id::H3_DATAGRAM_DRAFT04) == Some(1)
    }

    /// Whether a server accepts extended CONNECT (RFC 9220 §3).
    pub fn connect_protocol_enabled(&self) -> bool {
        self.get(id::ENABLE_CONNECT_PROTOCOL) == Some(1)
    }

    /// Every WebTransport draft these settings announce.
    ///
    /// draft-17 counts only with the value 1: draft-ietf-webtrans-http3-16 §3.1 (kept in -17) gives
    /// SETTINGS_WT_ENABLED the default 0 ("does not support") and 1 as the value that
    /// indicates support; a client refuses larger values
    /// ([`Settings::check_wt_enabled_draft17`]). The older codepoints keep the readings
    /// they always had here (any non-zero WT_ENABLED or max-sessions value).
    pub fn wt_drafts(&self) -> WtDrafts {
        let mut d = WtDrafts::NONE;
        if self.get(id::ENABLE_WEBTRANSPORT) == Some(1) {
            d = d.with(WtDraft::Draft02);
        }
        if self
            .get(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07)
            .is_some_and(|v| v >= 1)
        {
            d = d.with(WtDraft::Draft07);
        }
        if self.get(id::WT_MAX_SESSIONS).is_some_and(|v| v >= 1) {
            d = d.with(WtDraft::Draft13);
        }
        if self.get(id::WT_ENABLED).is_some_and(|v| v >= 1) {
            d = d.with(WtDraft::Draft15);
        }
        if self.get(id::WT_ENABLED_DRAFT17) == Some(1) {
            d = d.with(WtDraft::Draft17);
        }
        d
    }

    /// The newest WebTransport draft these settings announce, if any.
    pub fn wt_draft(&self) -> Option<WtDraft> {
        self.wt_drafts().newest()
    }

    /// The draft to speak with the peer that sent these settings when we offer
    /// `offered`: draft-ietf-webtrans-http3-16 §7.1 (kept in -17), "The highest version supported by
    /// both endpoints is selected."
    pub fn wt_draft_within(&self, offered: WtDrafts) -> Option<WtDraft> {
        self.wt_drafts().intersection(offered).newest()
    }

    /// The draft-17 value rule, for a client reading a server's SETTINGS.
    ///
    /// draft-ietf-webtrans-http3-17 §3.1 (the rule draft-16 §3.1 states for
    /// SETTINGS_WT_ENABLED, carried to the draft-17 codepoint): "Clients MUST treat values
    /// greater than "1" as a connection error of type H3_SETTINGS_ERROR."
    pub fn check_wt_enabled_draft17(&self) -> Result<(), SettingsError> {
        match self.get(id::WT_ENABLED_DRAFT17) {
            Some(value) if value > 1 => Err(SettingsError::NotBoolean {
                id: id::WT_ENABLED_DRAFT17,
                value,
            }),
            _ => Ok(()),
        }
    }

    /// The maximum number of concurrent sessions the peer announced, where its draft has
    /// such a setting (draft-02 has none: one session per connection is all it promises,
    /// but browsers and servers open several in practice, so `None` means "not limited by
    /// a setting").
    pub fn wt_max_sessions(&self) -> Option<u64> {
        self.get(id::WT_MAX_SESSIONS)
            .or_else(|| self.get(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07))
    }

    /// Whether these SETTINGS declare the intent to use session flow control, in the terms
    /// of the draft they announce. draft-ietf-webtrans-http3-14 §5.1: "Endpoints declare
    /// their intent to use flow control by taking any of the following actions: Sending
    /// SETTINGS_WT_MAX_SESSIONS with a value greater than "1". Sending
    /// SETTINGS_WT_INITIAL_MAX_STREAMS_UNI with any value other than "0". Sending
    /// SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI with any value other than "0". Sending
    /// SETTINGS_WT_INITIAL_MAX_DATA with any value other than "0"." (draft-13 counted
    /// WT_MAX_SESSIONS alone; draft-15 dropped WT_MAX_SESSIONS, so only the WT_INITIAL_*
    /// settings count for draft-15 peers, and for draft-17's, whose flow control is
    /// draft-16's.) Drafts before 13 have no session flow control.
    pub fn declares_flow_control(&self) -> bool {
        let initial = [
            id::WT_INITIAL_MAX_DATA,
            id::WT_INITIAL_MAX_STREAMS_UNI,
            id::WT_INITIAL_MAX_STREAMS_BIDI,
        ]
        .iter()
        .any(|&i| self.get(i).is_some_and(|v| v != 0));
        match self.wt_draft() {
            Some(WtDraft::Draft15 | WtDraft::Draft17) => initial,
            Some(WtDraft::Draft13) => {
                initial || self.get(id::WT_MAX_SESSIONS).is_some_and(|v| v > 1)
            }
            _ => false,
        }
    }

    /// Whether these settings announce draft-13/14 alone: WT_MAX_SESSIONS without
    /// draft-02's ENABLE_WEBTRANSPORT or draft-15's WT_ENABLED (what pywebtransport 0.8.1's
    /// server sends).
    pub fn announces_only_draft13(&self) -> bool {
        self.get(id::WT_MAX_SESSIONS).is_some_and(|v| v >= 1)
            && self.get(id::ENABLE_WEBTRANSPORT).is_none_or(|v| v == 0)
            && self.get(id::WT_ENABLED).is_none_or(|v| v == 0)
            && self.get(id::WT_ENABLED_DRAFT17).is_none_or(|v| v == 0)
    }

    /// The settings we send: the superset every known client and server accepts
    /// (docs/protocol.md, "What a server must send to reach every client").
    ///
    /// `server` adds ENABLE_CONNECT_PROTOCOL (RFC 9220 §3: only servers send it). `flow`
    /// are the session flow-control windows we give the peer, sent as the three
    /// WT_INITIAL_* settings unless all are zero (no flow control, draft-ietf-webtrans-http3
    /// §5.1). Without flow control, WT_MAX_SESSIONS is 1 whatever `max_sessions` says: see
    /// [`Settings::declares_flow_control`]. Every draft is offered: [`Settings::local_offering`]
    /// with [`WtDrafts::ALL`].
    pub fn local(
        server: bool,
        max_sessions: u64,
        max_field_section_size: u64,
        flow: crate::connection::FlowLimits,
    ) -> Settings {
        Settings::local_offering(
            server,
            max_sessions,
            max_field_section_size,
            flow,
            WtDrafts::ALL,
        )
    }

    /// The settings we send when we offer the drafts in `drafts`: [`Settings::local`] with
    /// only those drafts' codepoints.
    ///
    /// draft-ietf-webtrans-http3-16 §7.1 (kept in -17): "An endpoint that supports multiple draft
    /// versions sends a SETTINGS_WT_ENABLED value for each supported version, as each
    /// version uses a different setting identifier", so draft-15/16's 0x2c7cf000 and
    /// draft-17's 0x20b8933b go together when both are offered.
    pub fn local_offering(
        server: bool,
        max_sessions: u64,
        max_field_section_size: u64,
        flow: crate::connection::FlowLimits,
        drafts: WtDrafts,
    ) -> Settings {
        let mut s = Settings::new();
        s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
        s.set(id::MAX_FIELD_SECTION_SIZE, max_field_section_size);
        s.set(id::QPACK_BLOCKED_STREAMS, 0);
        if server {
            s.set(id::ENABLE_CONNECT_PROTOCOL, 1);
        }
        s.set(id::H3_DATAGRAM, 1);
        s.set(id::H3_DATAGRAM_DRAFT04, 1);
        if drafts.contains(WtDraft::Draft02) {
            s.set(id::ENABLE_WEBTRANSPORT, 1);
        }
        if drafts.contains(WtDraft::Draft07) {
            s.set(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07, max_sessions);
        }
        if drafts.contains(WtDraft::Draft13) {
            // draft-ietf-webtrans-http3-14 §5.1 counts "Sending SETTINGS_WT_MAX_SESSIONS
            // with a value greater than 1" as declaring the intent to use flow control.
            // Without flow control we must not declare it: a draft-14 peer that declares it
            // too would then hold itself to our WT_INITIAL_* limits, which we do not send
            // (zero credit, and no WT_MAX_DATA ever comes: the session stalls).
            s.set(
                id::WT_MAX_SESSIONS,
                if flow.enabled() { max_sessions } else { 1 },
            );
        }
        if drafts.contains(WtDraft::Draft15) {
            s.set(id::WT_ENABLED, 1);
        }
        if drafts.contains(WtDraft::Draft17) {
            // draft-ietf-webtrans-http3-16 §3.1 (kept in -17): servers send
            // SETTINGS_WT_ENABLED with the value 1, and for draft versions clients send it
            // too, with the draft's codepoint, so the server can tell which version the
            // client speaks.
            s.set(id::WT_ENABLED_DRAFT17, 1);
        }
        if flow.enabled() {
            // Values above 2^62 - 1 cannot be sent; the stream counts stop at 2^60
            // (draft-ietf-webtrans-http3 §5.6.2).
            let max = (1 << 62) - 1;
            s.set(id::WT_INITIAL_MAX_DATA, flow.max_data.min(max));
            s.set(
                id::WT_INITIAL_MAX_STREAMS_UNI,
                flow.max_streams_uni.min(1 << 60),
            );
            s.set(
                id::WT_INITIAL_MAX_STREAMS_BIDI,
                flow.max_streams_bidi.min(1 << 60),
            );
        }
        s
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (i, v) in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match id::name(i) {
                Some(n) => write!(f, "{n}({i:#x})={v}")?,
                None => write!(f, "{i:#x}={v}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::hex;

    #[test]
    fn chromium_settings_decode() {
        // vectors.json "settings_payload": the GREASE pair 0x4457a6c63 is dropped.
        let s = Settings::decode(&hex(
            "01800100000680004000074064330180ffd27701ab60374201c0000004457a6c63c000000092a03aaf",
        ))
        .unwrap();
        let got: Vec<_> = s.iter().collect();
        assert_eq!(
            got,
            [
                (0x1, 65536),
                (0x6, 16384),
                (0x7, 100),
                (0x33, 1),
                (0xffd277, 1),
                (0x2b603742, 1)
            ]
        );
        assert!(is_grease_id(0x4457a6c63));
        assert_eq!(s.wt_draft(), Some(WtDraft::Draft02));
        assert!(s.datagrams_enabled());
        assert!(!s.connect_protocol_enabled());
    }

    #[test]
    fn chromium_draft07_flag() {
        let s = Settings::decode(&hex(
            "01800100000680004000074064330180ffd27701ab60374201c0000000c671706a10c000000e0f9da158c0000000a6f45039",
        ))
        .unwrap();
        assert_eq!(s.get(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07), Some(16));
        assert_eq!(s.wt_draft(), Some(WtDraft::Draft07));
        assert_eq!(s.wt_max_sessions(), Some(16));
        assert_eq!(s.len(), 7);
    }

    /// Settings are kept in their wire form, minimal varints: a peer's longer encodings of
    /// the same entries decode to equal settings, which encode minimally; `set` replaces
    /// in place and keeps the order.
    #[test]
    fn settings_keep_a_minimal_wire_form() {
        // H3_DATAGRAM (0x33) = 1 with an 8-byte id and a 2-byte value, then id 1 (in four
        // bytes) = 1.
        let long = hex("c000000000000033 4001 80000001 01"
            .replace(' ', "")
            .as_str());
        let mut expected = Settings::new();
        expected.set(0x33, 1);
        expected.set(0x01, 1);
        let got = Settings::decode(&long).unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.iter().collect::<Vec<_>>(), [(0x33, 1), (0x01, 1)]);
        assert_eq!(got.len(), 2);
        let mut out = Vec::new();
        got.encode(&mut out);
        assert_eq!(out, [0x33, 0x01, 0x01, 0x01]);
        assert_eq!(got.encoded_len(), 4);
        expected.set(0x33, 0x3fff_ffff);
        assert_eq!(
            expected.iter().collect::<Vec<_>>(),
            [(0x33, 0x3fff_ffff), (0x01, 1)]
        );
        assert_eq!(expected.get(0x33), Some(0x3fff_ffff));
        assert!(Settings::new().is_empty());
    }

    #[test]
    fn local_settings_round_trip() {
        for server in [true, false] {
            let s = Settings::local(server, 16, 16384, Default::default());
            let mut out = Vec::new();
            s.encode(&mut out);
            assert_eq!(out.len(), s.encoded_len());
            let d = Settings::decode(&out).unwrap();
            assert_eq!(d, s);
            // Every draft is offered; draft-17 is the newest.
            assert_eq!(d.wt_drafts(), WtDrafts::ALL);
            assert_eq!(d.wt_draft(), Some(WtDraft::Draft17));
            assert_eq!(d.connect_protocol_enabled(), server);
        }
    }

    #[test]
    fn malformed_settings() {
        let cases: &[(&[u8], Code)] = &[
            (&[0x33, 0x01, 0x33, 0x01], Code::H3_SETTINGS_ERROR), // duplicate
            (&[0x21, 0x01, 0x21, 0x02], Code::H3_SETTINGS_ERROR), // duplicate GREASE
            (&[0x02, 0x00], Code::H3_SETTINGS_ERROR),             // HTTP/2 ENABLE_PUSH
            (&[0x00, 0x00], Code::H3_SETTINGS_ERROR),             // reserved 0x00
            (&[0x05, 0x10], Code::H3_SETTINGS_ERROR),             // HTTP/2 MAX_FRAME_SIZE
            (&[0x08, 0x02], Code::H3_SETTINGS_ERROR),             // CONNECT protocol = 2
            (&[0x33, 0x07], Code::H3_SETTINGS_ERROR),             // H3_DATAGRAM = 7
            (&[0x33], Code::H3_FRAME_ERROR),                      // value missing
            (&[0x40], Code::H3_FRAME_ERROR),                      // id truncated
        ];
        for (bytes, code) in cases {
            let e = Settings::decode(bytes).expect_err(&format!("{bytes:02x?}"));
            assert_eq!(e.code(), *code, "{bytes:02x?}");
        }
    }

    #[test]
    fn draft_ordering_picks_newest() {
        let mut s = Settings::new();
        s.set(id::ENABLE_WEBTRANSPORT, 1);
        s.set(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07, 4);
        assert_eq!(s.wt_draft(), Some(WtDraft::Draft07));
        s.set(id::WT_ENABLED, 1);
        assert_eq!(s.wt_draft(), Some(WtDraft::Draft15));
        s.set(id::WT_ENABLED_DRAFT17, 1);
        assert_eq!(s.wt_draft(), Some(WtDraft::Draft17));
        // Offering up to draft-15/16 picks draft-15/16 from the same settings.
        let upto15 = WtDrafts::ALL.without(WtDraft::Draft17);
        assert_eq!(s.wt_draft_within(upto15), Some(WtDraft::Draft15));
        assert_eq!(Settings::new().wt_draft(), None);
    }

    #[test]
    fn draft_names_and_sets() {
        for d in WtDraft::ALL {
            assert_eq!(WtDraft::from_name(d.name()), Some(d));
            assert_eq!(d.name().parse::<WtDraft>(), Ok(d));
        }
        assert_eq!(WtDraft::from_name("draft-16"), Some(WtDraft::Draft15));
        assert_eq!(WtDraft::from_name("17"), Some(WtDraft::Draft17));
        assert!("draft-18".parse::<WtDraft>().is_err());
        let set: WtDrafts = [WtDraft::Draft15, WtDraft::Draft02].into_iter().collect();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [WtDraft::Draft02, WtDraft::Draft15]
        );
        assert_eq!(set.newest(), Some(WtDraft::Draft15));
        assert_eq!(WtDrafts::ALL.iter().count(), 5);
        assert!(WtDrafts::NONE.is_empty() && WtDrafts::NONE.newest().is_none());
        assert_eq!(format!("{set:?}"), "{Draft02, Draft15}");
    }
}
