//! What is asked and in which situation: actions, targets, break-glass grants and the context.

use std::fmt;

use crate::error::PolicyError;
use crate::facts::CareFacts;
use crate::ids::{BreakGlassReason, PatientId, PractitionerId, ResourceId};

/// How long a "recent" Encounter or Appointment keeps a clinician in care: 30 days.
pub const DEFAULT_CARE_WINDOW_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// How long a break-glass grant lasts by default: 1 hour.
pub const DEFAULT_BREAK_GLASS_MS: i64 = 60 * 60 * 1000;

/// Everything a subject can ask to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// FHIR read / vread of one resource.
    Read,
    /// FHIR search (within a compartment, or type-wide; see the crate docs on filtering).
    Search,
    /// FHIR create.
    Create,
    /// FHIR update or patch.
    Update,
    /// FHIR delete.
    Delete,
    /// FHIR history of an instance (target with a compartment) or of a type (without).
    History,
    /// The auditor's view of the whole audit ledger.
    ReadLedger,
    /// A patient's own ledger entries (target compartment = that patient).
    ReadOwnAudit,
    /// Accounts, roles and registration tokens.
    ManageAccounts,
    /// Invoking break-glass for the target's patient (reason in the [`Context`]).
    BreakGlass,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::Search,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::History,
        Action::ReadLedger,
        Action::ReadOwnAudit,
        Action::ManageAccounts,
        Action::BreakGlass,
    ];

    /// Stable lowercase code (for the ledger and logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::History => "history",
            Action::ReadLedger => "read-ledger",
            Action::ReadOwnAudit => "read-own-audit",
            Action::ManageAccounts => "manage-accounts",
            Action::BreakGlass => "break-glass",
        }
    }

    /// True for the FHIR REST interactions (the ones whose target resource type matters).
    pub const fn is_fhir(self) -> bool {
        matches!(
            self,
            Action::Read
                | Action::Search
                | Action::Create
                | Action::Update
                | Action::Delete
                | Action::History
        )
    }

    /// True for the interactions that only read (break-glass may be offered for these).
    pub const fn is_read(self) -> bool {
        matches!(self, Action::Read | Action::Search | Action::History)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is applied to.
///
/// - `resource_type`: the FHIR type (`Observation`, `Slot`, ...).
/// - `compartment`: the Patient the data belongs to; `None` for non-patient data
///   (Practitioner, Schedule, ...) and for type-wide search/history.
/// - `id`: the resource id when known (needed for a lab technician reading a ServiceRequest;
///   for `Patient` it must equal the compartment).
/// - `based_on`: for lab results, the ServiceRequest they fulfil (`basedOn`).
///
/// [`Action::ReadLedger`] and [`Action::ManageAccounts`] ignore the target;
/// [`Action::ReadOwnAudit`] and [`Action::BreakGlass`] use only its compartment
/// (build it with [`Target::patient`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    resource_type: String,
    compartment: Option<PatientId>,
    id: Option<ResourceId>,
    based_on: Option<ResourceId>,
}

impl Target {
    /// A target of `resource_type` in `compartment`; the type must look like a FHIR type
    /// name (`[A-Z][A-Za-z]{0,63}`), so a path fragment cannot pose as one.
    pub fn new(resource_type: &str, compartment: Option<PatientId>) -> Result<Self, PolicyError> {
        let well_formed = resource_type.len() <= 64
            && resource_type.starts_with(|c: char| c.is_ascii_uppercase())
            && resource_type.chars().all(|c| c.is_ascii_alphabetic());
        if !well_formed {
            return Err(PolicyError::InvalidResourceType);
        }
        Ok(Self {
            resource_type: resource_type.to_owned(),
            compartment,
            id: None,
            based_on: None,
        })
    }

    /// Data of `patient` of type `resource_type`.
    pub fn in_compartment(resource_type: &str, patient: PatientId) -> Result<Self, PolicyError> {
        Self::new(resource_type, Some(patient))
    }

    /// Non-patient data, or a type-wide search/history, of `resource_type`.
    pub fn of_type(resource_type: &str) -> Result<Self, PolicyError> {
        Self::new(resource_type, None)
    }

    /// The Patient resource `patient` (its own compartment); also the target of
    /// [`Action::BreakGlass`] and [`Action::ReadOwnAudit`].
    pub fn patient(patient: PatientId) -> Self {
        Self {
            resource_type: "Patient".to_owned(),
            id: Some(ResourceId::from(&patient)),
            compartment: Some(patient),
            based_on: None,
        }
    }

