//! The single error type of this crate. Variants carry only names this server defines
//! (parameters, modifiers, types), never query or resource values, because those may
//! contain PHI.

/// Errors from search parsing and other fallible operations of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// A search parameter that is not defined for the resource type. Its name is kept only
    /// when it is a name this server knows (defined for some type, or one of FHIR's `_`
    /// parameters): any other key is repeated nowhere, since it came from the query as sent
    /// and can be data (a value joined to its name by an encoded `=`, or a bare value).
    #[error("unknown search parameter: {}", .0.as_deref().unwrap_or("(a name this server does not define for any type; not repeated)"))]
    UnknownParam(Option<String>),
    /// A known FHIR search feature (modifier, `_include`, `_sort`, ...) this server does not
    /// implement: the parameter's known name, and its modifier if FHIR defines one so named.
    #[error("unsupported search parameter or modifier: {0}")]
    UnsupportedParam(String),
    /// A search parameter value that cannot be parsed; the value itself is deliberately omitted.
    #[error("invalid value for search parameter: {0}")]
    BadParamValue(String),
    /// A date search prefix (`ne`, `sa`, `eb`, `ap`) this server does not implement.
    #[error("unsupported prefix '{prefix}' for search parameter: {param}")]
    UnsupportedPrefix {
        /// The parameter name.
        param: String,
        /// The two-letter prefix (a fixed FHIR keyword, not user data).
        prefix: &'static str,
    },
    /// A resource type that is not in [`crate::SUPPORTED_TYPES`].
    #[error("unsupported resource type")]
    UnsupportedType,
}
