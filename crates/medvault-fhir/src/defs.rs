//! Static element tables for the FHIR R4 datatypes and the 16 supported resource types.
//! Validation is table-driven: each element has a name, a type, a minimum cardinality,
//! whether it repeats, and an optional required code binding.

/// An element type. Primitives and datatypes are named; backbone elements carry their
/// own inline table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum T {
    Boolean,
    Integer,
    PositiveInt,
    UnsignedInt,
    Decimal,
    String,
    Code,
    Id,
    Uri,
    Url,
    Canonical,
    Markdown,
    Date,
    DateTime,
    Instant,
    Time,
    Base64Binary,
    Xhtml,
    Coding,
    CodeableConcept,
    Identifier,
    HumanName,
    Address,
    ContactPoint,
    Reference,
    Period,
    Quantity,
    SimpleQuantity,
    Range,
    Ratio,
    Annotation,
    Attachment,
    Meta,
    Narrative,
    Extension,
    Dosage,
    /// Rarely used complex types (Timing, SampledData, ...) accepted as any JSON object.
    AnyObject,
    /// A nested resource (`contained`).
    Resource,
    /// A BackboneElement with its own element table.
    Bb(&'static [El]),
    /// Consent.provision, which nests recursively and so needs a named table.
    ConsentProvision,
    /// A choice element `name[x]` with its allowed type suffixes.
    Choice(&'static [(&'static str, T)]),
    /// Extension.value[x]: any suffix, any JSON value (accepted loosely).
    OpenChoice,
}

/// One element definition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct El {
    pub name: &'static str,
    pub ty: T,
    pub min: u8,
    pub many: bool,
    pub binding: Option<&'static [&'static str]>,
}

impl El {
    /// Attaches a required code binding.
    const fn codes(self, codes: &'static [&'static str]) -> El {
        El {
            binding: Some(codes),
            ..self
        }
    }
}

/// 0..1
const fn o(name: &'static str, ty: T) -> El {
    El {
        name,
        ty,
        min: 0,
        many: false,
        binding: None,
    }
}
/// 1..1
const fn r(name: &'static str, ty: T) -> El {
    El {
        name,
        ty,
        min: 1,
        many: false,
        binding: None,
    }
}
/// 0..*
const fn m(name: &'static str, ty: T) -> El {
    El {
        name,
        ty,
        min: 0,
        many: true,
        binding: None,
    }
}
/// 1..*
const fn rm(name: &'static str, ty: T) -> El {
    El {
        name,
        ty,
        min: 1,
        many: true,
        binding: None,
    }
}

pub(crate) fn type_name(t: T) -> &'static str {
    match t {
        T::Boolean => "boolean",
        T::Integer => "integer",
        T::PositiveInt => "positiveInt",
        T::UnsignedInt => "unsignedInt",
        T::Decimal => "decimal",
        T::String => "string",
        T::Code => "code",
        T::Id => "id",
        T::Uri => "uri",
        T::Url => "url",
        T::Canonical => "canonical",
        T::Markdown => "markdown",
        T::Date => "date",
        T::DateTime => "dateTime",
        T::Instant => "instant",
        T::Time => "time",
        T::Base64Binary => "base64Binary",
        T::Xhtml => "xhtml",
        T::Coding => "Coding",
        T::CodeableConcept => "CodeableConcept",
        T::Identifier => "Identifier",
        T::HumanName => "HumanName",
        T::Address => "Address",
        T::ContactPoint => "ContactPoint",
        T::Reference => "Reference",
        T::Period => "Period",
        T::Quantity => "Quantity",
        T::SimpleQuantity => "SimpleQuantity",
        T::Range => "Range",
        T::Ratio => "Ratio",
        T::Annotation => "Annotation",
        T::Attachment => "Attachment",
        T::Meta => "Meta",
        T::Narrative => "Narrative",
        T::Extension => "Extension",
        T::Dosage => "Dosage",
        T::AnyObject => "object",
        T::Resource => "Resource",
        T::Bb(_) | T::ConsentProvision => "BackboneElement",
        T::Choice(_) | T::OpenChoice => "choice",
    }
}

// ---------------------------------------------------------------- code systems

const GENDER: &[&str] = &["male", "female", "other", "unknown"];
const NAME_USE: &[&str] = &[
    "usual",
    "official",
    "temp",
    "nickname",
    "anonymous",
    "old",
    "maiden",
];
const IDENTIFIER_USE: &[&str] = &["usual", "official", "temp", "secondary", "old"];
const ADDRESS_USE: &[&str] = &["home", "work", "temp", "old", "billing"];
const ADDRESS_TYPE: &[&str] = &["postal", "physical", "both"];
const CONTACT_SYSTEM: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];
const CONTACT_USE: &[&str] = &["home", "work", "temp", "old", "mobile"];
const QUANTITY_COMPARATOR: &[&str] = &["<", "<=", ">=", ">"];
const NARRATIVE_STATUS: &[&str] = &["generated", "extensions", "additional", "empty"];
const REQUEST_PRIORITY: &[&str] = &["routine", "urgent", "asap", "stat"];

