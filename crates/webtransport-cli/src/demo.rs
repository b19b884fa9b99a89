//! The demo page of `wt serve`: one HTML file, filled in with the server's URL and
//! certificate hash, served over plain HTTP/1.1 on 127.0.0.1.
//!
//! A page from `http://127.0.0.1` is a secure context, so it may use WebTransport and pin
//! a certificate by hash. The HTTP side is deliberately tiny: `GET`/`HEAD` of `/` only,
//! one request per connection, no keep-alive.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

const TEMPLATE: &str = include_str!("demo.html");
const PLACEHOLDER: &str = "{{CONFIG}}";

/// Requests larger than this are refused: a browser's GET is well under 2 KiB.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The page with the WebTransport `url` and certificate `hash_hex` filled in.
pub fn render(url: &str, hash_hex: &str) -> String {
    let config = serde_json::json!({ "url": url, "hash": hash_hex }).to_string();
    // Inside <script>, `</script>` would end the element: `<` never needs to be literal
    // in this JSON, so escape every one.
    TEMPLATE.replace(PLACEHOLDER, &config.replace('<', "\\u003c"))
}

/// Listens on 127.0.0.1:`port` and serves `html` from a background task. Returns the
/// address (with the real port when `port` is 0).
pub async fn start(port: u16, html: String) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let html: Arc<str> = html.into();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let html = html.clone();
                    tokio::spawn(async move {
                        if let Err(e) = respond(stream, &html).await {
                            debug!(%peer, error = %e, "demo page request failed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    debug!(error = %e, "demo page: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn respond(mut stream: TcpStream, html: &str) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let response = match head {
        Some(head) => route(&head, html),
        None => reply(400, "text/plain", b"bad request\n".to_vec(), false),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Reads up to the blank line that ends the request head; `None` if it is too long or
/// the client stops early.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

/// The response to a request head (`METHOD TARGET VERSION` on the first line).
fn route(head: &str, html: &str) -> Vec<u8> {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(
            405,
            "text/plain",
            b"only GET and HEAD are supported\n".to_vec(),
            false,
        );
    }
    match target.split('?').next().unwrap_or_default() {
        "/" | "/index.html" => reply(
            200,
            "text/html; charset=utf-8",
            html.as_bytes().to_vec(),
            head_only,
        ),
        _ => reply(
            404,
            "text/plain",
            b"not found: the demo page is at /\n".to_vec(),
            head_only,
        ),
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    // The hash changes with every run of `wt serve`: never let a browser reuse an old page.
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_filled_in() {
        let page = render("https://127.0.0.1:4433/echo", "ab".repeat(32).as_str());
        assert!(!page.contains(PLACEHOLDER));
        assert!(page.contains(r#""url":"https://127.0.0.1:4433/echo""#));
        assert!(page.contains(&"ab".repeat(32)));
        assert!(render("<\u{2f}script>", "").contains("\\u003c/script>"));
    }

    #[test]
    fn routes() {
        let text = |v: Vec<u8>| String::from_utf8(v).unwrap();
        let ok = text(route("GET / HTTP/1.1\r\nHost: x", "<p>hi"));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 5\r\n") && ok.ends_with("\r\n\r\n<p>hi"));
        let head = text(route("HEAD /index.html?x=1 HTTP/1.1", "<p>hi"));
        assert!(head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"));
        assert!(text(route("GET /x HTTP/1.1", "")).starts_with("HTTP/1.1 404"));
        let post = text(route("POST / HTTP/1.1", ""));
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
    }
}
