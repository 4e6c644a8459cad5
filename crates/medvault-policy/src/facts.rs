//! Care facts: the relationships and lab orders extracted from a patient's FHIR resources.
//!
//! The server gathers a patient's Patient, CareTeam, Encounter, Appointment, Consent and
//! ServiceRequest resources and passes them to [`CareFacts::from_resources`]. Extraction is
//! tolerant (anything it does not understand is skipped) but never generous: a resource
//! that is malformed, belongs to another patient, or uses a reference other than exactly
//! `Practitioner/<id>` / `Patient/<id>` / `Organization/<id>` contributes nothing.
//!
//! Times are kept as ranges and evaluated at decision time against [`Context`](crate::Context),
//! so one extraction can serve decisions at different times and care windows.

use serde_json::Value;

use crate::datetime::{parse_datetime, DateTimeRange};
use crate::ids::{is_valid_id, OrganizationId, PatientId, PractitionerId, ResourceId};

/// Why a clinician is in care of a patient, strongest first (the order [`CareFacts::basis_for`]
/// reports when several apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CareBasis {
    /// `Patient.generalPractitioner` references the practitioner.
    GeneralPractitioner,
    /// An active CareTeam lists the practitioner as a current participant.
    CareTeam,
    /// An ongoing or recently ended Encounter lists the practitioner as participant.
    Encounter,
    /// A booked (or attended) recent Appointment lists the practitioner as actor.
    Appointment,
    /// An active permit Consent names the practitioner.
    Consent,
}

impl CareBasis {
    /// True for relationships that arise from care itself; false for consent, which the
    /// patient may revoke at any moment and therefore must not be extendable by the grantee.
    pub const fn is_care_relationship(self) -> bool {
        !matches!(self, CareBasis::Consent)
    }
}

/// When a relationship holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// Always (general practitioner).
    Always,
    /// While `start <= now < end` (absent bounds are open).
    Between {
        start_ms: Option<i64>,
        end_ms: Option<i64>,
    },
    /// Until the care window after `end_ms` has passed; `None` means still ongoing.
    EndedAt(Option<i64>),
}

impl Validity {
    fn holds(self, now_ms: i64, care_window_ms: i64) -> bool {
        match self {
            Validity::Always => true,
            Validity::Between { start_ms, end_ms } => {
                start_ms.is_none_or(|s| s <= now_ms) && end_ms.is_none_or(|e| now_ms < e)
            }
            Validity::EndedAt(None) => true,
            Validity::EndedAt(Some(end)) => now_ms < end.saturating_add(care_window_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CareLink {
    practitioner: PractitionerId,
    basis: CareBasis,
    validity: Validity,
}

/// FHIR R4 `ServiceRequest.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// `draft`: not yet sent to the performer.
    Draft,
    /// `active`: results may be posted.
    Active,
    /// `on-hold`: suspended.
    OnHold,
    /// `revoked`: cancelled.
    Revoked,
    /// `completed`: fulfilled; corrections of its results are still accepted.
    Completed,
    /// `entered-in-error`: never valid.
    EnteredInError,
    /// `unknown`.
    Unknown,
}

impl OrderStatus {
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "draft" => OrderStatus::Draft,
            "active" => OrderStatus::Active,
            "on-hold" => OrderStatus::OnHold,
            "revoked" => OrderStatus::Revoked,
            "completed" => OrderStatus::Completed,
            "entered-in-error" => OrderStatus::EnteredInError,
            "unknown" => OrderStatus::Unknown,
            _ => return None,
        })
    }
}

/// A ServiceRequest of the patient, as far as lab access needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOrder {
    id: ResourceId,
    status: OrderStatus,
    performers: Vec<OrganizationId>,
}

impl LabOrder {
    /// The ServiceRequest id.
    pub fn id(&self) -> &ResourceId {
        &self.id
    }

    /// Its status.
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// The Organizations in `performer` (other performer kinds are ignored).
    pub fn performers(&self) -> &[OrganizationId] {
        &self.performers
    }

    /// True if `performer` references `Organization/<lab>`.
    pub fn is_addressed_to(&self, lab: &OrganizationId) -> bool {
        self.performers.contains(lab)
    }
}

/// The care relationships and lab orders of one patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareFacts {
    patient: PatientId,
    links: Vec<CareLink>,
    orders: Vec<LabOrder>,
}

impl CareFacts {
    /// No relationships and no orders: everything relationship-based is denied.
    pub fn none(patient: PatientId) -> Self {
        Self {
            patient,
            links: Vec::new(),
            orders: Vec::new(),
        }
    }

    /// Extracts the facts about `patient` from `resources` (any mix of types and patients;
    /// only resources that state they belong to `patient` count).
    pub fn from_resources(patient: &PatientId, resources: &[Value]) -> Self {
        let mut facts = Self::none(patient.clone());
        for resource in resources {
            match resource.get("resourceType").and_then(Value::as_str) {
                Some("Patient") => facts.add_patient(resource),
                Some("CareTeam") => facts.add_care_team(resource),
                Some("Encounter") => facts.add_encounter(resource),
                Some("Appointment") => facts.add_appointment(resource),
                Some("Consent") => facts.add_consent(resource),
                Some("ServiceRequest") => facts.add_service_request(resource),
                _ => {}
            }
        }
        facts.drop_ambiguous_orders();
        facts
    }

