//! The decision function: the one place that says yes or no to every request, deny by default.

use std::fmt;

use crate::facts::{CareBasis, LabOrder, OrderStatus};
use crate::ids::{OrganizationId, PatientId, PractitionerId};
use crate::request::{Action, Context, Target};
use crate::subject::{Identity, Role, Subject};

/// Why a decision came out as it did. [`Reason::as_str`] is a stable code for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    // Allowing reasons.
    /// The clinician is the patient's general practitioner.
    InCareGeneralPractitioner,
    /// The clinician is a current participant of an active CareTeam.
    InCareCareTeam,
    /// The clinician takes part in an ongoing or recent Encounter.
    InCareEncounter,
    /// The clinician takes part in a booked or recent Appointment.
    InCareAppointment,
    /// An active Consent of the patient names the clinician.
    Consent,
    /// Allowed only because of an active break-glass grant.
    BreakGlass,
    /// Break-glass was invoked (the server now issues a grant and tells the patient).
    BreakGlassInvoked,
    /// A patient acting on their own compartment.
    OwnCompartment,
    /// A patient reading their own audit entries.
    OwnAudit,
    /// A lab technician acting on an order addressed to their lab.
    LabOrder,
    /// Non-patient data (Practitioner, Organization, Location, Schedule, Slot) for staff.
    StaffDirectory,
    /// Reception work: demographics and appointments.
    FrontDesk,
    /// A type-wide search or history; every result must be filtered with a Read decision.
    SearchFiltered,
    /// An auditor reading the ledger.
    LedgerAudit,
    /// An admin managing accounts.
    AccountAdmin,
    // Denying reasons.
    /// The clinician has no care relationship, consent or break-glass grant for the patient.
    NotInCare,
    /// Creating/updating Patient, CareTeam, Encounter or Appointment, or deleting anything,
    /// needs a care relationship: consent or break-glass must not be turned into lasting access.
    CareRelationshipRequired,
    /// Only the patient writes their Consent resources.
    ConsentByPatientOnly,
    /// The role never touches this resource type.
    RoleForbidsResource,
    /// The role may not perform this action (on this type).
    RoleForbidsAction,
    /// Admins never see patient data (separation of duties).
    AdminNoClinical,
    /// Auditors see the ledger only.
    LedgerOnly,
    /// Patients may only read their record (apart from their Consents).
    PatientReadOnly,
    /// A patient asked for data outside their own compartment.
    NotOwnCompartment,
    /// No order addressed to the technician's lab covers the request.
    NoLabOrder,
    /// Break-glass was invoked without a reason.
    BreakGlassReasonRequired,
    /// Patient data was addressed without saying whose it is.
    NoCompartment,
    /// The target contradicts itself (a Patient id that is not its compartment, or
    /// directory data placed in a patient compartment).
    InconsistentTarget,
    /// Audit data is only reachable through the ledger actions.
    AuditViaLedger,
    /// A resource type this policy does not know.
    UnknownResourceType,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 30] = [
        Reason::InCareGeneralPractitioner,
        Reason::InCareCareTeam,
        Reason::InCareEncounter,
        Reason::InCareAppointment,
        Reason::Consent,
        Reason::BreakGlass,
        Reason::BreakGlassInvoked,
        Reason::OwnCompartment,
        Reason::OwnAudit,
        Reason::LabOrder,
        Reason::StaffDirectory,
        Reason::FrontDesk,
        Reason::SearchFiltered,
        Reason::LedgerAudit,
        Reason::AccountAdmin,
        Reason::NotInCare,
        Reason::CareRelationshipRequired,
        Reason::ConsentByPatientOnly,
        Reason::RoleForbidsResource,
        Reason::RoleForbidsAction,
        Reason::AdminNoClinical,
        Reason::LedgerOnly,
        Reason::PatientReadOnly,
        Reason::NotOwnCompartment,
        Reason::NoLabOrder,
        Reason::BreakGlassReasonRequired,
        Reason::NoCompartment,
        Reason::InconsistentTarget,
        Reason::AuditViaLedger,
        Reason::UnknownResourceType,
    ];

    /// Stable short code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InCareGeneralPractitioner => "in-care:general-practitioner",
            Reason::InCareCareTeam => "in-care:care-team",
            Reason::InCareEncounter => "in-care:encounter",
            Reason::InCareAppointment => "in-care:appointment",
            Reason::Consent => "consent",
            Reason::BreakGlass => "break-glass",
            Reason::BreakGlassInvoked => "break-glass-invoked",
            Reason::OwnCompartment => "own-compartment",
            Reason::OwnAudit => "own-audit",
            Reason::LabOrder => "lab-order",
            Reason::StaffDirectory => "staff-directory",
            Reason::FrontDesk => "front-desk",
            Reason::SearchFiltered => "search-filtered",
            Reason::LedgerAudit => "ledger-audit",
            Reason::AccountAdmin => "account-admin",
            Reason::NotInCare => "not-in-care",
            Reason::CareRelationshipRequired => "care-relationship-required",
            Reason::ConsentByPatientOnly => "consent-patient-only",
            Reason::RoleForbidsResource => "role-forbids-resource",
            Reason::RoleForbidsAction => "role-forbids-action",
            Reason::AdminNoClinical => "admin-no-clinical",
            Reason::LedgerOnly => "ledger-only",
            Reason::PatientReadOnly => "patient-read-only",
            Reason::NotOwnCompartment => "not-own-compartment",
            Reason::NoLabOrder => "no-lab-order",
            Reason::BreakGlassReasonRequired => "break-glass-reason-required",
            Reason::NoCompartment => "no-compartment",
            Reason::InconsistentTarget => "inconsistent-target",
            Reason::AuditViaLedger => "audit-via-ledger",
            Reason::UnknownResourceType => "unknown-resource-type",
        }
    }

    /// True if decisions with this reason are allowed (each reason is used one way only).
    pub const fn allows(self) -> bool {
        matches!(
            self,
            Reason::InCareGeneralPractitioner
                | Reason::InCareCareTeam
                | Reason::InCareEncounter
                | Reason::InCareAppointment
                | Reason::Consent
                | Reason::BreakGlass
                | Reason::BreakGlassInvoked
                | Reason::OwnCompartment
                | Reason::OwnAudit
                | Reason::LabOrder
                | Reason::StaffDirectory
                | Reason::FrontDesk
                | Reason::SearchFiltered
                | Reason::LedgerAudit
                | Reason::AccountAdmin
        )
    }

    fn of_basis(basis: CareBasis) -> Self {
        match basis {
            CareBasis::GeneralPractitioner => Reason::InCareGeneralPractitioner,
            CareBasis::CareTeam => Reason::InCareCareTeam,
            CareBasis::Encounter => Reason::InCareEncounter,
            CareBasis::Appointment => Reason::InCareAppointment,
            CareBasis::Consent => Reason::Consent,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`decide`]. Fields are private so only `decide` can produce one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    allowed: bool,
    reason: Reason,
    break_glass_used: bool,
    break_glass_available: bool,
}