    /// Sets the resource id.
    #[must_use]
    pub fn with_id(mut self, id: ResourceId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the ServiceRequest a lab result fulfils.
    #[must_use]
    pub fn with_based_on(mut self, service_request: ResourceId) -> Self {
        self.based_on = Some(service_request);
        self
    }

    /// The FHIR resource type.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The patient the data belongs to.
    pub fn compartment(&self) -> Option<&PatientId> {
        self.compartment.as_ref()
    }

    /// The resource id, if known.
    pub fn id(&self) -> Option<&ResourceId> {
        self.id.as_ref()
    }

    /// The ServiceRequest a lab result fulfils, if any.
    pub fn based_on(&self) -> Option<&ResourceId> {
        self.based_on.as_ref()
    }
}

/// A break-glass grant issued by the server after an allowed [`Action::BreakGlass`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BreakGlassGrant {
    practitioner: PractitionerId,
    patient: PatientId,
    expires_ms: i64,
}

impl BreakGlassGrant {
    /// A grant for `practitioner` on `patient`, valid while `now_ms < expires_ms`.
    pub fn new(practitioner: PractitionerId, patient: PatientId, expires_ms: i64) -> Self {
        Self {
            practitioner,
            patient,
            expires_ms,
        }
    }

    /// A grant issued at `now_ms` for [`DEFAULT_BREAK_GLASS_MS`].
    pub fn issued_at(practitioner: PractitionerId, patient: PatientId, now_ms: i64) -> Self {
        Self::new(
            practitioner,
            patient,
            now_ms.saturating_add(DEFAULT_BREAK_GLASS_MS),
        )
    }

    /// The clinician it was granted to.
    pub fn practitioner(&self) -> &PractitionerId {
        &self.practitioner
    }

    /// The patient whose chart it opens.
    pub fn patient(&self) -> &PatientId {
        &self.patient
    }

    /// First instant at which the grant no longer applies.
    pub fn expires_ms(&self) -> i64 {
        self.expires_ms
    }

    /// True while `now_ms < expires_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        now_ms < self.expires_ms
    }
}

/// The situation of a request: the time, the care facts the server gathered, the
/// break-glass grants of the caller, and a break-glass reason if one is being invoked.
///
/// Facts are kept per patient: a context may carry facts for several patients (e.g. while
/// filtering a page of search results), and facts are only ever consulted for the patient
/// they were extracted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    now_ms: i64,
    care_window_ms: i64,
    facts: Vec<CareFacts>,
    grants: Vec<BreakGlassGrant>,
    break_glass_reason: Option<BreakGlassReason>,
}

impl Context {
    /// A context at `now_ms` (unix milliseconds) with the default care window, no facts,
    /// no grants and no break-glass reason.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            care_window_ms: DEFAULT_CARE_WINDOW_MS,
            facts: Vec::new(),
            grants: Vec::new(),
            break_glass_reason: None,
        }
    }

    /// Sets how long after its end an Encounter/Appointment keeps a clinician in care;
    /// negative values are treated as 0.
    #[must_use]
    pub fn with_care_window_ms(mut self, ms: i64) -> Self {
        self.care_window_ms = ms.max(0);
        self
    }

    /// Adds care facts, replacing any earlier facts for the same patient.
    #[must_use]
    pub fn with_facts(mut self, facts: CareFacts) -> Self {
        self.facts.retain(|f| f.patient() != facts.patient());
        self.facts.push(facts);
        self
    }

    /// Adds a break-glass grant (expired grants are harmless: they are checked against now).
    #[must_use]
    pub fn with_grant(mut self, grant: BreakGlassGrant) -> Self {
        self.grants.push(grant);
        self
    }

    /// Sets the reason stated for an [`Action::BreakGlass`] request.
    #[must_use]
    pub fn with_break_glass_reason(mut self, reason: BreakGlassReason) -> Self {
        self.break_glass_reason = Some(reason);
        self
    }

    /// The decision time.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The care window.
    pub fn care_window_ms(&self) -> i64 {
        self.care_window_ms
    }

    /// The care facts for `patient`, if the server supplied them.
    pub fn facts_for(&self, patient: &PatientId) -> Option<&CareFacts> {
        self.facts.iter().find(|f| f.patient() == patient)
    }

    /// The break-glass grants.
    pub fn grants(&self) -> &[BreakGlassGrant] {
        &self.grants
    }

    /// The stated break-glass reason, if any.
    pub fn break_glass_reason(&self) -> Option<&BreakGlassReason> {
        self.break_glass_reason.as_ref()
    }

    /// True if a grant for `practitioner` on `patient` is active now.
    pub fn has_active_grant(&self, practitioner: &PractitionerId, patient: &PatientId) -> bool {
        self.grants.iter().any(|g| {
            g.practitioner() == practitioner && g.patient() == patient && g.is_active(self.now_ms)
        })
    }
}
