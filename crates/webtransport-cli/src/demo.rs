//! The HTTP pages of `wt serve`: the demo page (`/`) and the chat page (`/chat`), each
//! an HTML file filled in with the server's address and certificate hash, and the app's
//! Prometheus metrics (`/metrics`), served over plain HTTP/1.1.
//!
//! A page from `http://127.0.0.1` is a secure context, so it may use WebTransport and pin
//! a certificate by hash. The HTTP side is deliberately tiny: `GET`/`HEAD` only, one
//! request per connection, no keep-alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;
use webtransport::app::AppHandle;

const DEMO: &str = include_str!("demo.html");
const CHAT: &str = include_str!("chat.html");
const PLACEHOLDER: &str = "{{CONFIG}}";
/// The content type of the Prometheus text `/metrics` serves (OpenMetrics 1.0).
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the HTTP server serves.
#[derive(Debug, Clone)]
pub struct Site {
    demo: Option<Arc<str>>,
    chat: Option<Arc<str>>,
    metrics: AppHandle,
}

impl Site {
    /// Both pages, for the server at `origin` (`https://host:port`) with the certificate
    /// `hash_hex`, and the metrics of `metrics`.
    pub fn new(origin: &str, hash_hex: &str, metrics: AppHandle) -> Site {
        Site {
            demo: Some(render(DEMO, &format!("{origin}/echo"), hash_hex).into()),
            chat: Some(render(CHAT, origin, hash_hex).into()),
            metrics,
        }
    }

    /// `/metrics` alone.
    pub fn metrics_only(metrics: AppHandle) -> Site {
        Site {
            demo: None,
            chat: None,
            metrics,
        }
    }
}

/// Requests larger than this are refused: a browser's GET is well under 2 KiB.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `template` with the WebTransport `url` and certificate `hash_hex` filled in.
fn render(template: &str, url: &str, hash_hex: &str) -> String {
    let config = serde_json::json!({ "url": url, "hash": hash_hex }).to_string();
    // Inside <script>, `</script>` would end the element: `<` never needs to be literal
    // in this JSON, so escape every one.
    template.replace(PLACEHOLDER, &config.replace('<', "\\u003c"))
}

/// Listens on `addr` and serves `site` from a background task. Returns the address
/// (with the real port when the port is 0).
pub async fn start(addr: SocketAddr, site: Site) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let site = site.clone();
                    tokio::spawn(async move {
                        if let Err(e) = respond(stream, &site).await {
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

async fn respond(mut stream: TcpStream, site: &Site) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let response = match head {
        Some(head) => route(&head, site),
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
fn route(head: &str, site: &Site) -> Vec<u8> {
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
    let html = |page: &Option<Arc<str>>| {
        page.as_ref().map(|p| {
            reply(
                200,
                "text/html; charset=utf-8",
                p.as_bytes().to_vec(),
                head_only,
            )
        })
    };
    let found = match target.split('?').next().unwrap_or_default() {
        "/" | "/index.html" => html(&site.demo),
        "/chat" => html(&site.chat),
        "/metrics" => Some(reply(
            200,
            METRICS_TYPE,
            site.metrics.prometheus_text().into_bytes(),
            head_only,
        )),
        _ => None,
    };
    found.unwrap_or_else(|| {
        let text: &[u8] = if site.demo.is_some() {
            b"not found: the pages are /, /chat and /metrics\n"
        } else {
            b"not found: the metrics are at /metrics\n"
        };
        reply(404, "text/plain", text.to_vec(), head_only)
    })
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

    fn site() -> Site {
        let app = webtransport::app::ServerApp::new();
        Site::new("https://127.0.0.1:4433", &"ab".repeat(32), app.handle())
    }

    #[test]
    fn pages_are_filled_in() {
        let page = render(
            DEMO,
            "https://127.0.0.1:4433/echo",
            "ab".repeat(32).as_str(),
        );
        assert!(!page.contains(PLACEHOLDER));
        assert!(page.contains(r#""url":"https://127.0.0.1:4433/echo""#));
        assert!(page.contains(&"ab".repeat(32)));
        assert!(render(DEMO, "<\u{2f}script>", "").contains("\\u003c/script>"));
        let chat = render(CHAT, "https://127.0.0.1:4433", "");
        assert!(!chat.contains(PLACEHOLDER) && chat.contains(r#""url":"https://127.0.0.1:4433""#));
    }

    #[test]
    fn routes() {
        let site = site();
        let text = |v: Vec<u8>| String::from_utf8(v).unwrap();
        let ok = text(route("GET / HTTP/1.1\r\nHost: x", &site));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("new WebTransport("));
        let head = text(route("HEAD /index.html?x=1 HTTP/1.1", &site));
        assert!(head.contains("Content-Length: ") && head.ends_with("\r\n\r\n"));
        let chat = text(route("GET /chat?room=a HTTP/1.1", &site));
        assert!(
            chat.starts_with("HTTP/1.1 200 OK\r\n") && chat.contains("/chat/"),
            "{chat}"
        );
        let metrics = text(route("GET /metrics HTTP/1.1", &site));
        assert!(
            metrics.contains(METRICS_TYPE) && metrics.ends_with("# EOF\n"),
            "{metrics}"
        );
        assert!(text(route("GET /x HTTP/1.1", &site)).starts_with("HTTP/1.1 404"));
        let post = text(route("POST / HTTP/1.1", &site));
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        let only = Site::metrics_only(webtransport::app::ServerApp::new().handle());
        assert!(text(route("GET / HTTP/1.1", &only)).starts_with("HTTP/1.1 404"));
        assert!(text(route("GET /metrics HTTP/1.1", &only)).starts_with("HTTP/1.1 200"));
    }
}
