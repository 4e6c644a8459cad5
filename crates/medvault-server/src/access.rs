//! Access control for FHIR requests: the caller as a policy subject, the care facts of the
//! patient concerned (read from the store), and the one call to `medvault_policy::decide`.
//! Handlers ask `Repository::authorize`; none decides on its own.

use medvault_policy::{
    decide, Action, BreakGlassGrant, BreakGlassReason, CareFacts, Context, Identity,
    OrganizationId, PatientId, PractitionerId, Reason, ResourceId, Subject, Target,
    DEFAULT_BREAK_GLASS_MS, DEFAULT_CARE_WINDOW_MS,
};
use serde_json::{json, Value};

use crate::accounts::{Account, Role};
use crate::clock::format_instant;
use crate::grants;
use crate::ledger::Audit;
use crate::repo::{RepoError, Repository, Result, Stored, MAX_COUNT};
use crate::vault::Keys;

/// Tunables of the access policy.
#[derive(Clone, Copy, Debug)]
pub struct AccessConfig {
    /// How long after its end an Encounter or Appointment keeps a clinician in care.
    pub care_window_ms: i64,
    /// How long a break-glass grant lasts.
    pub break_glass_ms: i64,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            care_window_ms: DEFAULT_CARE_WINDOW_MS,
            break_glass_ms: DEFAULT_BREAK_GLASS_MS,
        }
    }
}

/// What `$break-glass` did.
pub struct BreakGlassOpened {
    /// The notice written into the patient's record.
    pub notice: Stored,
    /// When the access ends.
    pub expires_ms: i64,
}

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

