//! The relay's one error type.

use std::io;

/// Why the relay could not start, or could not take a new configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A configuration value is out of range (a local mistake; nothing was changed).
    #[error("invalid relay configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The [`Impairment`](crate::Impairment) field at fault.
        field: &'static str,
        /// What the value must be.
        reason: &'static str,
    },
    /// [`Relay::start`](crate::Relay::start) was called outside a tokio runtime.
    #[error("the relay needs a tokio runtime: call Relay::start from within one")]
    NoRuntime,
    /// The operating system refused the client-facing socket.
    #[error("could not bind the relay's client-facing UDP socket: {0}")]
    Bind(#[source] io::Error),
}
