//! Structural validation of FHIR R4 resources against the static element tables in
//! `defs`. Diagnostics name element paths, expected types and allowed codes only — never
//! a value taken from the resource, since resource content is PHI.

use serde_json::{Map, Value};

use crate::datetime;
use crate::defs::{self, El, T};

/// OperationOutcome `issue.code` values produced by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueCode {
    /// Wrong JSON shape: unknown element, wrong JSON type, array vs single, empty object.
    Structure,
    /// A required element is missing.
    Required,
    /// A primitive value has the wrong format or a code is outside its required binding.
    Value,
    /// A resource-level rule is broken (e.g. nested `contained`).
    Invalid,
    /// The resource type is not supported by this server.
    NotSupported,
}

impl IssueCode {
    /// The OperationOutcome `issue.code` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invalid => "invalid",
            IssueCode::NotSupported => "not-supported",
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Kind of problem.
    pub code: IssueCode,
    /// FHIRPath-like location, e.g. `Observation.code.coding[0].system`.
    pub expression: String,
    /// Human-readable explanation; never contains resource values.
    pub diagnostics: String,
}

/// Validates one resource structurally. Returns every issue found, not just the first.
pub fn validate(resource: &Value) -> Result<(), Vec<Issue>> {
    let mut v = Validator { issues: Vec::new() };
    v.resource(resource, None, false);
    if v.issues.is_empty() {
        Ok(())
    } else {
        Err(v.issues)
    }
}

struct Validator {
    issues: Vec<Issue>,
}

/// Splits a choice element name `value[x]` into its prefix `value`.
fn choice_prefix(name: &str) -> Option<&str> {
    name.strip_suffix("[x]")
}

/// Finds the element definition (and concrete type) for a JSON property name.
fn lookup<'a>(key: &str, tables: &[&'a [El]]) -> Option<(&'a El, T)> {
    for table in tables {
        for el in table.iter() {
            if el.name == key {
                return Some((el, el.ty));
            }
            let Some(prefix) = choice_prefix(el.name) else {
                continue;
            };
            let Some(suffix) = key.strip_prefix(prefix) else {
                continue;
            };
            match el.ty {
                T::Choice(variants) => {
                    if let Some((_, t)) = variants.iter().find(|(s, _)| *s == suffix) {
                        return Some((el, *t));
                    }
                }
                T::OpenChoice if suffix.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    return Some((el, T::OpenChoice));
                }
                _ => {}
            }
        }
    }
    None
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// FHIR `code`: non-empty, no leading/trailing whitespace, single internal spaces only.
fn is_code(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
        && !s.contains("  ")
        && !s.chars().any(|c| c.is_whitespace() && c != ' ')
}

/// FHIR `uri`/`url`/`canonical`: non-empty and without whitespace.
fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// FHIR `base64Binary`: base64 alphabet (whitespace tolerated), length a multiple of 4.
fn is_base64(s: &str) -> bool {
    let mut n = 0usize;
    let mut padding_seen = false;
    for c in s.chars() {
        if c.is_whitespace() {
            continue;
        }
        if c == '=' {
            padding_seen = true;
        } else if padding_seen || !(c.is_ascii_alphanumeric() || c == '+' || c == '/') {
            return false;
        }
        n += 1;
    }
    // Bit test instead of is_multiple_of, which is newer than the workspace MSRV.
    n & 3 == 0
}

/// Where a value sits, as a FHIRPath-like expression (`Patient.name[0].given`). Built on the
/// stack while walking and rendered only when an issue is reported: most values have none,
/// and formatting every path used to cost a third of validation.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Field(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

impl Validator {
    fn push(&mut self, code: IssueCode, expression: &Path<'_>, diagnostics: impl Into<String>) {
        self.issues.push(Issue {
            code,
            expression: expression.to_string(),
            diagnostics: diagnostics.into(),
        });
    }