// ---------------------------------------------------------------- choice sets

const C_VALUE: &[(&str, T)] = &[
    ("Quantity", T::Quantity),
    ("CodeableConcept", T::CodeableConcept),
    ("String", T::String),
    ("Boolean", T::Boolean),
    ("Integer", T::Integer),
    ("Range", T::Range),
    ("Ratio", T::Ratio),
    ("SampledData", T::AnyObject),
    ("Time", T::Time),
    ("DateTime", T::DateTime),
    ("Period", T::Period),
];
const C_ONSET: &[(&str, T)] = &[
    ("DateTime", T::DateTime),
    ("Age", T::Quantity),
    ("Period", T::Period),
    ("Range", T::Range),
    ("String", T::String),
];
const C_BOOL_DT: &[(&str, T)] = &[("Boolean", T::Boolean), ("DateTime", T::DateTime)];
const C_BOOL_INT: &[(&str, T)] = &[("Boolean", T::Boolean), ("Integer", T::Integer)];
const C_BOOL_CC: &[(&str, T)] = &[
    ("Boolean", T::Boolean),
    ("CodeableConcept", T::CodeableConcept),
];
const C_BOOL_REF: &[(&str, T)] = &[("Boolean", T::Boolean), ("Reference", T::Reference)];
const C_CC_REF: &[(&str, T)] = &[
    ("CodeableConcept", T::CodeableConcept),
    ("Reference", T::Reference),
];
const C_REF_STRING: &[(&str, T)] = &[("Reference", T::Reference), ("String", T::String)];
const C_POSINT_STRING: &[(&str, T)] = &[("PositiveInt", T::PositiveInt), ("String", T::String)];
const C_DT_STRING: &[(&str, T)] = &[("DateTime", T::DateTime), ("String", T::String)];
const C_DT_PERIOD: &[(&str, T)] = &[("DateTime", T::DateTime), ("Period", T::Period)];

// ---------------------------------------------------------------- datatypes

const CODING: &[El] = &[
    o("system", T::Uri),
    o("version", T::String),
    o("code", T::Code),
    o("display", T::String),
    o("userSelected", T::Boolean),
];
const CODEABLE_CONCEPT: &[El] = &[m("coding", T::Coding), o("text", T::String)];
const IDENTIFIER: &[El] = &[
    o("use", T::Code).codes(IDENTIFIER_USE),
    o("type", T::CodeableConcept),
    o("system", T::Uri),
    o("value", T::String),
    o("period", T::Period),
    o("assigner", T::Reference),
];
const HUMAN_NAME: &[El] = &[
    o("use", T::Code).codes(NAME_USE),
    o("text", T::String),
    o("family", T::String),
    m("given", T::String),
    m("prefix", T::String),
    m("suffix", T::String),
    o("period", T::Period),
];
const ADDRESS: &[El] = &[
    o("use", T::Code).codes(ADDRESS_USE),
    o("type", T::Code).codes(ADDRESS_TYPE),
    o("text", T::String),
    m("line", T::String),
    o("city", T::String),
    o("district", T::String),
    o("state", T::String),
    o("postalCode", T::String),
    o("country", T::String),
    o("period", T::Period),
];
const CONTACT_POINT: &[El] = &[
    o("system", T::Code).codes(CONTACT_SYSTEM),
    o("value", T::String),
    o("use", T::Code).codes(CONTACT_USE),
    o("rank", T::PositiveInt),
    o("period", T::Period),
];
const REFERENCE: &[El] = &[
    o("reference", T::String),
    o("type", T::Uri),
    o("identifier", T::Identifier),
    o("display", T::String),
];
const PERIOD: &[El] = &[o("start", T::DateTime), o("end", T::DateTime)];
const QUANTITY: &[El] = &[
    o("value", T::Decimal),
    o("comparator", T::Code).codes(QUANTITY_COMPARATOR),
    o("unit", T::String),
    o("system", T::Uri),
    o("code", T::Code),
];
const SIMPLE_QUANTITY: &[El] = &[
    o("value", T::Decimal),
    o("unit", T::String),
    o("system", T::Uri),
    o("code", T::Code),
];
const RANGE: &[El] = &[o("low", T::SimpleQuantity), o("high", T::SimpleQuantity)];
const RATIO: &[El] = &[o("numerator", T::Quantity), o("denominator", T::Quantity)];
const ANNOTATION: &[El] = &[
    o("author[x]", T::Choice(C_REF_STRING)),
    o("time", T::DateTime),
    r("text", T::Markdown),
];
const ATTACHMENT: &[El] = &[
    o("contentType", T::Code),
    o("language", T::Code),
    o("data", T::Base64Binary),
    o("url", T::Url),
    o("size", T::UnsignedInt),
    o("hash", T::Base64Binary),
    o("title", T::String),
    o("creation", T::DateTime),
];
const META: &[El] = &[
    o("versionId", T::Id),
    o("lastUpdated", T::Instant),
    o("source", T::Uri),
    m("profile", T::Canonical),
    m("security", T::Coding),
    m("tag", T::Coding),
];
const NARRATIVE: &[El] = &[
    r("status", T::Code).codes(NARRATIVE_STATUS),
    r("div", T::Xhtml),
];
const EXTENSION: &[El] = &[r("url", T::Uri), o("value[x]", T::OpenChoice)];
const DOSAGE: &[El] = &[
    o("sequence", T::Integer),
    o("text", T::String),
    m("additionalInstruction", T::CodeableConcept),
    o("patientInstruction", T::String),
    o("timing", T::AnyObject),
    o("asNeeded[x]", T::Choice(C_BOOL_CC)),
    o("site", T::CodeableConcept),
    o("route", T::CodeableConcept),
    o("method", T::CodeableConcept),
    m("doseAndRate", T::AnyObject),
    o("maxDosePerPeriod", T::Ratio),
    o("maxDosePerAdministration", T::SimpleQuantity),
    o("maxDosePerLifetime", T::SimpleQuantity),
];

