//! WebTransport over HTTP/3 on quinn and tokio.
