//! Who is asking: roles and the subject (account plus the FHIR identity it links to).
//!
//! [`Identity`] makes the role and its links one value, so a lab technician without a lab
//! or a patient account without a Patient id cannot be represented.

use std::fmt;

use crate::ids::{AccountId, OrganizationId, PatientId, PractitionerId};

/// The roles of the design's role table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Manages accounts and roles; never reads clinical data.
    Admin,
    /// Reads and writes the chart of patients in care.
    Physician,
    /// Reads the chart of patients in care; records observations.
    Nurse,
    /// Registers patients, books appointments, sees calendars.
    Receptionist,
    /// Posts results for orders addressed to the lab.
    LabTechnician,
    /// Reads and verifies the audit ledger.
    Auditor,
    /// Reads their own record.
    Patient,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Physician,
        Role::Nurse,
        Role::Receptionist,
        Role::LabTechnician,
        Role::Auditor,
        Role::Patient,
    ];

    /// Stable lowercase code (for storage, the ledger and logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::Receptionist => "receptionist",
            Role::LabTechnician => "lab-technician",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
        }
    }

    /// Parses a code produced by [`Role::as_str`].
    pub fn from_code(code: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// True for every role except [`Role::Patient`].
    pub const fn is_staff(self) -> bool {
        !matches!(self, Role::Patient)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role together with the FHIR resources the account is linked to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An administrator; the Practitioner link is optional because admins never act clinically.
    Admin {
        /// Linked Practitioner, if any.
        practitioner: Option<PractitionerId>,
    },
    /// An auditor; the Practitioner link is optional because auditors never act clinically.
    Auditor {
        /// Linked Practitioner, if any.
        practitioner: Option<PractitionerId>,
    },
    /// A physician.
    Physician {
        /// The Practitioner resource this account acts as.
        practitioner: PractitionerId,
    },
    /// A nurse.
    Nurse {
        /// The Practitioner resource this account acts as.
        practitioner: PractitionerId,
    },
    /// A receptionist.
    Receptionist {
        /// The Practitioner resource this account acts as.
        practitioner: PractitionerId,
    },
    /// A laboratory technician working for `lab`.
    LabTechnician {
        /// The Practitioner resource this account acts as.
        practitioner: PractitionerId,
        /// The Organization orders must be addressed to (`ServiceRequest.performer`).
        lab: OrganizationId,
    },
    /// A patient.
    Patient {
        /// The Patient resource (and compartment) this account owns.
        patient: PatientId,
    },
}

/// The authenticated caller a decision is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    account: AccountId,
    identity: Identity,
}

impl Subject {
    /// A subject for `account` acting as `identity`.
    pub fn new(account: AccountId, identity: Identity) -> Self {
        Self { account, identity }
    }

    /// The account id.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// Role and links.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The role.
    pub fn role(&self) -> Role {
        match self.identity {
            Identity::Admin { .. } => Role::Admin,
            Identity::Auditor { .. } => Role::Auditor,
            Identity::Physician { .. } => Role::Physician,
            Identity::Nurse { .. } => Role::Nurse,
            Identity::Receptionist { .. } => Role::Receptionist,
            Identity::LabTechnician { .. } => Role::LabTechnician,
            Identity::Patient { .. } => Role::Patient,
        }
    }

    /// The linked Practitioner, for staff subjects that have one.
    pub fn practitioner(&self) -> Option<&PractitionerId> {
        match &self.identity {
            Identity::Admin { practitioner } | Identity::Auditor { practitioner } => {
                practitioner.as_ref()
            }
            Identity::Physician { practitioner }
            | Identity::Nurse { practitioner }
            | Identity::Receptionist { practitioner }
            | Identity::LabTechnician { practitioner, .. } => Some(practitioner),
            Identity::Patient { .. } => None,
        }
    }

    /// The linked Patient, for patient subjects.
    pub fn patient(&self) -> Option<&PatientId> {
        match &self.identity {
            Identity::Patient { patient } => Some(patient),
            _ => None,
        }
    }

    /// The lab Organization, for lab technicians.
    pub fn lab(&self) -> Option<&OrganizationId> {
        match &self.identity {
            Identity::LabTechnician { lab, .. } => Some(lab),
            _ => None,
        }
    }
}