impl Decision {
    fn allow(reason: Reason) -> Self {
        Self {
            allowed: true,
            reason,
            break_glass_used: false,
            break_glass_available: false,
        }
    }

    fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reason,
            break_glass_used: false,
            break_glass_available: false,
        }
    }

    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// True if the decision rests on break-glass (flag the ledger entry, tell the patient).
    pub fn break_glass_used(&self) -> bool {
        self.break_glass_used
    }

    /// True if the request was denied but the caller could invoke break-glass to proceed.
    pub fn break_glass_available(&self) -> bool {
        self.break_glass_available
    }
}

/// What the policy knows about a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Practitioner, Organization, Location: staff-readable, admin-maintained.
    StaffDirectory,
    /// Schedule, Slot: staff-readable, reception-maintained.
    Calendar,
    /// Patient: demographics, the compartment's own resource.
    Demographics,
    /// Appointment: in the patient's compartment, also reception's business.
    Appointment,
    /// Consent: the patient's decision.
    Consent,
    /// Chart data.
    Clinical,
    /// AuditEvent: the ledger is the audit trail.
    Audit,
    /// Anything else: denied to everyone.
    Unknown,
}

fn classify(resource_type: &str) -> Class {
    match resource_type {
        "Practitioner" | "Organization" | "Location" => Class::StaffDirectory,
        "Schedule" | "Slot" => Class::Calendar,
        "Patient" => Class::Demographics,
        "Appointment" => Class::Appointment,
        "Consent" => Class::Consent,
        // The clinical types the server stores (medvault-fhir SUPPORTED_TYPES); a new type
        // stays denied until it is deliberately classified here.
        "Observation" | "Condition" | "Encounter" | "DiagnosticReport" | "MedicationRequest"
        | "AllergyIntolerance" | "Procedure" | "Immunization" | "CareTeam" | "ServiceRequest"
        | "DocumentReference" | "Communication" => Class::Clinical,
        "AuditEvent" => Class::Audit,
        _ => Class::Unknown,
    }
}