/// Element table of a complex datatype, or None for primitives and special kinds.
/// The bool says whether `modifierExtension` is allowed (BackboneElement-derived types).
pub(crate) fn datatype_elements(t: T) -> Option<(&'static [El], bool)> {
    Some(match t {
        T::Coding => (CODING, false),
        T::CodeableConcept => (CODEABLE_CONCEPT, false),
        T::Identifier => (IDENTIFIER, false),
        T::HumanName => (HUMAN_NAME, false),
        T::Address => (ADDRESS, false),
        T::ContactPoint => (CONTACT_POINT, false),
        T::Reference => (REFERENCE, false),
        T::Period => (PERIOD, false),
        T::Quantity => (QUANTITY, false),
        T::SimpleQuantity => (SIMPLE_QUANTITY, false),
        T::Range => (RANGE, false),
        T::Ratio => (RATIO, false),
        T::Annotation => (ANNOTATION, false),
        T::Attachment => (ATTACHMENT, false),
        T::Meta => (META, false),
        T::Narrative => (NARRATIVE, false),
        T::Extension => (EXTENSION, false),
        T::Dosage => (DOSAGE, true),
        T::Bb(els) => (els, true),
        T::ConsentProvision => (CONSENT_PROVISION, true),
        _ => return None,
    })
}

// ---------------------------------------------------------------- resources

/// Elements allowed on every (domain) resource.
pub(crate) const RESOURCE_COMMON: &[El] = &[
    o("id", T::Id),
    o("meta", T::Meta),
    o("implicitRules", T::Uri),
    o("language", T::Code),
    o("text", T::Narrative),
    m("contained", T::Resource),
    m("extension", T::Extension),
    m("modifierExtension", T::Extension),
];

/// Elements allowed on every datatype / backbone element.
pub(crate) const ELEMENT_COMMON: &[El] = &[o("id", T::String), m("extension", T::Extension)];
pub(crate) const BACKBONE_EXTRA: &[El] = &[m("modifierExtension", T::Extension)];

const PATIENT: &[El] = &[
    m("identifier", T::Identifier),
    o("active", T::Boolean),
    m("name", T::HumanName),
    m("telecom", T::ContactPoint),
    o("gender", T::Code).codes(GENDER),
    o("birthDate", T::Date),
    o("deceased[x]", T::Choice(C_BOOL_DT)),
    m("address", T::Address),
    o("maritalStatus", T::CodeableConcept),
    o("multipleBirth[x]", T::Choice(C_BOOL_INT)),
    m("photo", T::Attachment),
    m(
        "contact",
        T::Bb(&[
            m("relationship", T::CodeableConcept),
            o("name", T::HumanName),
            m("telecom", T::ContactPoint),
            o("address", T::Address),
            o("gender", T::Code).codes(GENDER),
            o("organization", T::Reference),
            o("period", T::Period),
        ]),
    ),
    m(
        "communication",
        T::Bb(&[
            r("language", T::CodeableConcept),
            o("preferred", T::Boolean),
        ]),
    ),
    m("generalPractitioner", T::Reference),
    o("managingOrganization", T::Reference),
    m(
        "link",
        T::Bb(&[
            r("other", T::Reference),
            r("type", T::Code).codes(&["replaced-by", "replaces", "refer", "seealso"]),
        ]),
    ),
];

