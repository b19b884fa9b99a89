//! [`RequestContext`]: what middleware and the handler know of a session request.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;

use webtransport_proto::headers::ConnectRequest;

use super::router::{parse_query, split_target, Params};
use super::{AppHandle, SessionKey};
use crate::connection::Connection;

/// A session request as the framework hands it to middleware (mutable: they may pass
/// values on, add response headers) and then to the route's handler.
#[derive(Debug)]
pub struct RequestContext {
    key: SessionKey,
    route: Option<String>,
    path: String,
    query: Vec<(String, String)>,
    params: Params,
    request: ConnectRequest,
    remote: SocketAddr,
    connection: Connection,
    protocol: Option<String>,
    response_headers: Vec<(String, String)>,
    values: Values,
    app: AppHandle,
}

impl RequestContext {
    pub(super) fn new(
        key: SessionKey,
        request: ConnectRequest,
        remote: SocketAddr,
        connection: Connection,
        app: AppHandle,
    ) -> Self {
        let (path, query) = split_target(&request.path);
        let (path, query) = (path.to_owned(), parse_query(query));
        RequestContext {
            key,
            route: None,
            path,
            query,
            params: Params::default(),
            request,
            remote,
            connection,
            protocol: None,
            response_headers: Vec::new(),
            values: Values::default(),
            app,
        }
    }

    pub(super) fn set_route(&mut self, pattern: &str, params: Params) {
        self.route = Some(pattern.to_owned());
        self.params = params;
    }

    pub(super) fn set_protocol(&mut self, protocol: Option<String>) {
        self.protocol = protocol;
    }

    pub(super) fn take_response_headers(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.response_headers)
    }

    /// The key the session has (or would have) in the app's registry.
    pub fn key(&self) -> SessionKey {
        self.key
    }

    /// The matched route's pattern (`/rooms/{id}`); `None` before routing or when no
    /// route matched.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The request path, without its query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query's parameters in order, percent-decoded.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The raw query string (after `?`; empty without one).
    pub fn raw_query(&self) -> &str {
        split_target(&self.request.path).1
    }

    /// The route's named parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The route parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// The value of request header `name` (lowercase), if sent and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request
            .headers
            .iter()
            .find(|h| h.name.as_ref() == name.as_bytes())
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    }

    /// The whole request (authority, origin, every header, offered subprotocols).
    pub fn request(&self) -> &ConnectRequest {
        &self.request
    }

    /// The `origin` header, which browsers always send.
    pub fn origin(&self) -> Option<&str> {
        self.request.origin.as_deref()
    }

    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// The connection the request came on: its negotiated draft and the peer's SETTINGS
    /// ([`Connection::protocol`]), its statistics.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The subprotocol chosen for the session (`wt-protocol`), once negotiated.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Adds a header to the response (the 200, or a rejection).
    pub fn add_response_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.response_headers.push((name.into(), value.into()));
    }

    /// Passes a value on to later middleware and the handler (one per type; a second
    /// insert of the same type replaces the first).
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.0.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// A value a middleware passed on.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .0
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }

    /// The app: its session registry and groups, its statistics.
    pub fn app(&self) -> &AppHandle {
        &self.app
    }
}

#[derive(Default)]
struct Values(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Values({} entries)", self.0.len())
    }
}