    /// Validates a (possibly contained) resource. `path` is the location of a contained
    /// resource, None at top level.
    fn resource(&mut self, v: &Value, path: Option<&Path<'_>>, contained: bool) {
        let base = path.copied().unwrap_or(Path::Root("Resource"));
        let Some(obj) = v.as_object() else {
            self.push(
                IssueCode::Structure,
                &base,
                "expected a JSON object (a resource)",
            );
            return;
        };
        let rt_path = Path::Field(&base, "resourceType");
        let rt = match obj.get("resourceType") {
            None => {
                self.push(IssueCode::Required, &rt_path, "resourceType is required");
                return;
            }
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.push(
                    IssueCode::Structure,
                    &rt_path,
                    format!("expected a string, found {}", json_kind(other)),
                );
                return;
            }
        };
        let Some(elements) = defs::resource_elements(rt) else {
            self.push(
                IssueCode::NotSupported,
                &rt_path,
                format!(
                    "resource type is not supported; supported types: {}",
                    crate::SUPPORTED_TYPES.join("|")
                ),
            );
            return;
        };
        // Top-level expressions start with the type name, as FHIRPath does.
        let here = path.copied().unwrap_or(Path::Root(rt));
        if contained && obj.contains_key("contained") {
            self.push(
                IssueCode::Invalid,
                &Path::Field(&here, "contained"),
                "a contained resource must not itself contain resources (dom-2)",
            );
        }
        self.object(obj, &[defs::RESOURCE_COMMON, elements], &here, true);
    }

    /// Validates the properties of an object against the given element tables.
    fn object(
        &mut self,
        obj: &Map<String, Value>,
        tables: &[&[El]],
        path: &Path<'_>,
        is_resource: bool,
    ) {
        // A resource may consist of just its type; nested elements need content (ele-1).
        if !is_resource && obj.is_empty() {
            self.push(
                IssueCode::Structure,
                path,
                "element must have content (empty object)",
            );
            return;
        }
        // Which key was seen for each choice element, to reject two variants at once.
        let mut choices_seen: Vec<(&str, &str)> = Vec::new();
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let child = Path::Field(path, key);
            if let Some(base) = key.strip_prefix('_') {
                if lookup(base, tables).is_some() {
                    self.primitive_extension(value, &child);
                } else {
                    self.push(IssueCode::Structure, &child, "unknown element");
                }
                continue;
            }
            let Some((el, ty)) = lookup(key, tables) else {
                self.push(IssueCode::Structure, &child, "unknown element");
                continue;
            };
            if choice_prefix(el.name).is_some() {
                if choices_seen.iter().any(|(n, _)| *n == el.name) {
                    self.push(
                        IssueCode::Structure,
                        &Path::Field(path, el.name),
                        format!("only one variant of {} is allowed", el.name),
                    );
                } else {
                    choices_seen.push((el.name, key));
                }
            }
            self.element(value, el, ty, &child);
        }
        for table in tables {
            for el in table.iter().filter(|e| e.min > 0) {
                let present = match choice_prefix(el.name) {
                    Some(_) => choices_seen.iter().any(|(n, _)| *n == el.name),
                    None => obj.contains_key(el.name) || obj.contains_key(&format!("_{}", el.name)),
                };
                if !present {
                    self.push(
                        IssueCode::Required,
                        &Path::Field(path, el.name),
                        "required element is missing",
                    );
                }
            }
        }
    }

    /// `_name` carries id/extension for a primitive: an object, or for repeating
    /// primitives an array of objects/nulls aligned with the values.
    fn primitive_extension(&mut self, v: &Value, path: &Path<'_>) {
        let ok = match v {
            Value::Object(_) => true,
            Value::Array(items) => items.iter().all(|i| i.is_object() || i.is_null()),
            _ => false,
        };
        if !ok {
            self.push(
                IssueCode::Structure,
                path,
                "expected an object (primitive extension) or an array of objects",
            );
        }
    }

    /// Checks cardinality, then the value(s).
    fn element(&mut self, v: &Value, el: &El, ty: T, path: &Path<'_>) {
        if el.many {
            match v {
                Value::Array(items) if items.is_empty() => {
                    self.push(IssueCode::Structure, path, "arrays must not be empty");
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(item, el, ty, &Path::Index(path, i));
                    }
                }
                _ => self.push(
                    IssueCode::Structure,
                    path,
                    format!(
                        "expected an array (element repeats), found {}",
                        json_kind(v)
                    ),
                ),
            }
        } else if v.is_array() {
            self.push(
                IssueCode::Structure,
                path,
                "expected a single value, found an array (element does not repeat)",
            );
        } else {
            self.value(v, el, ty, path);
        }
    }

    fn type_mismatch(&mut self, path: &Path<'_>, ty: T, expected_json: &str, v: &Value) {
        self.push(
            IssueCode::Structure,
            path,
            format!(
                "expected {expected_json} ({}), found {}",
                defs::type_name(ty),
                json_kind(v)
            ),
        );
    }

    fn bad_format(&mut self, path: &Path<'_>, what: &str) {
        self.push(IssueCode::Value, path, format!("expected {what}"));
    }

    /// Validates one (non-array) value of type `ty`.
    fn value(&mut self, v: &Value, el: &El, ty: T, path: &Path<'_>) {
        if v.is_null() {
            self.push(IssueCode::Structure, path, "null is not allowed");
            return;
        }
        match ty {
            T::Boolean => {
                if !v.is_boolean() {
                    self.type_mismatch(path, ty, "a JSON boolean", v);
                }
            }
            T::Integer | T::PositiveInt | T::UnsignedInt => {
                let Value::Number(n) = v else {
                    self.type_mismatch(path, ty, "a JSON number", v);
                    return;
                };
                let min = match ty {
                    T::PositiveInt => 1,
                    T::UnsignedInt => 0,
                    _ => i64::from(i32::MIN),
                };
                match n.as_i64() {
                    Some(i) if i >= min && i <= i64::from(i32::MAX) => {}
                    _ => self.bad_format(
                        path,
                        match ty {
                            T::PositiveInt => "a whole number from 1 to 2147483647 (positiveInt)",
                            T::UnsignedInt => "a whole number from 0 to 2147483647 (unsignedInt)",
                            _ => "a 32-bit whole number (integer)",
                        },
                    ),
                }
            }
            T::Decimal => {
                if !v.is_number() {
                    self.type_mismatch(path, ty, "a JSON number", v);
                }
            }
            T::String
            | T::Code
            | T::Id
            | T::Uri
            | T::Url
            | T::Canonical
            | T::Markdown
            | T::Date
            | T::DateTime
            | T::Instant
            | T::Time
            | T::Base64Binary
            | T::Xhtml => {
                let Value::String(s) = v else {
                    self.type_mismatch(path, ty, "a JSON string", v);
                    return;
                };
                self.string_value(s, el, ty, path);
            }
            T::OpenChoice => {}
            T::AnyObject => {
                if !v.is_object() {
                    self.type_mismatch(path, ty, "a JSON object", v);
                }
            }
            T::Resource => self.resource(v, Some(path), true),
            T::Choice(_) => {
                // lookup() always resolves a choice to its concrete variant type.
                self.push(IssueCode::Structure, path, "unresolved choice element");
            }
            T::Coding
            | T::CodeableConcept
            | T::Identifier
            | T::HumanName
            | T::Address
            | T::ContactPoint
            | T::Reference
            | T::Period
            | T::Quantity
            | T::SimpleQuantity
            | T::Range
            | T::Ratio
            | T::Annotation
            | T::Attachment
            | T::Meta
            | T::Narrative
            | T::Extension
            | T::Dosage
            | T::Bb(_)
            | T::ConsentProvision => {
                let Some(obj) = v.as_object() else {
                    self.type_mismatch(path, ty, "a JSON object", v);
                    return;
                };
                let Some((els, backbone)) = defs::datatype_elements(ty) else {
                    return;
                };
                let extra: &[El] = if backbone { defs::BACKBONE_EXTRA } else { &[] };
                self.object(obj, &[defs::ELEMENT_COMMON, extra, els], path, false);
                if matches!(ty, T::Period) {
                    self.period_order(obj, path);
                }
            }
        }
    }

    fn string_value(&mut self, s: &str, el: &El, ty: T, path: &Path<'_>) {
        let ok = match ty {
            T::String | T::Markdown => !s.trim().is_empty(),
            T::Code => is_code(s),
            T::Id => crate::is_valid_id(s),
            T::Uri | T::Url | T::Canonical => is_uri(s),
            T::Date => datetime::parse_date(s).is_some(),
            T::DateTime => datetime::parse_datetime(s).is_some(),
            T::Instant => datetime::parse_instant(s).is_some(),
            T::Time => datetime::is_time(s),
            T::Base64Binary => is_base64(s),
            T::Xhtml => s.trim_start().starts_with("<div"),
            _ => true,
        };
        if !ok {
            let what = match ty {
                T::String | T::Markdown => "a non-empty string",
                T::Code => "a code (non-empty, no leading/trailing or repeated whitespace)",
                T::Id => "an id (1-64 characters from A-Z, a-z, 0-9, '-', '.')",
                T::Uri | T::Url | T::Canonical => "a URI (non-empty, no whitespace)",
                T::Date => "a date (YYYY, YYYY-MM or YYYY-MM-DD)",
                T::DateTime => {
                    "a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss) with a timezone Z or +hh:mm/-hh:mm)"
                }
                T::Instant => "an instant (YYYY-MM-DDThh:mm:ss(.sss) with a timezone Z or +hh:mm/-hh:mm)",
                T::Time => "a time (hh:mm:ss(.sss))",
                T::Base64Binary => "base64-encoded data",
                T::Xhtml => "an XHTML <div> element",
                _ => "a valid value",
            };
            self.bad_format(path, what);
            return;
        }
        if let Some(codes) = el.binding {
            if !codes.contains(&s) {
                self.push(
                    IssueCode::Value,
                    path,
                    format!(
                        "code is not in the required value set; allowed: {}",
                        codes.join("|")
                    ),
                );
            }
        }
    }

    /// Period.start must not be after Period.end (per-1), compared at day granularity
    /// only where both are parseable.
    fn period_order(&mut self, obj: &Map<String, Value>, path: &Path<'_>) {
        let day = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .and_then(datetime::parse_datetime)
        };
        if let (Some(s), Some(e)) = (day("start"), day("end")) {
            if (s.year, s.month, s.day) > (e.year, e.month, e.day)
                && s.precision == datetime::Precision::Day
                && e.precision == datetime::Precision::Day
            {
                self.push(
                    IssueCode::Invalid,
                    path,
                    "period start must not be after end",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_and_uris() {
        assert!(is_code("final"));
        assert!(is_code("a b"));
        assert!(!is_code(" a"));
        assert!(!is_code("a "));
        assert!(!is_code(""));
        assert!(!is_code("a  b"));
        assert!(!is_code("a\tb"));
        assert!(is_uri("http://loinc.org"));
        assert!(!is_uri("http://a b"));
        assert!(is_base64("aGVsbG8="));
        assert!(!is_base64("aGVsbG8"));
        assert!(!is_base64("a=bc"));
    }

    #[test]
    fn choice_lookup() {
        let obs = defs::resource_elements("Observation").unwrap_or_default();
        assert!(lookup("valueQuantity", &[obs]).is_some());
        assert!(lookup("valueFoo", &[obs]).is_none());
        assert!(lookup("value", &[obs]).is_none());
    }

    #[test]
    fn issue_codes() {
        assert_eq!(IssueCode::NotSupported.as_str(), "not-supported");
        let err = validate(&json!({"resourceType": "Patient", "gender": "x"}));
        assert_eq!(err.map_err(|e| e[0].code.as_str()), Err("value"));
    }
}