/// Types whose writes create or change care relationships (GP, care team, encounter,
/// appointment): writing them on consent or break-glass would outlive that access.
const RELATIONSHIP_TYPES: [&str; 4] = ["Patient", "CareTeam", "Encounter", "Appointment"];

/// Decides whether `subject` may perform `action` on `target` in `ctx`. Deny by default.
///
/// See the crate documentation for how the server must build targets and use the result.
pub fn decide(subject: &Subject, action: Action, target: &Target, ctx: &Context) -> Decision {
    if action.is_fhir() && is_inconsistent(target) {
        return Decision::deny(Reason::InconsistentTarget);
    }
    match subject.identity() {
        Identity::Admin { .. } => admin(action, target),
        Identity::Auditor { .. } => auditor(action, target),
        Identity::Physician { practitioner } => {
            clinician(Role::Physician, practitioner, action, target, ctx)
        }
        Identity::Nurse { practitioner } => {
            clinician(Role::Nurse, practitioner, action, target, ctx)
        }
        Identity::Receptionist { .. } => receptionist(action, target),
        Identity::LabTechnician { lab, .. } => lab_technician(lab, action, target, ctx),
        Identity::Patient { patient } => own_compartment(patient, action, target),
    }
}

/// True if `subject` may run a search over all of `resource_type` without a patient.
///
/// For receptionists on Patient/Appointment and for staff on directory types every result
/// is readable. For clinicians and lab technicians the search is allowed but only
/// [`Reason::SearchFiltered`]: the server must drop every result for which
/// `decide(subject, Action::Read, result_target, ctx)` is not allowed (a physician searching
/// Observation without a patient sees only observations of patients they may read, and
/// break-glass is never applied implicitly to search results it has not been granted for).
/// Patients are never allowed a type-wide search: the server must scope it to their compartment.
pub fn may_search_type(subject: &Subject, resource_type: &str) -> bool {
    // Type-wide targets have no compartment, so the context (time, facts) is never consulted.
    Target::of_type(resource_type)
        .is_ok_and(|t| decide(subject, Action::Search, &t, &Context::new(0)).allowed())
}

/// A Patient resource is its own compartment, and directory data is in no compartment;
/// any other pairing comes from a confused caller and is refused rather than guessed at.
fn is_inconsistent(target: &Target) -> bool {
    match classify(target.resource_type()) {
        Class::Demographics => target
            .id()
            .is_some_and(|id| target.compartment().map(PatientId::as_str) != Some(id.as_str())),
        Class::StaffDirectory | Class::Calendar => target.compartment().is_some(),
        _ => false,
    }
}

/// Rules for types outside any patient's compartment, shared by every staff role.
fn non_patient(role: Role, class: Class, action: Action) -> Option<Decision> {
    let allowed = match (class, action) {
        (Class::Audit, _) => return Some(Decision::deny(Reason::AuditViaLedger)),
        (Class::Unknown, _) => return Some(Decision::deny(Reason::UnknownResourceType)),
        (
            Class::StaffDirectory | Class::Calendar,
            Action::Read | Action::Search | Action::History,
        ) => true,
        (Class::StaffDirectory, Action::Create | Action::Update) => role == Role::Admin,
        (Class::Calendar, Action::Create | Action::Update | Action::Delete) => {
            role == Role::Receptionist
        }
        (Class::StaffDirectory | Class::Calendar, _) => false,
        _ => return None,
    };
    Some(if allowed {
        Decision::allow(Reason::StaffDirectory)
    } else {
        Decision::deny(Reason::RoleForbidsAction)
    })
}

