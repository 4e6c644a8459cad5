//! The single error type of this crate. Variants carry parameter names or type names only,
//! never query or resource values, because those may contain PHI.

/// Errors from search parsing and other fallible operations of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// A search parameter that is not defined for the resource type (name only).
    #[error("unknown search parameter: {0}")]
    UnknownParam(String),
    /// A known FHIR search feature (modifier, `_include`, `_sort`, ...) this server does not implement.
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
    #[error("unsupported resource type: {0}")]
    UnsupportedType(String),
}
