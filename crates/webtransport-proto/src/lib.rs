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

pub use error::Code;
pub use varint::VarInt;
