//! Sans-IO HTTP/3 and WebTransport protocol core.
#![warn(missing_docs)]

pub mod error;
pub mod varint;

pub use error::Code;
pub use varint::VarInt;
