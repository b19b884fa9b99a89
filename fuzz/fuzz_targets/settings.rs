//! SETTINGS payloads: `Settings::decode` must not panic, and what it accepts must survive
//! our encoder, alone and inside a SETTINGS frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use webtransport_proto::frame::{Frame, FrameLimits};
use webtransport_proto::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(settings) = Settings::decode(data) else {
        return;
    };
    // The getters must not panic whatever the values.
    let _ = (
        settings.datagrams_enabled(),
        settings.connect_protocol_enabled(),
        settings.wt_draft(),
        settings.wt_max_sessions(),
        settings.to_string(),
    );
    let mut out = Vec::new();
    settings.encode(&mut out);
    assert_eq!(out.len(), settings.encoded_len());
    assert_eq!(Settings::decode(&out).as_ref(), Ok(&settings));

    let frame = Frame::Settings(settings);
    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(out.len(), frame.encoded_len());
    let limits = FrameLimits {
        max_headers: 0,
        max_control: u64::MAX,
    };
    assert_eq!(Frame::decode(&out, &limits), Ok(Some((frame, out.len()))));
});
