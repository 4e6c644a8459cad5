//! Pure FHIR R4 core of medvault: structural validation, search parameters, blind-index
//! token extraction and reference handling. This crate performs no I/O of any kind.

mod datetime;
mod defs;
mod error;
pub mod refs;
pub mod search;
pub mod validate;

pub use error::FhirError;
pub use refs::{any_reference, patient_of, references, rewrite_references};
pub use search::{
    for_each_index_entry, index_entries, matches, parse_search, search_param, search_params,
    Clause, DateBound, DatePrefix, Day, ExactFilter, IndexEntry, ParamKind, SearchParamDef,
    SearchQuery,
};
pub use validate::{validate, Issue, IssueCode};

/// The resource types this server supports, in CapabilityStatement order.
pub const SUPPORTED_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "Organization",
    "Encounter",
    "Observation",
    "DiagnosticReport",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Appointment",
    "Procedure",
    "Immunization",
    "CareTeam",
    "Consent",
    "ServiceRequest",
    "DocumentReference",
    "Communication",
];

/// True if `t` is one of [`SUPPORTED_TYPES`] (exact, case-sensitive).
pub fn is_supported_type(t: &str) -> bool {
    SUPPORTED_TYPES.contains(&t)
}

/// FHIR `id` syntax: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("Patient/1"));
    }

    #[test]
    fn types() {
        assert_eq!(SUPPORTED_TYPES.len(), 17);
        assert!(is_supported_type("Patient"));
        assert!(!is_supported_type("patient"));
        assert!(!is_supported_type("Bundle"));
    }
}