const PRACTITIONER: &[El] = &[
    m("identifier", T::Identifier),
    o("active", T::Boolean),
    m("name", T::HumanName),
    m("telecom", T::ContactPoint),
    m("address", T::Address),
    o("gender", T::Code).codes(GENDER),
    o("birthDate", T::Date),
    m("photo", T::Attachment),
    m(
        "qualification",
        T::Bb(&[
            m("identifier", T::Identifier),
            r("code", T::CodeableConcept),
            o("period", T::Period),
            o("issuer", T::Reference),
        ]),
    ),
    m("communication", T::CodeableConcept),
];

const ORGANIZATION: &[El] = &[
    m("identifier", T::Identifier),
    o("active", T::Boolean),
    m("type", T::CodeableConcept),
    o("name", T::String),
    m("alias", T::String),
    m("telecom", T::ContactPoint),
    m("address", T::Address),
    o("partOf", T::Reference),
    m(
        "contact",
        T::Bb(&[
            o("purpose", T::CodeableConcept),
            o("name", T::HumanName),
            m("telecom", T::ContactPoint),
            o("address", T::Address),
        ]),
    ),
    m("endpoint", T::Reference),
];

const ENCOUNTER_STATUS: &[&str] = &[
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
];
const ENCOUNTER: &[El] = &[
    m("identifier", T::Identifier),
    r("status", T::Code).codes(ENCOUNTER_STATUS),
    m(
        "statusHistory",
        T::Bb(&[
            r("status", T::Code).codes(ENCOUNTER_STATUS),
            r("period", T::Period),
        ]),
    ),
    r("class", T::Coding),
    m(
        "classHistory",
        T::Bb(&[r("class", T::Coding), r("period", T::Period)]),
    ),
    m("type", T::CodeableConcept),
    o("serviceType", T::CodeableConcept),
    o("priority", T::CodeableConcept),
    o("subject", T::Reference),
    m("episodeOfCare", T::Reference),
    m("basedOn", T::Reference),
    m(
        "participant",
        T::Bb(&[
            m("type", T::CodeableConcept),
            o("period", T::Period),
            o("individual", T::Reference),
        ]),
    ),
    m("appointment", T::Reference),
    o("period", T::Period),
    o("length", T::Quantity),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m(
        "diagnosis",
        T::Bb(&[
            r("condition", T::Reference),
            o("use", T::CodeableConcept),
            o("rank", T::PositiveInt),
        ]),
    ),
    m("account", T::Reference),
    o(
        "hospitalization",
        T::Bb(&[
            o("preAdmissionIdentifier", T::Identifier),
            o("origin", T::Reference),
            o("admitSource", T::CodeableConcept),
            o("reAdmission", T::CodeableConcept),
            m("dietPreference", T::CodeableConcept),
            m("specialCourtesy", T::CodeableConcept),
            m("specialArrangement", T::CodeableConcept),
            o("destination", T::Reference),
            o("dischargeDisposition", T::CodeableConcept),
        ]),
    ),
    m(
        "location",
        T::Bb(&[
            r("location", T::Reference),
            o("status", T::Code).codes(&["planned", "active", "reserved", "completed"]),
            o("physicalType", T::CodeableConcept),
            o("period", T::Period),
        ]),
    ),
    o("serviceProvider", T::Reference),
    o("partOf", T::Reference),
];

const OBS_REFERENCE_RANGE: &[El] = &[
    o("low", T::SimpleQuantity),
    o("high", T::SimpleQuantity),
    o("type", T::CodeableConcept),
    m("appliesTo", T::CodeableConcept),
    o("age", T::Range),
    o("text", T::String),
];
const OBSERVATION: &[El] = &[
    m("identifier", T::Identifier),
    m("basedOn", T::Reference),
    m("partOf", T::Reference),
    r("status", T::Code).codes(&[
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]),
    m("category", T::CodeableConcept),
    r("code", T::CodeableConcept),
    o("subject", T::Reference),
    m("focus", T::Reference),
    o("encounter", T::Reference),
    o(
        "effective[x]",
        T::Choice(&[
            ("DateTime", T::DateTime),
            ("Period", T::Period),
            ("Timing", T::AnyObject),
            ("Instant", T::Instant),
        ]),
    ),
    o("issued", T::Instant),
    m("performer", T::Reference),
    o("value[x]", T::Choice(C_VALUE)),
    o("dataAbsentReason", T::CodeableConcept),
    m("interpretation", T::CodeableConcept),
    m("note", T::Annotation),
    o("bodySite", T::CodeableConcept),
    o("method", T::CodeableConcept),
    o("specimen", T::Reference),
    o("device", T::Reference),
    m("referenceRange", T::Bb(OBS_REFERENCE_RANGE)),
    m("hasMember", T::Reference),
    m("derivedFrom", T::Reference),
    m(
        "component",
        T::Bb(&[
            r("code", T::CodeableConcept),
            o("value[x]", T::Choice(C_VALUE)),
            o("dataAbsentReason", T::CodeableConcept),
            m("interpretation", T::CodeableConcept),
            m("referenceRange", T::Bb(OBS_REFERENCE_RANGE)),
        ]),
    ),
];

