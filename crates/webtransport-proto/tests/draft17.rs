//! draft-ietf-webtrans-http3-17: the SETTINGS_WT_ENABLED codepoint 0x20b8933b and the
//! rules around it, one test per rule, each quoting the rule it checks.
//!
//! Where the rules come from (docs/interop.md, "draft-17"): the codepoint is the one
//! Pummelchen/WebTransport's 1.8 release names for draft-17 (its wiki page "Release and
//! Interoperability", 13 November 2026); the draft-17 text itself could not be read here.
//! The rule texts quoted are draft-16's §3.1 and §7.1 (ietf-wg-webtrans/
//! draft-ietf-webtrans-http3, tag draft-ietf-webtrans-http3-16, commit 5cb3f58), which
//! draft-17 keeps with the new codepoint as far as the sources say.

mod support;

use std::time::Instant;

use bytes::Bytes;
use support::pair::Pair;
use webtransport_proto::connection::{
    Action, Config, Connection, Event, Feed, LocalStreams, MissingSetting, ProtocolError,
    RejectReason, Role, SessionEnd, Violation,
};
use webtransport_proto::frame::{Frame, FrameLimits};
use webtransport_proto::headers::UpgradeToken;
use webtransport_proto::qpack;
use webtransport_proto::settings::{id, Settings, WtDraft, WtDrafts};
use webtransport_proto::stream_header::UniStreamHeader;
use webtransport_proto::Code;

/// Drafts up to 15/16: what an endpoint that predates draft-17 offers.
const UP_TO_16: WtDrafts = WtDrafts::ALL.without(WtDraft::Draft17);

fn config(drafts: WtDrafts) -> Config {
    Config {
        drafts,
        ..Config::default()
    }
}

