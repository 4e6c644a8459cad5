//! Validated identifier newtypes (FHIR ids, accounts) and the break-glass reason text.
//!
//! Constructors validate, fields are private: a value of these types is always well formed,
//! so the decision code never has to re-check syntax.

use std::fmt;
use std::str::FromStr;

use crate::error::PolicyError;

/// FHIR `id` syntax: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

macro_rules! fhir_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Accepts `id` if it matches the FHIR id syntax `[A-Za-z0-9\-\.]{1,64}`.
            pub fn new(id: impl Into<String>) -> Result<Self, PolicyError> {
                let id = id.into();
                if is_valid_id(&id) {
                    Ok(Self(id))
                } else {
                    Err(PolicyError::InvalidId { kind: $kind })
                }
            }

            /// The id text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = PolicyError;

            fn from_str(s: &str) -> Result<Self, PolicyError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = PolicyError;

            fn try_from(s: &str) -> Result<Self, PolicyError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fhir_id!(
    /// The id of a FHIR Patient resource; also names that patient's compartment.
    PatientId,
    "patient"
);
fhir_id!(
    /// The id of a FHIR Practitioner resource, which every staff account links to.
    PractitionerId,
    "practitioner"
);
fhir_id!(
    /// The id of a FHIR Organization resource (a lab technician's laboratory).
    OrganizationId,
    "organization"
);
fhir_id!(
    /// The id of a user account (same syntax as FHIR ids so it can go anywhere an id can).
    AccountId,
    "account"
);
fhir_id!(
    /// The id of any FHIR resource (e.g. a ServiceRequest a lab result fulfils).
    ResourceId,
    "resource"
);

impl From<&PatientId> for ResourceId {
    /// A Patient's id is a resource id; both have the same syntax, so this cannot fail.
    fn from(patient: &PatientId) -> Self {
        Self(patient.0.clone())
    }
}

/// Maximum length of a break-glass reason in bytes (it goes into the audit ledger).
pub const MAX_BREAK_GLASS_REASON_LEN: usize = 1024;

/// The reason a clinician states when invoking break-glass: non-blank, at most
/// [`MAX_BREAK_GLASS_REASON_LEN`] bytes, no control characters (it is shown to the patient).
/// Its `Debug` gives only the length: the text can hold clinical detail.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BreakGlassReason(String);

impl fmt::Debug for BreakGlassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BreakGlassReason(<{} bytes>)", self.0.len())
    }
}

impl BreakGlassReason {
    /// Accepts `reason` after trimming surrounding whitespace.
    pub fn new(reason: &str) -> Result<Self, PolicyError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(PolicyError::InvalidBreakGlassReason("empty"));
        }
        if reason.len() > MAX_BREAK_GLASS_REASON_LEN {
            return Err(PolicyError::InvalidBreakGlassReason("too long"));
        }
        if reason.chars().any(char::is_control) {
            return Err(PolicyError::InvalidBreakGlassReason("control character"));
        }
        Ok(Self(reason.to_owned()))
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BreakGlassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
