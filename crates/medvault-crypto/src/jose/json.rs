//! Bounded JSON parsing for untrusted JOSE input: size cap, nesting cap, no duplicate members.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{JoseError, MAX_JSON_DEPTH};

/// Why the bounded visitor stopped, recorded on the side because serde errors are opaque strings.
#[derive(Clone, Copy)]
enum Fault {
    TooDeep,
    Duplicate,
}

/// Parse `bytes` (at most `max_len` of them) as one JSON document.
///
/// Objects and arrays may nest at most [`MAX_JSON_DEPTH`] levels and objects
/// must not repeat a member name. `what` names the document for errors.
pub(crate) fn parse(bytes: &[u8], what: &'static str, max_len: usize) -> Result<Value, JoseError> {
    if bytes.len() > max_len {
        return Err(JoseError::TooLarge);
    }
    let fault = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Bounded {
        depth: 0,
        fault: &fault,
    };
    let parsed = seed.deserialize(&mut de).and_then(|value| {
        de.end()?;
        Ok(value)
    });
    parsed.map_err(|_| match fault.get() {
        Some(Fault::TooDeep) => JoseError::JsonTooDeep(what),
        Some(Fault::Duplicate) => JoseError::JsonDuplicateMember(what),
        None => JoseError::Json(what),
    })
}

/// Parse a JSON document that must be an object.
pub(crate) fn parse_object(
    bytes: &[u8],
    what: &'static str,
    max_len: usize,
) -> Result<Map<String, Value>, JoseError> {
    match parse(bytes, what, max_len)? {
        Value::Object(map) => Ok(map),
        _ => Err(JoseError::JsonShape(what)),
    }
}

/// A serde seed/visitor building a [`Value`] while enforcing depth and uniqueness.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    /// Nesting depth of the containers enclosing the value being read.
    depth: usize,
    fault: &'a Cell<Option<Fault>>,
}

impl Bounded<'_> {
    /// The seed for the members of a container opened at this level, or an
    /// error if that container is one level too deep.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_JSON_DEPTH {
            self.fault.set(Some(Fault::TooDeep));
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(Bounded {
            depth: self.depth + 1,
            fault: self.fault,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never produces NaN or infinities; refuse them anyway.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                self.fault.set(Some(Fault::Duplicate));
                return Err(de::Error::custom("duplicate member"));
            }
            let value = access.next_value_seed(inner)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn depth_limit_is_exact() {
        let ok = "[[[[{}]]]]";
        assert!(parse(ok.as_bytes(), "t", 100).is_ok());
        let deep = "[[[[[{}]]]]]";
        assert_eq!(
            parse(deep.as_bytes(), "t", 100).unwrap_err(),
            JoseError::JsonTooDeep("t")
        );
        // Far deeper than serde_json's own recursion limit: still a clean error.
        let very_deep = "[".repeat(10_000);
        assert_eq!(
            parse(very_deep.as_bytes(), "t", 100_000).unwrap_err(),
            JoseError::JsonTooDeep("t")
        );
    }

    #[test]
    fn duplicates_trailing_data_and_size() {
        assert_eq!(
            parse(br#"{"a":1,"b":{"a":2},"a":3}"#, "t", 100).unwrap_err(),
            JoseError::JsonDuplicateMember("t")
        );
        assert_eq!(
            parse(br#"{"a":1} {}"#, "t", 100).unwrap_err(),
            JoseError::Json("t")
        );
        assert_eq!(
            parse(br#"{"a":1}"#, "t", 6).unwrap_err(),
            JoseError::TooLarge
        );
        assert_eq!(
            parse_object(b"[1]", "t", 100).unwrap_err(),
            JoseError::JsonShape("t")
        );
        let v = parse_object(br#" {"a":[1,-2,3.5,null,true,"x"]} "#, "t", 100).unwrap();
        assert_eq!(
            Value::Object(v).to_string(),
            r#"{"a":[1,-2,3.5,null,true,"x"]}"#
        );
    }
}