/// A connection fed by hand, for peers that send what our own stack never would.
struct Raw {
    conn: Connection,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Raw {
    fn new(role: Role, drafts: WtDrafts) -> Raw {
        let control = if role == Role::Client { 2 } else { 3 };
        let local = LocalStreams {
            control,
            encoder: None,
            decoder: None,
        };
        let mut r = Raw {
            conn: Connection::new(role, config(drafts), local),
            actions: Vec::new(),
            events: Vec::new(),
        };
        r.drain();
        r.actions.clear();
        r
    }

    fn drain(&mut self) {
        while let Some(a) = self.conn.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
    }

    /// The peer's control stream, opened with SETTINGS holding `pairs`.
    fn peer_settings(&mut self, pairs: &[(u64, u64)]) {
        let mut s = Settings::new();
        for &(i, v) in pairs {
            s.set(i, v);
        }
        let mut bytes = Vec::new();
        UniStreamHeader::Control.encode(&mut bytes);
        Frame::Settings(s).encode(&mut bytes);
        let peer_control = if self.conn.role() == Role::Client {
            3
        } else {
            2
        };
        let feed = self
            .conn
            .handle_stream_data(Instant::now(), peer_control, &bytes, false);
        // A control stream stays with the core; after a connection error it is done.
        assert!(matches!(feed, Feed::Continue | Feed::Done), "{feed:?}");
        self.drain();
    }

    fn closed_with(&self) -> Option<Code> {
        self.actions.iter().find_map(|a| match a {
            Action::CloseConnection { code, .. } => Some(*code),
            _ => None,
        })
    }
}

/// What a server that speaks draft-17 and nothing older sends.
fn draft17_server_settings(wt_enabled: u64) -> Vec<(u64, u64)> {
    vec![
        (id::QPACK_MAX_TABLE_CAPACITY, 0),
        (id::ENABLE_CONNECT_PROTOCOL, 1),
        (id::H3_DATAGRAM, 1),
        (id::WT_ENABLED_DRAFT17, wt_enabled),
    ]
}

/// The token of the CONNECT request the server saw in `p`'s last session.
fn token_seen_by_server(p: &mut Pair) -> UpgradeToken {
    p.request_session("/echo");
    p.server
        .take_events()
        .into_iter()
        .find_map(|e| match e {
            Event::SessionRequested { request, .. } => Some(request.protocol),
            _ => None,
        })
        .expect("the server saw the request")
}

// ---- §7.1: announcing ----

/// §7.1: "An endpoint that supports multiple draft versions sends a SETTINGS_WT_ENABLED
/// value for each supported version, as each version uses a different setting
/// identifier."
#[test]
fn both_wt_enabled_codepoints_are_sent_together() {
    for server in [true, false] {
        let s = Settings::local(server, 16, 16 * 1024, Default::default());
        assert_eq!(
            s.get(id::WT_ENABLED),
            Some(1),
            "draft-15/16, server={server}"
        );
        assert_eq!(
            s.get(id::WT_ENABLED_DRAFT17),
            Some(1),
            "draft-17, server={server}"
        );
        // The older drafts' settings are still there too.
        assert_eq!(s.get(id::ENABLE_WEBTRANSPORT), Some(1));
        assert_eq!(s.get(id::WT_MAX_SESSIONS), Some(16));
    }
}

/// §7.1: "Both the client and the server MUST send SETTINGS_WT_ENABLED with the codepoint
/// corresponding to their supported draft version", and §3.1: "For draft versions of
/// WebTransport only, clients MUST also send SETTINGS_WT_ENABLED with the draft-specific
/// codepoint to allow the server to identify the client's supported version."
#[test]
fn an_endpoint_offering_only_draft17_sends_only_its_codepoint() {
    for role in [Role::Client, Role::Server] {
        let c = Connection::new(
            role,
            config(WtDrafts::only(WtDraft::Draft17)),
            LocalStreams {
                control: 2,
                encoder: None,
                decoder: None,
            },
        );
        let s = c.local_settings();
        assert_eq!(s.get(id::WT_ENABLED_DRAFT17), Some(1), "{role:?}");
        for old in [
            id::WT_ENABLED,
            id::WT_MAX_SESSIONS,
            id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07,
            id::ENABLE_WEBTRANSPORT,
        ] {
            assert_eq!(s.get(old), None, "{role:?} {old:#x}");
        }
        assert_eq!(s.wt_drafts(), WtDrafts::only(WtDraft::Draft17));
    }
}

// ---- §3.1: the value ----

/// §3.1: "The default value for the SETTINGS_WT_ENABLED setting is "0", meaning that the
/// server does not support WebTransport. A value of "1" indicates support for the variant
/// of WebTransport that is described in this document".
#[test]
fn one_means_draft17_and_zero_or_absent_means_not() {
    let mut s = Settings::new();
    assert!(
        !s.wt_drafts().contains(WtDraft::Draft17),
        "absent: default 0"
    );
    s.set(id::WT_ENABLED_DRAFT17, 0);
    assert!(!s.wt_drafts().contains(WtDraft::Draft17), "0");
    assert_eq!(s.wt_draft(), None);
    s.set(id::WT_ENABLED_DRAFT17, 1);
    assert_eq!(s.wt_draft(), Some(WtDraft::Draft17), "1");
    s.set(id::WT_ENABLED_DRAFT17, 2);
    assert!(
        !s.wt_drafts().contains(WtDraft::Draft17),
        "2 is not support"
    );
}

/// §3.1: "Clients MUST treat values greater than "1" as a connection error of type
/// H3_SETTINGS_ERROR."
#[test]
fn a_client_closes_on_a_draft17_value_above_one() {
    for value in [2, 0x1234, (1 << 62) - 1] {
        let mut c = Raw::new(Role::Client, WtDrafts::ALL);
        c.peer_settings(&draft17_server_settings(value));
        assert_eq!(c.closed_with(), Some(Code::H3_SETTINGS_ERROR), "{value}");
        let error = c.events.iter().find_map(|e| match e {
            Event::ConnectionError { error } => Some(error.clone()),
            _ => None,
        });
        assert_eq!(
            error,
            Some(ProtocolError::Violation(Violation::WtEnabledValue {
                id: id::WT_ENABLED_DRAFT17,
                value
            }))
        );
    }
    // The value 1 is fine, and so is 0 ("does not support"; the client then finds no
    // WebTransport, which is not a SETTINGS error).
    for value in [0, 1] {
        let mut c = Raw::new(Role::Client, WtDrafts::ALL);
        c.peer_settings(&draft17_server_settings(value));
        assert_eq!(c.closed_with(), None, "{value}");
    }
}

/// RFC 9114 §7.2.4: "Implementations MUST ignore any parameter with an identifier they do
/// not understand." A client that does not speak draft-17 does not know its codepoint, so
/// the §3.1 rule above is not its to apply.
#[test]
fn a_client_without_draft17_ignores_its_codepoint() {
    let mut c = Raw::new(Role::Client, UP_TO_16);
    let mut settings = draft17_server_settings(7);
    settings.push((id::WT_ENABLED, 1));
    c.peer_settings(&settings);
    assert_eq!(c.closed_with(), None);
    assert_eq!(c.conn.draft(), Some(WtDraft::Draft15));
}

/// The value rule of §3.1 names clients only ("Clients MUST treat values greater than
/// "1" ..."); a server reads a client's value above 1 as no draft-17 support and goes on
/// with what else the client offers.
#[test]
fn a_server_reads_a_client_value_above_one_as_no_draft17() {
    let mut s = Raw::new(Role::Server, WtDrafts::ALL);
    s.peer_settings(&[
        (id::H3_DATAGRAM, 1),
        (id::WT_ENABLED, 1),
        (id::WT_ENABLED_DRAFT17, 2),
    ]);
    assert_eq!(s.closed_with(), None);
    assert_eq!(s.conn.draft(), Some(WtDraft::Draft15));
}

/// §3.1: "Clients MUST NOT attempt to establish WebTransport sessions with the
/// "webtransport-h3" token until they have received the setting indicating WebTransport
/// support from the server."
#[test]
fn a_draft17_client_waits_for_the_server_settings_then_uses_webtransport_h3() {
    let mut c = Raw::new(Role::Client, WtDrafts::only(WtDraft::Draft17));
    let sid = c
        .conn
        .open_session(Instant::now(), 0, Pair::request("/echo"))
        .unwrap();
    c.drain();
    assert!(
        !c.actions
            .iter()
            .any(|a| matches!(a, Action::Write { stream: 0, .. })),
        "nothing on the CONNECT stream before the server's SETTINGS"
    );
    c.peer_settings(&draft17_server_settings(1));
    assert_eq!(c.conn.draft(), Some(WtDraft::Draft17));
    let written: Vec<u8> = c
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Write {
                stream: 0, data, ..
            } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    let (frame, _) = Frame::decode(&written, &FrameLimits::default())
        .unwrap()
        .expect("a whole HEADERS frame");
    let Frame::Headers(block) = frame else {
        panic!("not HEADERS: {frame:?}");
    };
    let fields = qpack::decode_field_section(&block, 16 * 1024).unwrap();
    let protocol = fields.iter().find(|f| &f.name[..] == b":protocol").unwrap();
    assert_eq!(&protocol.value[..], b"webtransport-h3");
    assert!(c.conn.session_status(sid).is_some());
}

// ---- §7.1: choosing ----

/// §7.1: "The highest version supported by both endpoints is selected." Two endpoints
/// that both speak draft-17 (and everything older) choose draft-17, and the session
/// opens with the webtransport-h3 token.
#[test]
fn draft17_pair_chooses_draft17() {
    let only17 = config(WtDrafts::only(WtDraft::Draft17));
    for (client, server) in [
        (Config::default(), Config::default()),
        (only17.clone(), only17.clone()),
        (only17.clone(), Config::default()),
        (Config::default(), only17),
    ] {
        let mut p = Pair::with(client, server);
        assert_eq!(p.client.conn.draft(), Some(WtDraft::Draft17));
        assert_eq!(p.server.conn.draft(), Some(WtDraft::Draft17));
        // Session flow control is draft-16's, declared by the WT_INITIAL_* settings.
        assert!(p.client.conn.flow_control() && p.server.conn.flow_control());
        assert_eq!(token_seen_by_server(&mut p), UpgradeToken::WebTransportH3);
        let mut p2 = Pair::with(
            p.client.conn.config().clone(),
            p.server.conn.config().clone(),
        );
        p2.open_session();
    }
}

/// §7.1, "the highest version supported by both": a draft-17 client against a server that
/// offers drafts up to 15/16 speaks draft-15/16 (0x2c7cf000), not draft-17.
#[test]
fn draft17_client_against_a_draft16_server_chooses_draft15() {
    let mut p = Pair::with(Config::default(), config(UP_TO_16));
    assert_eq!(
        p.client
            .conn
            .peer_settings()
            .unwrap()
            .get(id::WT_ENABLED_DRAFT17),
        None
    );
    assert_eq!(p.client.conn.draft(), Some(WtDraft::Draft15));
    assert_eq!(p.server.conn.draft(), Some(WtDraft::Draft15));
    assert_eq!(token_seen_by_server(&mut p), UpgradeToken::WebTransportH3);
    Pair::with(Config::default(), config(UP_TO_16)).open_session();
}

/// The same the other way round: a client that offers drafts up to 15/16 against a
/// server that also offers draft-17; the server sees both codepoints only from itself.
#[test]
fn draft16_client_against_a_draft17_server_chooses_draft15() {
    let mut p = Pair::with(config(UP_TO_16), Config::default());
    assert_eq!(
        p.server
            .conn
            .peer_settings()
            .unwrap()
            .get(id::WT_ENABLED_DRAFT17),
        None
    );
    assert_eq!(p.client.conn.draft(), Some(WtDraft::Draft15));
    assert_eq!(p.server.conn.draft(), Some(WtDraft::Draft15));
    assert_eq!(token_seen_by_server(&mut p), UpgradeToken::WebTransportH3);
    Pair::with(config(UP_TO_16), Config::default()).open_session();
}

/// A peer that announces both draft-15/16 and draft-17 is spoken to in draft-17 by an
/// endpoint that offers both (§7.1), whatever order the two settings come in.
#[test]
fn draft17_is_preferred_over_draft15_when_both_are_announced() {
    for order in [
        [(id::WT_ENABLED, 1), (id::WT_ENABLED_DRAFT17, 1)],
        [(id::WT_ENABLED_DRAFT17, 1), (id::WT_ENABLED, 1)],
    ] {
        let mut settings = vec![(id::ENABLE_CONNECT_PROTOCOL, 1), (id::H3_DATAGRAM, 1)];
        settings.extend(order);
        let mut c = Raw::new(Role::Client, WtDrafts::ALL);
        c.peer_settings(&settings);
        assert_eq!(c.conn.draft(), Some(WtDraft::Draft17));
        let mut s = Raw::new(Role::Server, WtDrafts::ALL);
        s.peer_settings(&settings);
        assert_eq!(s.conn.draft(), Some(WtDraft::Draft17));
    }
}

/// §3.1: "A client MUST NOT establish WebTransport sessions if the server's SETTINGS do
/// not have correct values for every required setting". A client that offers only
/// draft-17 finds no version in common with a draft-15/16 server and never sends its
/// request.
#[test]
fn draft17_only_client_refuses_a_draft16_only_server() {
    let mut p = Pair::with(
        config(WtDrafts::only(WtDraft::Draft17)),
        config(WtDrafts::only(WtDraft::Draft15)),
    );
    assert_eq!(p.client.conn.draft(), None);
    let sid = p.request_session("/echo");
    let rejected = p.client.take_events().into_iter().find_map(|e| match e {
        Event::SessionEnded {
            session,
            end: SessionEnd::Rejected { reason, .. },
        } if session == sid => Some(reason),
        _ => None,
    });
    assert_eq!(
        rejected,
        Some(RejectReason::Unsupported(MissingSetting::WebTransport))
    );
    assert!(
        !p.server
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::SessionRequested { .. })),
        "no request reached the server"
    );
}