const DIAGNOSTIC_REPORT: &[El] = &[
    m("identifier", T::Identifier),
    m("basedOn", T::Reference),
    r("status", T::Code).codes(&[
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]),
    m("category", T::CodeableConcept),
    r("code", T::CodeableConcept),
    o("subject", T::Reference),
    o("encounter", T::Reference),
    o("effective[x]", T::Choice(C_DT_PERIOD)),
    o("issued", T::Instant),
    m("performer", T::Reference),
    m("resultsInterpreter", T::Reference),
    m("specimen", T::Reference),
    m("result", T::Reference),
    m("imagingStudy", T::Reference),
    m(
        "media",
        T::Bb(&[o("comment", T::String), r("link", T::Reference)]),
    ),
    o("conclusion", T::String),
    m("conclusionCode", T::CodeableConcept),
    m("presentedForm", T::Attachment),
];

const CONDITION: &[El] = &[
    m("identifier", T::Identifier),
    o("clinicalStatus", T::CodeableConcept),
    o("verificationStatus", T::CodeableConcept),
    m("category", T::CodeableConcept),
    o("severity", T::CodeableConcept),
    o("code", T::CodeableConcept),
    m("bodySite", T::CodeableConcept),
    r("subject", T::Reference),
    o("encounter", T::Reference),
    o("onset[x]", T::Choice(C_ONSET)),
    o("abatement[x]", T::Choice(C_ONSET)),
    o("recordedDate", T::DateTime),
    o("recorder", T::Reference),
    o("asserter", T::Reference),
    m(
        "stage",
        T::Bb(&[
            o("summary", T::CodeableConcept),
            m("assessment", T::Reference),
            o("type", T::CodeableConcept),
        ]),
    ),
    m(
        "evidence",
        T::Bb(&[m("code", T::CodeableConcept), m("detail", T::Reference)]),
    ),
    m("note", T::Annotation),
];

const MEDICATION_REQUEST: &[El] = &[
    m("identifier", T::Identifier),
    r("status", T::Code).codes(&[
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    ]),
    o("statusReason", T::CodeableConcept),
    r("intent", T::Code).codes(&[
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    ]),
    m("category", T::CodeableConcept),
    o("priority", T::Code).codes(REQUEST_PRIORITY),
    o("doNotPerform", T::Boolean),
    o("reported[x]", T::Choice(C_BOOL_REF)),
    r("medication[x]", T::Choice(C_CC_REF)),
    r("subject", T::Reference),
    o("encounter", T::Reference),
    m("supportingInformation", T::Reference),
    o("authoredOn", T::DateTime),
    o("requester", T::Reference),
    o("performer", T::Reference),
    o("performerType", T::CodeableConcept),
    o("recorder", T::Reference),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m("instantiatesCanonical", T::Canonical),
    m("instantiatesUri", T::Uri),
    m("basedOn", T::Reference),
    o("groupIdentifier", T::Identifier),
    o("courseOfTherapyType", T::CodeableConcept),
    m("insurance", T::Reference),
    m("note", T::Annotation),
    m("dosageInstruction", T::Dosage),
    o(
        "dispenseRequest",
        T::Bb(&[
            o(
                "initialFill",
                T::Bb(&[o("quantity", T::SimpleQuantity), o("duration", T::Quantity)]),
            ),
            o("dispenseInterval", T::Quantity),
            o("validityPeriod", T::Period),
            o("numberOfRepeatsAllowed", T::UnsignedInt),
            o("quantity", T::SimpleQuantity),
            o("expectedSupplyDuration", T::Quantity),
            o("performer", T::Reference),
        ]),
    ),
    o(
        "substitution",
        T::Bb(&[
            r("allowed[x]", T::Choice(C_BOOL_CC)),
            o("reason", T::CodeableConcept),
        ]),
    ),
    o("priorPrescription", T::Reference),
    m("detectedIssue", T::Reference),
    m("eventHistory", T::Reference),
];

