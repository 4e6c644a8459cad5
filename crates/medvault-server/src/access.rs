//! Access control for FHIR requests: the caller as a policy subject, the care facts of the
//! patient concerned (read from the store), and the one call to `medvault_policy::decide`.
//! Handlers ask `Repository::authorize`; none decides on its own.

use medvault_policy::{
    decide, Action, CareFacts, Context, Identity, PatientId, PractitionerId, Reason, Subject,
    Target,
};
use serde_json::Value;

use crate::accounts::{Account, Role};
use crate::repo::{RepoError, Repository, Result, MAX_COUNT};
use crate::vault::Keys;

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Caller {
    /// No token; only possible when the server was started with `--danger-no-auth` (or
    /// `--dev`), and then not subject to the policy.
    Anonymous,
    /// An authenticated account, as it is now.
    User(Box<Account>),
}

/// Stands for the compartment of a Patient being created (it has no id yet). A Patient may
/// not be stored under this id.
pub const NEW_PATIENT: &str = "new-patient";

/// The resource types whose content says who cares for a patient.
const CARE_TYPES: [&str; 5] = [
    "CareTeam",
    "Encounter",
    "Appointment",
    "Consent",
    "ServiceRequest",
];

fn forbidden(code: &'static str) -> RepoError {
    RepoError::Forbidden {
        reason: code,
        break_glass_available: false,
        patient: None,
    }
}

/// The policy subject of an account, from its role and link.
fn subject_of(account: &Account) -> Result<Subject> {
    let link_id = |prefix: &str| {
        account
            .link()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
    };
    let practitioner = || {
        link_id("Practitioner")
            .and_then(|id| PractitionerId::new(id).ok())
            .ok_or(forbidden("account-link"))
    };
    let identity = match account.role() {
        Role::Admin => Identity::Admin { practitioner: None },
        Role::Auditor => Identity::Auditor { practitioner: None },
        Role::Physician => Identity::Physician {
            practitioner: practitioner()?,
        },
        Role::Nurse => Identity::Nurse {
            practitioner: practitioner()?,
        },
        Role::Receptionist => Identity::Receptionist {
            practitioner: practitioner()?,
        },
        // The lab an order must be addressed to is not recorded on accounts yet, so lab
        // technicians get nothing until it is (deny by default).
        Role::LabTechnician => return Err(forbidden("lab-not-configured")),
        Role::Patient => Identity::Patient {
            patient: link_id("Patient")
                .and_then(|id| PatientId::new(id).ok())
                .ok_or(forbidden("account-link"))?,
        },
    };
    let account_id =
        medvault_policy::AccountId::new(account.id()).map_err(|_| forbidden("account-link"))?;
    Ok(Subject::new(account_id, identity))
}

impl Repository {
    /// The resources that say who cares for `patient`: the Patient itself and its CareTeams,
    /// Encounters, Appointments, Consents and ServiceRequests.
    fn care_facts(&self, keys: &Keys, patient: &PatientId) -> Result<CareFacts> {
        let mut resources: Vec<Value> = Vec::new();
        match self.read("Patient", patient.as_str()) {
            Ok(p) => resources.extend(p.resource),
            Err(RepoError::NotFound | RepoError::Gone) => {}
            Err(e) => return Err(e),
        }
        for rtype in CARE_TYPES {
            let pairs = [
                ("patient".to_string(), patient.as_str().to_string()),
                ("_count".to_string(), MAX_COUNT.to_string()),
            ];
            match self.search_with(keys, rtype, &pairs) {
                // Only resources that belong to this patient count: an Appointment written
                // into another patient's chart that also names this one grants nothing here
                // (its write was decided on the other patient only).
                Ok(page) => resources.extend(
                    page.entries
                        .into_iter()
                        .filter(|s| crate::repo::patient_of_stored(s) == patient.as_str())
                        .filter_map(|s| s.resource),
                ),
                // A type without a `patient` search parameter contributes nothing.
                Err(RepoError::Search(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(CareFacts::from_resources(patient, &resources))
    }

    /// Decide whether `caller` may do `action` on `resource_type` data of `patient` (or on
    /// non-patient data / a whole type when `None`). A denial is `RepoError::Forbidden`.
    pub fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        resource_type: &str,
        patient: Option<&str>,
    ) -> Result<()> {
        self.decision(caller, action, resource_type, patient)
            .map(|_| ())
    }

    /// `authorize`, returning the policy's reason when allowed (`None` for anonymous
    /// callers), so a caller can tell a plain allow from one that needs filtering.
    pub fn decision(
        &self,
        caller: &Caller,
        action: Action,
        resource_type: &str,
        patient: Option<&str>,
    ) -> Result<Option<Reason>> {
        let account = match caller {
            Caller::Anonymous => return Ok(None),
            Caller::User(a) => a,
        };
        let keys = self.keys()?;
        let subject = subject_of(account)?;
        let patient = match patient.filter(|p| !p.is_empty()) {
            Some(p) => Some(PatientId::new(p).map_err(|_| forbidden("inconsistent-target"))?),
            None => None,
        };
        let target = Target::new(resource_type, patient.clone())
            .map_err(|_| forbidden("unknown-resource-type"))?;
        let mut ctx = Context::new(self.clock().now_ms());
        // Care facts matter only for clinicians; reading them costs a patient's worth of
        // searches. The placeholder of a Patient being created has none, whatever the store
        // says (nobody can be in care of a patient that does not exist yet).
        let clinician = matches!(account.role(), Role::Physician | Role::Nurse);
        if let Some(p) = patient
            .as_ref()
            .filter(|p| clinician && p.as_str() != NEW_PATIENT)
        {
            ctx = ctx.with_facts(self.care_facts(&keys, p)?);
        }
        let d = decide(&subject, action, &target, &ctx);
        if d.allowed() {
            Ok(Some(d.reason()))
        } else {
            Err(RepoError::Forbidden {
                reason: d.reason().as_str(),
                break_glass_available: d.break_glass_available(),
                patient: patient.map(|p| p.as_str().to_string()),
            })
        }
    }
}
