//! Pure access-control decision core of medvault: roles, care relationships, consent, break-glass.
//!
//! Every request is decided by one function, [`decide`](fn@decide), deny by default, from:
//! - the [`Subject`] (role plus the Practitioner/Patient/lab it is linked to),
//! - the [`Action`] (FHIR interactions, ledger reads, account management, break-glass),
//! - the [`Target`] (resource type, the patient whose compartment it is in, ids),
//! - the [`Context`] (time, [`CareFacts`] extracted from the patient's resources,
//!   [`BreakGlassGrant`]s, a break-glass reason).
//!
//! The [`Decision`] carries a stable [`Reason`] code for the audit ledger and whether
//! break-glass was used or could be offered.
//!
//! # How the server uses it
//! - Build [`CareFacts::from_resources`] from the target patient's Patient, CareTeam,
//!   Encounter, Appointment, Consent and ServiceRequest resources (current versions).
//! - **Create**: the target's compartment is the patient the new resource will belong to (for
//!   a new Patient, the id the server assigns). For lab results, `based_on` is the
//!   ServiceRequest from `basedOn`.
//! - **Update**: decide for the stored version *and* for the new one; both must be allowed,
//!   or a resource could be moved into another compartment or re-pointed at another order.
//! - **Search**: within a patient (compartment set) decide once; type-wide (no compartment)
//!   see [`may_search_type`]. In both cases every result is filtered by
//!   `decide(Action::Read)` on that result, with facts for the result's patient in the context.
//! - **Break-glass**: `decide(Action::BreakGlass, Target::patient(p))` with the stated reason in
//!   the context; if allowed the server stores a [`BreakGlassGrant::issued_at`], notifies the
//!   patient, and passes the caller's grants in later contexts.
//!
//! The crate performs no I/O (no files, network, clock, environment or threads): the time is a
//! parameter, so every decision is deterministic and testable.
//!
//! - [`ids`]: validated identifier newtypes.
//! - [`datetime`]: strict FHIR date/dateTime parser to unix-millisecond ranges.
//! - [`subject`], [`request`]: inputs. [`facts`]: care-fact extraction. [`decide`](mod@decide): rules.

#![forbid(unsafe_code)]

pub mod datetime;
pub mod decide;
mod error;
pub mod facts;
pub mod ids;
pub mod request;
pub mod subject;

pub use datetime::{parse_datetime, DateTimeRange};
pub use decide::{decide, may_search_type, Decision, Reason};
pub use error::PolicyError;
pub use facts::{CareBasis, CareFacts, LabOrder, OrderStatus};
pub use ids::{
    is_valid_id, AccountId, BreakGlassReason, OrganizationId, PatientId, PractitionerId,
    ResourceId, MAX_BREAK_GLASS_REASON_LEN,
};
pub use request::{
    Action, BreakGlassGrant, Context, Target, DEFAULT_BREAK_GLASS_MS, DEFAULT_CARE_WINDOW_MS,
};
pub use subject::{Identity, Role, Subject};