const ALLERGY_INTOLERANCE: &[El] = &[
    m("identifier", T::Identifier),
    o("clinicalStatus", T::CodeableConcept),
    o("verificationStatus", T::CodeableConcept),
    o("type", T::Code).codes(&["allergy", "intolerance"]),
    m("category", T::Code).codes(&["food", "medication", "environment", "biologic"]),
    o("criticality", T::Code).codes(&["low", "high", "unable-to-assess"]),
    o("code", T::CodeableConcept),
    r("patient", T::Reference),
    o("encounter", T::Reference),
    o("onset[x]", T::Choice(C_ONSET)),
    o("recordedDate", T::DateTime),
    o("recorder", T::Reference),
    o("asserter", T::Reference),
    o("lastOccurrence", T::DateTime),
    m("note", T::Annotation),
    m(
        "reaction",
        T::Bb(&[
            o("substance", T::CodeableConcept),
            rm("manifestation", T::CodeableConcept),
            o("description", T::String),
            o("onset", T::DateTime),
            o("severity", T::Code).codes(&["mild", "moderate", "severe"]),
            o("exposureRoute", T::CodeableConcept),
            m("note", T::Annotation),
        ]),
    ),
];

const APPOINTMENT: &[El] = &[
    m("identifier", T::Identifier),
    r("status", T::Code).codes(&[
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    ]),
    o("cancelationReason", T::CodeableConcept),
    m("serviceCategory", T::CodeableConcept),
    m("serviceType", T::CodeableConcept),
    m("specialty", T::CodeableConcept),
    o("appointmentType", T::CodeableConcept),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    o("priority", T::UnsignedInt),
    o("description", T::String),
    m("supportingInformation", T::Reference),
    o("start", T::Instant),
    o("end", T::Instant),
    o("minutesDuration", T::PositiveInt),
    m("slot", T::Reference),
    o("created", T::DateTime),
    o("comment", T::String),
    o("patientInstruction", T::String),
    m("basedOn", T::Reference),
    rm(
        "participant",
        T::Bb(&[
            m("type", T::CodeableConcept),
            o("actor", T::Reference),
            o("required", T::Code).codes(&["required", "optional", "information-only"]),
            r("status", T::Code).codes(&["accepted", "declined", "tentative", "needs-action"]),
            o("period", T::Period),
        ]),
    ),
    m("requestedPeriod", T::Period),
];

const PROCEDURE: &[El] = &[
    m("identifier", T::Identifier),
    m("instantiatesCanonical", T::Canonical),
    m("instantiatesUri", T::Uri),
    m("basedOn", T::Reference),
    m("partOf", T::Reference),
    r("status", T::Code).codes(&[
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ]),
    o("statusReason", T::CodeableConcept),
    o("category", T::CodeableConcept),
    o("code", T::CodeableConcept),
    r("subject", T::Reference),
    o("encounter", T::Reference),
    o(
        "performed[x]",
        T::Choice(&[
            ("DateTime", T::DateTime),
            ("Period", T::Period),
            ("String", T::String),
            ("Age", T::Quantity),
            ("Range", T::Range),
        ]),
    ),
    o("recorder", T::Reference),
    o("asserter", T::Reference),
    m(
        "performer",
        T::Bb(&[
            o("function", T::CodeableConcept),
            r("actor", T::Reference),
            o("onBehalfOf", T::Reference),
        ]),
    ),
    o("location", T::Reference),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m("bodySite", T::CodeableConcept),
    o("outcome", T::CodeableConcept),
    m("report", T::Reference),
    m("complication", T::CodeableConcept),
    m("complicationDetail", T::Reference),
    m("followUp", T::CodeableConcept),
    m("note", T::Annotation),
    m(
        "focalDevice",
        T::Bb(&[
            o("action", T::CodeableConcept),
            r("manipulated", T::Reference),
        ]),
    ),
    m("usedReference", T::Reference),
    m("usedCode", T::CodeableConcept),
];

