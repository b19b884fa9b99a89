//! Sans-IO HTTP/3 and WebTransport protocol core.
#![warn(missing_docs)]

pub mod capsule;
pub mod connection;
pub mod datagram;
pub mod error;
pub mod frame;
pub mod headers;
pub mod qpack;
pub mod settings;
pub mod stream_header;
pub mod varint;
pub mod vec_map;

pub use error::Code;
pub use varint::VarInt;

#[cfg(test)]
mod test_util {
    /// Decodes a hex string (test vectors).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
