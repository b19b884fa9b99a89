//! Routing: request paths to routes, by exact path or by pattern with named parameters
//! (`/rooms/{id}`), and the query string split into its parameters.

use std::collections::BTreeMap;

/// A route pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A pattern must start with `/`.
    #[error("route pattern {0:?} does not start with '/'")]
    NotAbsolute(String),
    /// A `{name}` segment that is empty, unclosed or not the whole segment.
    #[error("route pattern {pattern:?}: bad parameter segment {segment:?}")]
    BadParameter {
        /// The pattern.
        pattern: String,
        /// The segment.
        segment: String,
    },
    /// The same parameter name twice in one pattern.
    #[error("route pattern {pattern:?} names parameter {name:?} twice")]
    DuplicateParameter {
        /// The pattern.
        pattern: String,
        /// The name.
        name: String,
    },
    /// Two routes with the same shape (`/a/{x}` and `/a/{y}` match the same paths).
    #[error("route {0:?} is registered twice")]
    Duplicate(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Pattern, RouteError> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| RouteError::NotAbsolute(text.to_owned()))?;
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in rest.split('/') {
            let bad = || RouteError::BadParameter {
                pattern: text.to_owned(),
                segment: seg.to_owned(),
            };
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or_else(bad)?;
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(bad());
                }
                if names.contains(&name) {
                    return Err(RouteError::DuplicateParameter {
                        pattern: text.to_owned(),
                        name: name.to_owned(),
                    });
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains(['{', '}']) {
                return Err(bad());
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The shape two patterns share when they match the same paths.
    fn shape(&self) -> Vec<Option<&str>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param(_) => None,
            })
            .collect()
    }

    /// The parameters, when `path` (without query, already split on `/`) matches.
    fn matches(&self, parts: &[&str]) -> Option<Params> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Params::default();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                // A parameter matches one non-empty segment.
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    params.0.insert(name.clone(), percent_decode(part));
                }
            }
        }
        Some(params)
    }
}

/// Named parameters of a pattern route (`/rooms/{id}` matched by `/rooms/7`: `id` = `7`),
/// percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every parameter, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none (an exact route).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Routes to values of `T`. Exact routes are looked up first; then patterns, in the order
/// they were added.
#[derive(Debug)]
pub(crate) struct Router<T> {
    exact: BTreeMap<String, usize>,
    patterns: Vec<usize>,
    routes: Vec<(Pattern, T)>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: BTreeMap::new(),
            patterns: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    pub(crate) fn add(&mut self, pattern: &str, value: T) -> Result<(), RouteError> {
        let p = Pattern::parse(pattern)?;
        if self.routes.iter().any(|(q, _)| q.shape() == p.shape()) {
            return Err(RouteError::Duplicate(pattern.to_owned()));
        }
        let index = self.routes.len();
        if p.is_exact() {
            self.exact.insert(p.text.clone(), index);
        } else {
            self.patterns.push(index);
        }
        self.routes.push((p, value));
        Ok(())
    }

    /// The route for `path` (without its query), its pattern and parameters.
    pub(crate) fn find(&self, path: &str) -> Option<(&Pattern, &T, Params)> {
        if let Some(&i) = self.exact.get(path) {
            let (p, v) = &self.routes[i];
            return Some((p, v, Params::default()));
        }
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        self.patterns.iter().find_map(|&i| {
            let (p, v) = &self.routes[i];
            p.matches(&parts).map(|params| (p, v, params))
        })
    }

    pub(crate) fn patterns(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(p, _)| p.as_str())
    }
}

/// Splits a request target into its path and query (without the `?`).
pub(crate) fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

/// The query's parameters in order, percent-decoded (`+` as a space), a name without `=`
/// with an empty value.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// `%XX` escapes decoded; an invalid escape is kept as written; invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<u32> {
        let mut r = Router::default();
        r.add("/echo", 1).unwrap();
        r.add("/rooms/{id}", 2).unwrap();
        r.add("/rooms/{id}/users/{user}", 3).unwrap();
        r.add("/rooms/lobby", 4).unwrap();
        r
    }

    #[test]
    fn exact_routes_win_over_patterns() {
        let r = router();
        assert_eq!(r.find("/echo").map(|(_, v, _)| *v), Some(1));
        assert_eq!(r.find("/rooms/lobby").map(|(_, v, _)| *v), Some(4));
        let (p, v, params) = r.find("/rooms/7").unwrap();
        assert_eq!(
            (p.as_str(), *v, params.get("id")),
            ("/rooms/{id}", 2, Some("7"))
        );
        let (_, v, params) = r.find("/rooms/a%20b/users/x").unwrap();
        assert_eq!(*v, 3);
        assert_eq!(params.get("id"), Some("a b"));
        assert_eq!(params.get("user"), Some("x"));
    }

    #[test]
    fn unrouted_paths_find_nothing() {
        let r = router();
        for p in [
            "/",
            "/echo/",
            "/rooms",
            "/rooms/",
            "/rooms/7/users",
            "/nope",
            "",
            "echo",
        ] {
            assert!(r.find(p).is_none(), "{p}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        let mut r: Router<()> = Router::default();
        assert!(matches!(r.add("echo", ()), Err(RouteError::NotAbsolute(_))));
        for bad in ["/a/{", "/a/{}", "/a/x{y}", "/a/{b}c", "/a/}"] {
            assert!(
                matches!(r.add(bad, ()), Err(RouteError::BadParameter { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            r.add("/a/{x}/{x}", ()),
            Err(RouteError::DuplicateParameter { .. })
        ));
        r.add("/a/{x}", ()).unwrap();
        assert!(matches!(r.add("/a/{y}", ()), Err(RouteError::Duplicate(_))));
    }

    #[test]
    fn queries_split_and_decode() {
        assert_eq!(split_target("/a?b=1"), ("/a", "b=1"));
        assert_eq!(split_target("/a"), ("/a", ""));
        assert_eq!(
            parse_query("a=1&b=x%2Fy&c&&d=e+f&bad=%zz%4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x/y".into()),
                ("c".into(), String::new()),
                ("d".into(), "e f".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
    }
}