const IMMUNIZATION: &[El] = &[
    m("identifier", T::Identifier),
    r("status", T::Code).codes(&["completed", "entered-in-error", "not-done"]),
    o("statusReason", T::CodeableConcept),
    r("vaccineCode", T::CodeableConcept),
    r("patient", T::Reference),
    o("encounter", T::Reference),
    r("occurrence[x]", T::Choice(C_DT_STRING)),
    o("recorded", T::DateTime),
    o("primarySource", T::Boolean),
    o("reportOrigin", T::CodeableConcept),
    o("location", T::Reference),
    o("manufacturer", T::Reference),
    o("lotNumber", T::String),
    o("expirationDate", T::Date),
    o("site", T::CodeableConcept),
    o("route", T::CodeableConcept),
    o("doseQuantity", T::SimpleQuantity),
    m(
        "performer",
        T::Bb(&[o("function", T::CodeableConcept), r("actor", T::Reference)]),
    ),
    m("note", T::Annotation),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    o("isSubpotent", T::Boolean),
    m("subpotentReason", T::CodeableConcept),
    m(
        "education",
        T::Bb(&[
            o("documentType", T::String),
            o("reference", T::Uri),
            o("publicationDate", T::DateTime),
            o("presentationDate", T::DateTime),
        ]),
    ),
    m("programEligibility", T::CodeableConcept),
    o("fundingSource", T::CodeableConcept),
    m(
        "reaction",
        T::Bb(&[
            o("date", T::DateTime),
            o("detail", T::Reference),
            o("reported", T::Boolean),
        ]),
    ),
    m(
        "protocolApplied",
        T::Bb(&[
            o("series", T::String),
            o("authority", T::Reference),
            m("targetDisease", T::CodeableConcept),
            r("doseNumber[x]", T::Choice(C_POSINT_STRING)),
            o("seriesDoses[x]", T::Choice(C_POSINT_STRING)),
        ]),
    ),
];

const CARE_TEAM: &[El] = &[
    m("identifier", T::Identifier),
    o("status", T::Code).codes(&[
        "proposed",
        "active",
        "suspended",
        "inactive",
        "entered-in-error",
    ]),
    m("category", T::CodeableConcept),
    o("name", T::String),
    o("subject", T::Reference),
    o("encounter", T::Reference),
    o("period", T::Period),
    m(
        "participant",
        T::Bb(&[
            m("role", T::CodeableConcept),
            o("member", T::Reference),
            o("onBehalfOf", T::Reference),
            o("period", T::Period),
        ]),
    ),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m("managingOrganization", T::Reference),
    m("telecom", T::ContactPoint),
    m("note", T::Annotation),
];

/// Consent.provision (recursive through its own `provision` element).
pub(crate) static CONSENT_PROVISION: &[El] = &[
    o("type", T::Code).codes(&["deny", "permit"]),
    o("period", T::Period),
    m(
        "actor",
        T::Bb(&[r("role", T::CodeableConcept), r("reference", T::Reference)]),
    ),
    m("action", T::CodeableConcept),
    m("securityLabel", T::Coding),
    m("purpose", T::Coding),
    m("class", T::Coding),
    m("code", T::CodeableConcept),
    o("dataPeriod", T::Period),
    m(
        "data",
        T::Bb(&[
            r("meaning", T::Code).codes(&["instance", "related", "dependents", "authoredby"]),
            r("reference", T::Reference),
        ]),
    ),
    m("provision", T::ConsentProvision),
];

const CONSENT: &[El] = &[
    m("identifier", T::Identifier),
    r("status", T::Code).codes(&[
        "draft",
        "proposed",
        "active",
        "rejected",
        "inactive",
        "entered-in-error",
    ]),
    r("scope", T::CodeableConcept),
    rm("category", T::CodeableConcept),
    o("patient", T::Reference),
    o("dateTime", T::DateTime),
    m("performer", T::Reference),
    m("organization", T::Reference),
    o(
        "source[x]",
        T::Choice(&[("Attachment", T::Attachment), ("Reference", T::Reference)]),
    ),
    m("policy", T::Bb(&[o("authority", T::Uri), o("uri", T::Uri)])),
    o("policyRule", T::CodeableConcept),
    m(
        "verification",
        T::Bb(&[
            r("verified", T::Boolean),
            o("verifiedWith", T::Reference),
            o("verificationDate", T::DateTime),
        ]),
    ),
    o("provision", T::ConsentProvision),
];

const SERVICE_REQUEST: &[El] = &[
    m("identifier", T::Identifier),
    m("instantiatesCanonical", T::Canonical),
    m("instantiatesUri", T::Uri),
    m("basedOn", T::Reference),
    m("replaces", T::Reference),
    o("requisition", T::Identifier),
    r("status", T::Code).codes(&[
        "draft",
        "active",
        "on-hold",
        "revoked",
        "completed",
        "entered-in-error",
        "unknown",
    ]),
    r("intent", T::Code).codes(&[
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    ]),
    m("category", T::CodeableConcept),
    o("priority", T::Code).codes(REQUEST_PRIORITY),
    o("doNotPerform", T::Boolean),
    o("code", T::CodeableConcept),
    m("orderDetail", T::CodeableConcept),
    o(
        "quantity[x]",
        T::Choice(&[
            ("Quantity", T::Quantity),
            ("Ratio", T::Ratio),
            ("Range", T::Range),
        ]),
    ),
    r("subject", T::Reference),
    o("encounter", T::Reference),
    o(
        "occurrence[x]",
        T::Choice(&[
            ("DateTime", T::DateTime),
            ("Period", T::Period),
            ("Timing", T::AnyObject),
        ]),
    ),
    o("asNeeded[x]", T::Choice(C_BOOL_CC)),
    o("authoredOn", T::DateTime),
    o("requester", T::Reference),
    o("performerType", T::CodeableConcept),
    m("performer", T::Reference),
    m("locationCode", T::CodeableConcept),
    m("locationReference", T::Reference),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m("insurance", T::Reference),
    m("supportingInfo", T::Reference),
    m("specimen", T::Reference),
    m("bodySite", T::CodeableConcept),
    m("note", T::Annotation),
    o("patientInstruction", T::String),
    m("relevantHistory", T::Reference),
];