/// Patient data addressed type-wide: search/history proceed (results filtered), else deny.
fn type_wide(action: Action, reason: Reason) -> Decision {
    match action {
        Action::Search | Action::History => Decision::allow(reason),
        _ => Decision::deny(Reason::NoCompartment),
    }
}

fn admin(action: Action, target: &Target) -> Decision {
    match action {
        Action::ManageAccounts => Decision::allow(Reason::AccountAdmin),
        Action::ReadLedger => Decision::deny(Reason::RoleForbidsAction),
        Action::ReadOwnAudit | Action::BreakGlass => Decision::deny(Reason::AdminNoClinical),
        _ => non_patient(Role::Admin, classify(target.resource_type()), action)
            .unwrap_or(Decision::deny(Reason::AdminNoClinical)),
    }
}

fn auditor(action: Action, target: &Target) -> Decision {
    match action {
        Action::ReadLedger => Decision::allow(Reason::LedgerAudit),
        Action::ManageAccounts => Decision::deny(Reason::RoleForbidsAction),
        Action::ReadOwnAudit | Action::BreakGlass => Decision::deny(Reason::LedgerOnly),
        _ => non_patient(Role::Auditor, classify(target.resource_type()), action)
            .unwrap_or(Decision::deny(Reason::LedgerOnly)),
    }
}

fn receptionist(action: Action, target: &Target) -> Decision {
    if !action.is_fhir() {
        return Decision::deny(Reason::RoleForbidsAction);
    }
    let class = classify(target.resource_type());
    if let Some(decision) = non_patient(Role::Receptionist, class, action) {
        return decision;
    }
    match class {
        Class::Demographics | Class::Appointment => match (target.compartment(), action) {
            (None, _) => type_wide(action, Reason::FrontDesk),
            // Records are never deleted at the desk: appointments are cancelled by status.
            (Some(_), Action::Delete) => Decision::deny(Reason::RoleForbidsAction),
            (Some(_), _) => Decision::allow(Reason::FrontDesk),
        },
        _ => Decision::deny(Reason::RoleForbidsResource),
    }
}

fn clinician(
    role: Role,
    me: &PractitionerId,
    action: Action,
    target: &Target,
    ctx: &Context,
) -> Decision {
    match action {
        Action::ReadLedger | Action::ReadOwnAudit | Action::ManageAccounts => {
            return Decision::deny(Reason::RoleForbidsAction)
        }
        Action::BreakGlass => return invoke_break_glass(target, ctx),
        _ => {}
    }
    let resource_type = target.resource_type();
    let class = classify(resource_type);
    if let Some(decision) = non_patient(role, class, action) {
        return decision;
    }
    let Some(patient) = target.compartment() else {
        return type_wide(action, Reason::SearchFiltered);
    };
    if let Some(reason) = clinician_capability(role, class, resource_type, action) {
        return Decision::deny(reason);
    }
    let basis = ctx
        .facts_for(patient)
        .and_then(|f| f.basis_for(me, ctx.now_ms(), ctx.care_window_ms()));
    let granted = ctx.has_active_grant(me, patient);
    let needs_relationship = action == Action::Delete
        || (matches!(action, Action::Create | Action::Update)
            && RELATIONSHIP_TYPES.contains(&resource_type));
    match basis {
        Some(b) if b.is_care_relationship() || !needs_relationship => {
            Decision::allow(Reason::of_basis(b))
        }
        _ if needs_relationship && (basis.is_some() || granted) => {
            Decision::deny(Reason::CareRelationshipRequired)
        }
        // Break-glass opens the chart for reading (DESIGN.md: "open a patient's chart");
        // writing still needs a care relationship or consent.
        _ if granted && action.is_read() => Decision {
            break_glass_used: true,
            ..Decision::allow(Reason::BreakGlass)
        },
        _ => Decision {
            break_glass_available: action.is_read(),
            ..Decision::deny(Reason::NotInCare)
        },
    }
}