/// The ServiceRequest a result says it fulfils (`basedOn`), as a bare id.
fn based_on_order(resource: &Value) -> Option<String> {
    resource
        .get("basedOn")?
        .as_array()?
        .iter()
        .filter_map(|r| r.get("reference")?.as_str())
        .find_map(|r| r.strip_prefix("ServiceRequest/"))
        .map(str::to_string)
}

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
        Role::LabTechnician => {
            let (practitioner, lab) =
                crate::accounts::lab_link(account.link()).ok_or(forbidden("account-link"))?;
            Identity::LabTechnician {
                practitioner: PractitionerId::new(practitioner)
                    .map_err(|_| forbidden("account-link"))?,
                lab: OrganizationId::new(lab).map_err(|_| forbidden("account-link"))?,
            }
        }
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
    /// The decision context for `account` acting on `patient`: care facts and break-glass
    /// grants matter only for clinicians (reading facts costs a patient's worth of searches).
    /// The placeholder of a Patient being created has none, whatever the store says (nobody
    /// can be in care of a patient that does not exist yet).
    fn context(
        &self,
        keys: &Keys,
        account: &Account,
        subject: &Subject,
        patient: Option<&PatientId>,
    ) -> Result<Context> {
        let now = self.clock().now_ms();
        let mut ctx = Context::new(now).with_care_window_ms(self.access_config().care_window_ms);
        let clinician = matches!(account.role(), Role::Physician | Role::Nurse);
        let needs_facts = clinician || account.role() == Role::LabTechnician;
        if let Some(p) = patient.filter(|p| needs_facts && p.as_str() != NEW_PATIENT) {
            ctx = ctx.with_facts(self.care_facts(keys, p)?);
        }
        if let Some(p) = patient.filter(|p| clinician && p.as_str() != NEW_PATIENT) {
            if let Some(until) =
                grants::active_until(self.store(), keys, account.id(), p.as_str(), now)?
            {
                if let Some(practitioner) = subject.practitioner() {
                    ctx = ctx.with_grant(BreakGlassGrant::new(
                        practitioner.clone(),
                        p.clone(),
                        until,
                    ));
                }
            }
        }
        Ok(ctx)
    }

    /// True if `caller` holds an active break-glass grant on `patient` (its accesses are
    /// flagged in the ledger).
    pub fn under_break_glass(&self, caller: &Caller, patient: &str) -> Result<bool> {
        let Caller::User(account) = caller else {
            return Ok(false);
        };
        if !matches!(account.role(), Role::Physician | Role::Nurse) || patient.is_empty() {
            return Ok(false);
        }
        let keys = self.keys()?;
        let now = self.clock().now_ms();
        Ok(grants::active_until(self.store(), &keys, account.id(), patient, now)?.is_some())
    }

    /// `POST Patient/{id}/$break-glass`: a clinician outside care opens a chart in an
    /// emergency. The patient's notice (a Communication in their record) is written first
    /// and the grant after it, so there is never access the patient was not told about.
    pub fn break_glass(
        &self,
        caller: &Caller,
        audit: &Audit,
        patient: &str,
        reason: &str,
    ) -> Result<BreakGlassOpened> {
        let Caller::User(account) = caller else {
            return Err(forbidden("authentication-required"));
        };
        // A person states the reason and answers for it; a machine client cannot.
        if account.is_machine() {
            return Err(forbidden("break-glass-needs-a-person"));
        }
        let keys = self.keys()?;
        let subject = subject_of(account)?;
        let patient_id = PatientId::new(patient).map_err(|_| RepoError::NotFound)?;
        let reason = BreakGlassReason::new(reason).map_err(|_| {
            RepoError::BadRequest(
                "a reason (a non-empty valueString named 'reason') is required".into(),
            )
        })?;
        let ctx = self
            .context(&keys, account, &subject, Some(&patient_id))?
            .with_break_glass_reason(reason.clone());
        let d = decide(
            &subject,
            Action::BreakGlass,
            &Target::patient(patient_id.clone()),
            &ctx,
        );
        if !d.allowed() {
            return Err(RepoError::Forbidden {
                reason: d.reason().as_str(),
                break_glass_available: false,
                patient: Some(patient.to_string()),
            });
        }
        // Only existing charts can be opened.
        self.read("Patient", patient)?;
        let practitioner = subject
            .practitioner()
            .ok_or(forbidden("account-link"))?
            .as_str()
            .to_string();
        let now = self.clock().now_ms();
        let expires_ms = now.saturating_add(self.access_config().break_glass_ms);
        let (sent, until) = (format_instant(now), format_instant(expires_ms));
        let notice = json!({
            "resourceType": "Communication",
            "status": "completed",
            "category": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/communication-category",
                    "code": "alert"
                }],
                "text": "Emergency access to your record"
            }],
            "priority": "urgent",
            "subject": {"reference": format!("Patient/{patient}")},
            "recipient": [{"reference": format!("Patient/{patient}")}],
            "sender": {"reference": format!("Practitioner/{practitioner}")},
            "sent": sent,
            "payload": [{"contentString": format!(
                "A {} (Practitioner/{practitioner}) opened your record without a care \
                 relationship (break-glass) at {sent}; the access ends at {until}. \
                 Stated reason: {}",
                account.role().as_str(),
                reason.as_str()
            )}]
        });
        let written = self.create(audit, "Communication", notice, None)?;
        grants::insert(self.store(), &keys, account.id(), patient, now, expires_ms)?;
        Ok(BreakGlassOpened {
            notice: written.stored,
            expires_ms,
        })
    }

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
        self.decision_on(caller, action, resource_type, patient, None, None)
    }

    /// `authorize` for one resource: its id and content matter to lab technicians (the
    /// ServiceRequest read, or the order a result is `basedOn`).
    pub fn authorize_resource(
        &self,
        caller: &Caller,
        action: Action,
        resource_type: &str,
        patient: Option<&str>,
        id: Option<&str>,
        resource: Option<&Value>,
    ) -> Result<()> {
        let based_on = resource.and_then(based_on_order);
        self.decision_on(
            caller,
            action,
            resource_type,
            patient,
            id,
            based_on.as_deref(),
        )
        .map(|_| ())
    }

    fn decision_on(
        &self,
        caller: &Caller,
        action: Action,
        resource_type: &str,
        patient: Option<&str>,
        id: Option<&str>,
        based_on: Option<&str>,
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
        let mut target = Target::new(resource_type, patient.clone())
            .map_err(|_| forbidden("unknown-resource-type"))?;
        if let Some(id) = id.and_then(|i| ResourceId::new(i).ok()) {
            target = target.with_id(id);
        }
        if let Some(order) = based_on.and_then(|i| ResourceId::new(i).ok()) {
            target = target.with_based_on(order);
        }
        let ctx = self.context(&keys, account, &subject, patient.as_ref())?;
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