    /// The patient these facts are about.
    pub fn patient(&self) -> &PatientId {
        &self.patient
    }

    /// The strongest basis on which `practitioner` is in care of the patient at `now_ms`.
    pub fn basis_for(
        &self,
        practitioner: &PractitionerId,
        now_ms: i64,
        care_window_ms: i64,
    ) -> Option<CareBasis> {
        self.links
            .iter()
            .filter(|l| &l.practitioner == practitioner && l.validity.holds(now_ms, care_window_ms))
            .map(|l| l.basis)
            .min()
    }

    /// The patient's ServiceRequest `id`, if it was supplied and well formed.
    pub fn lab_order(&self, id: &ResourceId) -> Option<&LabOrder> {
        self.orders.iter().find(|o| &o.id == id)
    }

    fn link(&mut self, practitioner: PractitionerId, basis: CareBasis, validity: Validity) {
        self.links.push(CareLink {
            practitioner,
            basis,
            validity,
        });
    }

    /// `Patient.generalPractitioner`, only on the patient's own Patient resource.
    fn add_patient(&mut self, resource: &Value) {
        if resource.get("id").and_then(Value::as_str) != Some(self.patient.as_str()) {
            return;
        }
        for gp in array(resource, "generalPractitioner") {
            if let Some(p) = practitioner_ref(gp) {
                self.link(p, CareBasis::GeneralPractitioner, Validity::Always);
            }
        }
    }

    /// Active CareTeam of the patient; both the team's and the participant's period must
    /// cover now.
    fn add_care_team(&mut self, resource: &Value) {
        if status(resource) != Some("active") || !self.is_subject(resource, "subject") {
            return;
        }
        let Some(team) = period(resource.get("period")) else {
            return;
        };
        for participant in array(resource, "participant") {
            let Some(p) = participant.get("member").and_then(practitioner_ref) else {
                continue;
            };
            let Some(own) = period(participant.get("period")) else {
                continue;
            };
            let validity = Validity::Between {
                start_ms: later(team.start_ms, own.start_ms),
                end_ms: earlier(team.end_ms, own.end_ms),
            };
            self.link(p, CareBasis::CareTeam, validity);
        }
    }

    /// Encounter of the patient that is not cancelled or in error: ongoing if in progress or
    /// without an end, otherwise in care until the care window after its end.
    fn add_encounter(&mut self, resource: &Value) {
        const COUNTING: [&str; 6] = [
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
        ];
        // Deny-by-default: "unknown", a missing status or a new code do not count.
        let Some(state) = status(resource).filter(|s| COUNTING.contains(s)) else {
            return;
        };
        if !self.is_subject(resource, "subject") {
            return;
        }
        let Some(when) = period(resource.get("period")) else {
            return;
        };
        let ended = if state == "in-progress" {
            None
        } else {
            when.end_ms
        };
        for participant in array(resource, "participant") {
            if let Some(p) = participant.get("individual").and_then(practitioner_ref) {
                self.link(p, CareBasis::Encounter, Validity::EndedAt(ended));
            }
        }
    }

    /// Appointment with the patient as a participant that is booked or attended; in care
    /// until the care window after its end (its start if it has no end).
    fn add_appointment(&mut self, resource: &Value) {
        // proposed/pending/waitlist are not agreed yet; cancelled/noshow/entered-in-error never were.
        const COUNTING: [&str; 4] = ["booked", "arrived", "checked-in", "fulfilled"];
        if !status(resource).is_some_and(|s| COUNTING.contains(&s)) {
            return;
        }
        let participants = array(resource, "participant");
        let has_patient = participants.iter().any(|p| {
            p.get("actor")
                .and_then(|a| exact_ref(a, "Patient"))
                .is_some_and(|id| id == self.patient.as_str())
        });
        if !has_patient {
            return;
        }
        // FHIR app-3: booked appointments have start and end; without either grant nothing.
        let end = match (
            instant_end(resource.get("end")),
            instant_end(resource.get("start")),
        ) {
            (Some(Ok(end)), _) => end,
            (None, Some(Ok(start))) => start,
            _ => return,
        };
        for participant in participants {
            if participant.get("status").and_then(Value::as_str) == Some("declined") {
                continue;
            }
            if let Some(p) = participant.get("actor").and_then(practitioner_ref) {
                self.link(p, CareBasis::Appointment, Validity::EndedAt(Some(end)));
            }
        }
    }

