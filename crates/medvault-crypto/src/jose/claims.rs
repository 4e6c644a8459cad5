//! Typed, bounded access to JWT claims (RFC 7519 §4.1) and the shared time checks.

use serde_json::{Map, Value};

use super::url::MAX_URL_LEN;
use super::JoseError;

/// A JWT claims set: the verified payload, which must be a JSON object.
pub(crate) struct Claims(Map<String, Value>);

impl Claims {
    pub(crate) fn from_payload(payload: Value) -> Result<Claims, JoseError> {
        match payload {
            Value::Object(map) => Ok(Claims(map)),
            _ => Err(JoseError::JsonShape("payload")),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A required, non-empty string claim of at most `max_len` bytes.
    pub(crate) fn string(&self, name: &'static str, max_len: usize) -> Result<&str, JoseError> {
        self.opt_string(name, max_len)?
            .ok_or(JoseError::MissingClaim(name))
    }

    /// An optional string claim; if present it must be non-empty and at most `max_len` bytes.
    pub(crate) fn opt_string(
        &self,
        name: &'static str,
        max_len: usize,
    ) -> Result<Option<&str>, JoseError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len => Ok(Some(s)),
            Some(_) => Err(JoseError::InvalidClaim(name)),
        }
    }

    /// A required NumericDate. Only non-negative integers are accepted
    /// (RFC 7519 allows fractions; no supported issuer sends them).
    pub(crate) fn time(&self, name: &'static str) -> Result<u64, JoseError> {
        self.opt_time(name)?.ok_or(JoseError::MissingClaim(name))
    }

    /// An optional NumericDate, see [`Claims::time`].
    pub(crate) fn opt_time(&self, name: &'static str) -> Result<Option<u64>, JoseError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or(JoseError::InvalidClaim(name)),
        }
    }

    /// Whether `aud` (a string or a non-empty array of strings, RFC 7519 §4.1.3)
    /// contains a value for which `matches` holds.
    pub(crate) fn audience_contains(
        &self,
        matches: impl Fn(&str) -> bool,
    ) -> Result<bool, JoseError> {
        let valid = |s: &str| !s.is_empty() && s.len() <= MAX_URL_LEN;
        match self.0.get("aud") {
            None => Err(JoseError::MissingClaim("aud")),
            Some(Value::String(s)) if valid(s) => Ok(matches(s)),
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut found = false;
                for item in items {
                    match item {
                        Value::String(s) if valid(s) => found |= matches(s),
                        _ => return Err(JoseError::InvalidClaim("aud")),
                    }
                }
                Ok(found)
            }
            Some(_) => Err(JoseError::InvalidClaim("aud")),
        }
    }
}

/// `exp`: the token is valid strictly before `exp` (plus `leeway` for clock skew).
pub(crate) fn check_exp(exp: u64, now: u64, leeway: u64) -> Result<(), JoseError> {
    if now >= exp.saturating_add(leeway) {
        return Err(JoseError::Expired);
    }
    Ok(())
}

/// `nbf`: the token is not valid before `nbf` (minus `leeway`).
pub(crate) fn check_nbf(nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), JoseError> {
    match nbf {
        Some(nbf) if nbf > now.saturating_add(leeway) => Err(JoseError::NotYetValid),
        _ => Ok(()),
    }
}

/// `iat` must not lie in the future beyond `leeway`.
pub(crate) fn check_iat(iat: Option<u64>, now: u64, leeway: u64) -> Result<(), JoseError> {
    match iat {
        Some(iat) if iat > now.saturating_add(leeway) => Err(JoseError::IssuedInFuture),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_boundaries() {
        assert_eq!(check_exp(100, 99, 0), Ok(()));
        assert_eq!(check_exp(100, 100, 0), Err(JoseError::Expired));
        assert_eq!(check_exp(100, 129, 30), Ok(()));
        assert_eq!(check_exp(100, 130, 30), Err(JoseError::Expired));
        assert_eq!(check_exp(u64::MAX, u64::MAX - 1, 30), Ok(()));
        assert_eq!(check_nbf(Some(130), 100, 30), Ok(()));
        assert_eq!(check_nbf(Some(131), 100, 30), Err(JoseError::NotYetValid));
        assert_eq!(check_nbf(None, 0, 0), Ok(()));
        assert_eq!(check_iat(Some(u64::MAX), u64::MAX, 30), Ok(()));
        assert_eq!(
            check_iat(Some(131), 100, 30),
            Err(JoseError::IssuedInFuture)
        );
    }
}