/// §3.1: "If the server receives SETTINGS that do not have correct values for every
/// required setting [...], the server MUST treat all established and newly incoming
/// WebTransport sessions as malformed". A server that offers only draft-17, reached by a
/// client whose SETTINGS name draft-15/16 alone, resets the request with
/// H3_MESSAGE_ERROR (RFC 9114 §4.1.2) instead of handing it to the application.
#[test]
fn draft17_only_server_refuses_a_client_without_draft17() {
    let mut s = Raw::new(Role::Server, WtDrafts::only(WtDraft::Draft17));
    s.peer_settings(&[(id::H3_DATAGRAM, 1), (id::WT_ENABLED, 1)]);
    let mut request = Pair::request("/echo");
    request.protocol = UpgradeToken::WebTransportH3;
    let mut block = Vec::new();
    qpack::encode_field_section(&request.to_fields(), &mut block);
    let mut bytes = Vec::new();
    Frame::Headers(Bytes::from(block)).encode(&mut bytes);
    let _ = s.conn.handle_stream_data(Instant::now(), 0, &bytes, false);
    s.drain();
    assert!(
        s.actions.contains(&Action::Reset {
            stream: 0,
            code: Code::H3_MESSAGE_ERROR
        }),
        "{:?}",
        s.actions
    );
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionRequested { .. })));
    assert_eq!(
        s.closed_with(),
        None,
        "a stream error, not a connection error"
    );
}