const DOCUMENT_REFERENCE: &[El] = &[
    o("masterIdentifier", T::Identifier),
    m("identifier", T::Identifier),
    r("status", T::Code).codes(&["current", "superseded", "entered-in-error"]),
    o("docStatus", T::Code).codes(&["preliminary", "final", "amended", "entered-in-error"]),
    o("type", T::CodeableConcept),
    m("category", T::CodeableConcept),
    o("subject", T::Reference),
    o("date", T::Instant),
    m("author", T::Reference),
    o("authenticator", T::Reference),
    o("custodian", T::Reference),
    m(
        "relatesTo",
        T::Bb(&[
            r("code", T::Code).codes(&["replaces", "transforms", "signs", "appends"]),
            r("target", T::Reference),
        ]),
    ),
    o("description", T::String),
    m("securityLabel", T::CodeableConcept),
    rm(
        "content",
        T::Bb(&[r("attachment", T::Attachment), o("format", T::Coding)]),
    ),
    o(
        "context",
        T::Bb(&[
            m("encounter", T::Reference),
            m("event", T::CodeableConcept),
            o("period", T::Period),
            o("facilityType", T::CodeableConcept),
            o("practiceSetting", T::CodeableConcept),
            o("sourcePatientInfo", T::Reference),
            m("related", T::Reference),
        ]),
    ),
];

const COMMUNICATION: &[El] = &[
    m("identifier", T::Identifier),
    m("instantiatesCanonical", T::Uri),
    m("instantiatesUri", T::Uri),
    m("basedOn", T::Reference),
    m("partOf", T::Reference),
    m("inResponseTo", T::Reference),
    r("status", T::Code).codes(&[
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    ]),
    o("statusReason", T::CodeableConcept),
    m("category", T::CodeableConcept),
    o("priority", T::Code).codes(&["routine", "urgent", "asap", "stat"]),
    m("medium", T::CodeableConcept),
    o("subject", T::Reference),
    o("topic", T::CodeableConcept),
    m("about", T::Reference),
    o("encounter", T::Reference),
    o("sent", T::DateTime),
    o("received", T::DateTime),
    m("recipient", T::Reference),
    o("sender", T::Reference),
    m("reasonCode", T::CodeableConcept),
    m("reasonReference", T::Reference),
    m(
        "payload",
        T::Bb(&[r(
            "content[x]",
            T::Choice(&[
                ("String", T::String),
                ("Attachment", T::Attachment),
                ("Reference", T::Reference),
            ]),
        )]),
    ),
    m("note", T::Annotation),
];

/// Element table of a supported resource type.
pub(crate) fn resource_elements(resource_type: &str) -> Option<&'static [El]> {
    Some(match resource_type {
        "Patient" => PATIENT,
        "Practitioner" => PRACTITIONER,
        "Organization" => ORGANIZATION,
        "Encounter" => ENCOUNTER,
        "Observation" => OBSERVATION,
        "DiagnosticReport" => DIAGNOSTIC_REPORT,
        "Condition" => CONDITION,
        "MedicationRequest" => MEDICATION_REQUEST,
        "AllergyIntolerance" => ALLERGY_INTOLERANCE,
        "Appointment" => APPOINTMENT,
        "Procedure" => PROCEDURE,
        "Immunization" => IMMUNIZATION,
        "CareTeam" => CARE_TEAM,
        "Consent" => CONSENT,
        "ServiceRequest" => SERVICE_REQUEST,
        "DocumentReference" => DOCUMENT_REFERENCE,
        "Communication" => COMMUNICATION,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_has_a_table() {
        for t in crate::SUPPORTED_TYPES {
            assert!(resource_elements(t).is_some(), "{t}");
        }
    }

    #[test]
    fn element_names_are_unique_per_table() {
        for t in crate::SUPPORTED_TYPES {
            let els = resource_elements(t).unwrap_or_default();
            let mut names: Vec<&str> = els.iter().chain(RESOURCE_COMMON).map(|e| e.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "{t}");
        }
    }
}
