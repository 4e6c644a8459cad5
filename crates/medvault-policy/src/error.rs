//! The error type of the policy core: rejected inputs to constructors and the date parser.
//!
//! No variant carries the rejected value, so every error is safe to log without leaking PHI.

/// An input to the policy core was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// An id does not match the FHIR id syntax `[A-Za-z0-9\-\.]{1,64}`.
    #[error("invalid {kind} id")]
    InvalidId {
        /// Which kind of id was rejected (`patient`, `practitioner`, ...).
        kind: &'static str,
    },
    /// A resource type is not shaped like a FHIR type name (`[A-Z][A-Za-z]{0,63}`).
    #[error("invalid resource type")]
    InvalidResourceType,
    /// A FHIR date/dateTime/instant value is malformed.
    #[error("invalid FHIR dateTime: {0}")]
    InvalidDateTime(&'static str),
    /// A break-glass reason is empty, too long or contains control characters.
    #[error("invalid break-glass reason: {0}")]
    InvalidBreakGlassReason(&'static str),
}
