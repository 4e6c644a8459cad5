//! Normalized absolute http(s) URLs for comparing DPoP `htu` and assertion `aud` (RFC 3986 §6.2.2-6.2.3).

use super::JoseError;

/// Longest URL accepted, query and fragment included, in bytes.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// An absolute `http`/`https` URL reduced to `scheme://host[:port]/path`.
///
/// Normalization (RFC 3986 §6.2.2 syntax-based and §6.2.3 scheme-based, as
/// RFC 9449 §4.3 recommends for `htu`): scheme and host lowercased, default
/// port (80/443) and an empty port dropped, empty path becomes `/`,
/// percent-encodings of unreserved characters decoded and the remaining hex
/// digits uppercased, and dot segments removed. Query and fragment are not
/// part of the value. User info, non-ASCII and characters that are invalid
/// in a URL are refused rather than repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    normalized: String,
    /// Whether the input had a query or fragment (which was dropped).
    had_query_or_fragment: bool,
}

impl HttpUrl {
    pub(crate) fn parse(input: &str) -> Result<HttpUrl, JoseError> {
        if input.len() > MAX_URL_LEN {
            return Err(JoseError::InvalidUrl("too long"));
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(JoseError::InvalidUrl("invalid character"));
        }
        let end = input.find(['?', '#']).unwrap_or(input.len());
        let (main, tail) = input.split_at(end);
        let (scheme, rest) = main
            .split_once("://")
            .ok_or(JoseError::InvalidUrl("not absolute"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(JoseError::InvalidUrl("scheme")),
        };
        let path_start = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(path_start);
        let (host, port) = split_host_port(authority)?;
        let mut normalized = scheme;
        normalized.push_str("://");
        normalized.push_str(&host);
        if let Some(port) = port.filter(|&p| p != default_port) {
            normalized.push(':');
            normalized.push_str(&port.to_string());
        }
        normalized.push_str(&normalize_path(path)?);
        Ok(HttpUrl {
            normalized,
            had_query_or_fragment: !tail.is_empty(),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.normalized
    }

    pub(crate) fn had_query_or_fragment(&self) -> bool {
        self.had_query_or_fragment
    }
}

/// Lowercased host and optional port of an authority without user info.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), JoseError> {
    if authority.contains('@') {
        return Err(JoseError::InvalidUrl("user info"));
    }
    let (host, port) = if let Some(literal) = authority.strip_prefix('[') {
        // IPv6 (or IPvFuture) literal: "[...]" optionally followed by ":port".
        let (inner, after) = literal
            .split_once(']')
            .ok_or(JoseError::InvalidUrl("host"))?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(JoseError::InvalidUrl("host"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(JoseError::InvalidUrl("port"))?,
            ),
        };
        (format!("[{inner}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if host.is_empty() || !host.bytes().all(host_char) {
            return Err(JoseError::InvalidUrl("host"));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        // "host:" means the default port (RFC 3986 §6.2.3).
        None | Some("") => None,
        Some(digits) => {
            if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(JoseError::InvalidUrl("port"));
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return Err(JoseError::InvalidUrl("port")),
                Ok(port) => Some(port),
            }
        }
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// Validate a path, normalize its percent-encodings and remove dot segments.
fn normalize_path(path: &str) -> Result<String, JoseError> {
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    let mut out = String::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let (hi, lo) = match (
                bytes.next().and_then(hex_val),
                bytes.next().and_then(hex_val),
            ) {
                (Some(hi), Some(lo)) => (hi, lo),
                _ => return Err(JoseError::InvalidUrl("percent-encoding")),
            };
            let decoded = hi << 4 | lo;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                // hi and lo come from hex_val, so both are < 16: in bounds.
                out.push(char::from(HEX_UPPER[usize::from(hi)]));
                out.push(char::from(HEX_UPPER[usize::from(lo)]));
            }
        } else if is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            return Err(JoseError::InvalidUrl("path"));
        }
    }
    Ok(remove_dot_segments(&out))
}

/// Uppercase hex digits, indexed by a nibble (always < 16, from [`hex_val`]).
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 for an absolute path (starting with `/`).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut ends_in_dir = false;
    for segment in path.trim_start_matches('/').split('/') {
        ends_in_dir = false;
        match segment {
            "." => ends_in_dir = true,
            ".." => {
                out.pop();
                ends_in_dir = true;
            }
            s => out.push(s),
        }
    }
    if ends_in_dir {
        out.push("");
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        HttpUrl::parse(s).unwrap().as_str().to_owned()
    }

    #[test]
    fn normalization() {
        assert_eq!(
            norm("https://Server.Example.COM"),
            "https://server.example.com/"
        );
        assert_eq!(norm("HTTPS://a.example:443/x"), "https://a.example/x");
        assert_eq!(norm("http://a.example:80/x"), "http://a.example/x");
        assert_eq!(norm("http://a.example:/x"), "http://a.example/x");
        assert_eq!(norm("http://a.example:443/x"), "http://a.example:443/x");
        assert_eq!(norm("https://a.example:8443/x"), "https://a.example:8443/x");
        assert_eq!(
            norm("https://a.example:08443/x"),
            "https://a.example:8443/x"
        );
        assert_eq!(
            norm("https://a.example/%7Euser/%2f%41"),
            "https://a.example/~user/%2FA"
        );
        assert_eq!(
            norm("https://a.example/a/b/c/./../../g"),
            "https://a.example/a/g"
        );
        assert_eq!(norm("https://a.example/a/b/."), "https://a.example/a/b/");
        assert_eq!(norm("https://a.example/.."), "https://a.example/");
        assert_eq!(norm("https://a.example/a//b"), "https://a.example/a//b");
        assert_eq!(norm("https://a.example/a/%2E%2E/b"), "https://a.example/b");
        assert_eq!(norm("https://[::1]:443/x"), "https://[::1]/x");
        assert_eq!(norm("https://[FE80::1]:8443"), "https://[fe80::1]:8443/");
        let u = HttpUrl::parse("https://a.example/p?q=1#f").unwrap();
        assert_eq!(u.as_str(), "https://a.example/p");
        assert!(u.had_query_or_fragment());
        assert!(!HttpUrl::parse("https://a.example/p")
            .unwrap()
            .had_query_or_fragment());
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "/relative",
            "a.example/x",
            "ftp://a.example/",
            "https://",
            "https:///x",
            "https://user@a.example/",
            "https://a.example:0/",
            "https://a.example:65536/",
            "https://a.example:12345678/",
            "https://a.example:-1/",
            "https://a.example:x/",
            "https://a example/",
            "https://a.example/a b",
            "https://a.example/\u{e9}",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a.example/<",
            "https://[::1/",
            "https://[]/",
            "https://[::1]x/",
            "https://a.example\\x/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HttpUrl::parse(&format!("https://a.example/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }
}