    /// Active permit Consent of the patient naming practitioners in `provision.actor`.
    fn add_consent(&mut self, resource: &Value) {
        // Provision elements that narrow what is permitted; this policy grants whole-chart
        // access, so a consent it cannot represent exactly must grant nothing.
        const NARROWING: [&str; 8] = [
            "action",
            "securityLabel",
            "purpose",
            "class",
            "code",
            "dataPeriod",
            "data",
            "provision",
        ];
        if status(resource) != Some("active") || !self.is_subject(resource, "patient") {
            return;
        }
        if has_code(resource.get("scope"), &["research", "adr"]) {
            return;
        }
        let Some(provision) = resource.get("provision").and_then(Value::as_object) else {
            return;
        };
        match provision.get("type") {
            None => {}
            Some(Value::String(t)) if t == "permit" => {}
            _ => return,
        }
        if NARROWING.iter().any(|k| provision.contains_key(*k)) {
            return;
        }
        let Some(when) = period(provision.get("period")) else {
            return;
        };
        let actors = provision.get("actor").and_then(Value::as_array);
        for actor in actors.map(Vec::as_slice).unwrap_or_default() {
            if let Some(p) = actor.get("reference").and_then(practitioner_ref) {
                let validity = Validity::Between {
                    start_ms: when.start_ms,
                    end_ms: when.end_ms,
                };
                self.link(p, CareBasis::Consent, validity);
            }
        }
    }

    /// ServiceRequest of the patient that is an actual order, with its Organization performers.
    fn add_service_request(&mut self, resource: &Value) {
        const ORDER_INTENTS: [&str; 5] = [
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
        ];
        let Some(id) = resource
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| ResourceId::new(id).ok())
        else {
            return;
        };
        let Some(order_status) = status(resource).and_then(OrderStatus::from_code) else {
            return;
        };
        let intent = resource.get("intent").and_then(Value::as_str);
        if !intent.is_some_and(|i| ORDER_INTENTS.contains(&i))
            || !self.is_subject(resource, "subject")
        {
            return;
        }
        let performers = array(resource, "performer")
            .iter()
            .filter_map(|r| exact_ref(r, "Organization"))
            .filter_map(|id| OrganizationId::new(id).ok())
            .collect();
        self.orders.push(LabOrder {
            id,
            status: order_status,
            performers,
        });
    }

    /// Two resources claiming the same ServiceRequest id cannot both be current; trust neither.
    fn drop_ambiguous_orders(&mut self) {
        let ids: Vec<ResourceId> = self.orders.iter().map(|o| o.id.clone()).collect();
        self.orders
            .retain(|o| ids.iter().filter(|id| **id == o.id).count() == 1);
    }

    /// True if `resource[field]` is exactly a reference to this patient.
    fn is_subject(&self, resource: &Value, field: &str) -> bool {
        resource
            .get(field)
            .and_then(|r| exact_ref(r, "Patient"))
            .is_some_and(|id| id == self.patient.as_str())
    }
}

/// A parsed Period: `[start_ms, end_ms)`, open where absent.
#[derive(Debug, Clone, Copy)]
struct Interval {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
}

/// Parses an optional Period. `None` means malformed (present but not an object, a bound
/// that is not a valid dateTime, or start after end); an absent Period is unbounded.
fn period(value: Option<&Value>) -> Option<Interval> {
    let Some(value) = value else {
        return Some(Interval {
            start_ms: None,
            end_ms: None,
        });
    };
    let object = value.as_object()?;
    let bound = |key: &str| -> Option<Option<DateTimeRange>> {
        match object.get(key) {
            None => Some(None),
            Some(v) => parse_datetime(v.as_str()?).ok().map(Some),
        }
    };
    let start = bound("start")?;
    let end = bound("end")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s.start_ms() >= e.end_ms() {
            return None;
        }
    }
    Some(Interval {
        start_ms: start.map(|s| s.start_ms()),
        end_ms: end.map(|e| e.end_ms()),
    })
}

/// The end of an optional instant: `None` if absent, `Some(Err)` if malformed.
fn instant_end(value: Option<&Value>) -> Option<Result<i64, ()>> {
    let value = value?;
    Some(
        value
            .as_str()
            .and_then(|s| parse_datetime(s).ok())
            .map(|r| r.end_ms())
            .ok_or(()),
    )
}

fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn status(resource: &Value) -> Option<&str> {
    resource.get("status").and_then(Value::as_str)
}

/// `resource[key]` as an array; empty when absent or not an array.
fn array<'a>(resource: &'a Value, key: &str) -> &'a [Value] {
    resource
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The id of a Reference whose `reference` is exactly `<ty>/<id>` with a valid id.
fn exact_ref<'a>(reference: &'a Value, ty: &str) -> Option<&'a str> {
    let id = reference
        .get("reference")?
        .as_str()?
        .strip_prefix(ty)?
        .strip_prefix('/')?;
    is_valid_id(id).then_some(id)
}

fn practitioner_ref(reference: &Value) -> Option<PractitionerId> {
    exact_ref(reference, "Practitioner").and_then(|id| PractitionerId::new(id).ok())
}

/// True if a CodeableConcept has a coding whose code is one of `codes`.
fn has_code(concept: Option<&Value>, codes: &[&str]) -> bool {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("code")
                    .and_then(Value::as_str)
                    .is_some_and(|code| codes.contains(&code))
            })
        })
}