/// What a clinician's role permits on a patient-compartment type, before any relationship:
/// nurses read and record observations (no prescribing, diagnoses or deletes); physicians
/// write the chart and delete clinical entries; nobody but the patient writes Consent.
fn clinician_capability(
    role: Role,
    class: Class,
    resource_type: &str,
    action: Action,
) -> Option<Reason> {
    match action {
        Action::Create | Action::Update | Action::Delete if class == Class::Consent => {
            Some(Reason::ConsentByPatientOnly)
        }
        Action::Create | Action::Update
            if role == Role::Nurse && resource_type != "Observation" =>
        {
            Some(Reason::RoleForbidsAction)
        }
        Action::Delete if role == Role::Nurse || class != Class::Clinical => {
            Some(Reason::RoleForbidsAction)
        }
        _ => None,
    }
}

fn invoke_break_glass(target: &Target, ctx: &Context) -> Decision {
    if target.compartment().is_none() {
        return Decision::deny(Reason::NoCompartment);
    }
    if ctx.break_glass_reason().is_none() {
        return Decision::deny(Reason::BreakGlassReasonRequired);
    }
    Decision {
        break_glass_used: true,
        ..Decision::allow(Reason::BreakGlassInvoked)
    }
}

fn lab_technician(
    lab: &OrganizationId,
    action: Action,
    target: &Target,
    ctx: &Context,
) -> Decision {
    if !action.is_fhir() {
        return Decision::deny(Reason::RoleForbidsAction);
    }
    let class = classify(target.resource_type());
    if let Some(decision) = non_patient(Role::LabTechnician, class, action) {
        return decision;
    }
    let order = |id| {
        let patient = target.compartment()?;
        ctx.facts_for(patient)?
            .lab_order(id?)
            .filter(|o| o.is_addressed_to(lab))
    };
    let decide_by = |order: Option<&LabOrder>, ok: &[OrderStatus]| {
        if order.is_some_and(|o| ok.contains(&o.status())) {
            Decision::allow(Reason::LabOrder)
        } else {
            Decision::deny(Reason::NoLabOrder)
        }
    };
    match (target.resource_type(), action) {
        // The worklist: results are filtered by the Read rule below.
        ("ServiceRequest", Action::Search) => Decision::allow(Reason::SearchFiltered),
        ("ServiceRequest", Action::Read | Action::History) => match target.compartment() {
            None => type_wide(action, Reason::SearchFiltered),
            // Drafts were never sent to the lab; entered-in-error orders never existed.
            Some(_) => decide_by(
                order(target.id()),
                &[
                    OrderStatus::Active,
                    OrderStatus::OnHold,
                    OrderStatus::Revoked,
                    OrderStatus::Completed,
                    OrderStatus::Unknown,
                ],
            ),
        },
        ("Observation" | "DiagnosticReport", Action::Create | Action::Update) => {
            if target.compartment().is_none() {
                return Decision::deny(Reason::NoCompartment);
            }
            // New results only for open orders; corrections also after completion.
            let ok: &[OrderStatus] = if action == Action::Create {
                &[OrderStatus::Active]
            } else {
                &[OrderStatus::Active, OrderStatus::Completed]
            };
            decide_by(order(target.based_on()), ok)
        }
        ("ServiceRequest" | "Observation" | "DiagnosticReport", _) => {
            Decision::deny(Reason::RoleForbidsAction)
        }
        _ => Decision::deny(Reason::RoleForbidsResource),
    }
}

fn own_compartment(me: &PatientId, action: Action, target: &Target) -> Decision {
    let own = target.compartment() == Some(me);
    match action {
        Action::ReadOwnAudit if own => Decision::allow(Reason::OwnAudit),
        Action::ReadOwnAudit => Decision::deny(Reason::NotOwnCompartment),
        Action::ReadLedger | Action::ManageAccounts | Action::BreakGlass => {
            Decision::deny(Reason::RoleForbidsAction)
        }
        _ if !own => Decision::deny(Reason::NotOwnCompartment),
        _ => match classify(target.resource_type()) {
            Class::Audit => Decision::deny(Reason::AuditViaLedger),
            Class::Unknown => Decision::deny(Reason::UnknownResourceType),
            Class::StaffDirectory | Class::Calendar => Decision::deny(Reason::NotOwnCompartment),
            Class::Consent => Decision::allow(Reason::OwnCompartment),
            Class::Demographics | Class::Appointment | Class::Clinical => {
                if action.is_read() {
                    Decision::allow(Reason::OwnCompartment)
                } else {
                    Decision::deny(Reason::PatientReadOnly)
                }
            }
        },
    }
}
