//! Search parameters, blind-index token extraction and search-query parsing.
//!
//! The server HMACs every token produced here and stores/looks up only the MACs; this
//! crate never sees keys. Index extraction ([`index_entries`]) and query parsing
//! ([`parse_search`]) must normalise identically, so both use the helpers in this file.
//!
//! Date tokens are approximate buckets (`c:` decade, `y:` year, `m:` month, `d:` day) of
//! every value, plus markers for values coarser than a day (`Y:` year-precision, `M:`
//! month-precision) and for the decades a Period spans (`P:`). A query asks for the buckets
//! of its window at one granularity plus the markers at its ends, so a day query does not
//! match every value of the year. Clauses carrying an [`ExactFilter`] must be post-filtered
//! with [`matches`] after decryption. Limitations: dates are compared by the calendar day as
//! written (timezones are ignored); token enumeration stays within years 1800..=2200, so
//! resources dated outside that window are not found by open-ended ranges.

use serde_json::Value;

use crate::datetime::{self, Precision};
use crate::refs::normalize_reference;
use crate::FhirError;

// ================================================================ definitions

/// Kind of a search parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Exact code / identifier match (`system|code`).
    Token,
    /// Case- and accent-insensitive starts-with match on words.
    String,
    /// Date range match (post-filtered exactly).
    Date,
    /// Literal reference `Type/id`.
    Reference,
}

/// One supported search parameter.
#[derive(Debug)]
pub struct SearchParamDef {
    /// The parameter name as used in URLs.
    pub name: &'static str,
    /// Its kind.
    pub kind: ParamKind,
    /// Description for the CapabilityStatement.
    pub description: &'static str,
}

const fn sp(name: &'static str, kind: ParamKind, description: &'static str) -> SearchParamDef {
    SearchParamDef {
        name,
        kind,
        description,
    }
}

use ParamKind::{Date as D, Reference as R, String as S, Token as K};

const PATIENT_REF: SearchParamDef = sp("patient", R, "The patient the resource is about");
const SUBJECT_REF: SearchParamDef = sp("subject", R, "The subject the resource is about");
const STATUS: SearchParamDef = sp("status", K, "Status of the resource");

static PATIENT_PARAMS: &[SearchParamDef] = &[
    sp("identifier", K, "A patient identifier"),
    sp("name", S, "A portion of any part of the patient's name"),
    sp("family", S, "A portion of the family name"),
    sp("given", S, "A portion of a given name"),
    sp("birthdate", D, "The patient's date of birth"),
    sp("gender", K, "Administrative gender"),
];
static PRACTITIONER_PARAMS: &[SearchParamDef] = &[
    sp("identifier", K, "A practitioner identifier"),
    sp(
        "name",
        S,
        "A portion of any part of the practitioner's name",
    ),
    sp("family", S, "A portion of the family name"),
    sp("given", S, "A portion of a given name"),
];
static ORGANIZATION_PARAMS: &[SearchParamDef] = &[
    sp("identifier", K, "An organization identifier"),
    sp("name", S, "A portion of the organization's name or alias"),
];
static OBSERVATION_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "The code of the observation"),
    sp("date", D, "Obtained date/time (effective[x])"),
    sp("status", K, "The status of the observation"),
];
static DIAGNOSTIC_REPORT_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "The code of the report"),
    sp(
        "date",
        D,
        "The clinically relevant time of the report (effective[x])",
    ),
    sp("status", K, "The status of the report"),
];
static CONDITION_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "Code for the condition"),
    sp("date", D, "Onset date (onset[x]) or recorded date"),
    sp("clinical-status", K, "The clinical status of the condition"),
];
static MEDICATION_REQUEST_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "Medication code (medicationCodeableConcept)"),
    sp("date", D, "Date the prescription was authored (authoredOn)"),
    sp("status", K, "Status of the prescription"),
];
static ENCOUNTER_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("type", K, "Specific type of encounter"),
    sp("date", D, "A date within the encounter period"),
    sp("status", K, "Status of the encounter"),
];
static ALLERGY_INTOLERANCE_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    sp("code", K, "Code of the substance or product"),
    sp("date", D, "Onset (onset[x]) or recorded date"),
    sp(
        "clinical-status",
        K,
        "The clinical status of the allergy or intolerance",
    ),
];
static PROCEDURE_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "Code identifying the procedure"),
    sp("date", D, "When the procedure was performed (performed[x])"),
    sp("status", K, "Status of the procedure"),
];
static IMMUNIZATION_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    sp("vaccine-code", K, "Vaccine product administered"),
    sp("date", D, "Vaccination administration date (occurrence[x])"),
    sp("status", K, "Immunization event status"),
];
static APPOINTMENT_PARAMS: &[SearchParamDef] = &[
    sp("patient", R, "A patient participating in the appointment"),
    sp(
        "practitioner",
        R,
        "A practitioner participating in the appointment",
    ),
    sp(
        "service-type",
        K,
        "The specific service to be performed (serviceType)",
    ),
    sp("date", D, "Appointment start"),
    sp("status", K, "The overall status of the appointment"),
];
static SERVICE_REQUEST_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    sp("code", K, "What is being requested/ordered"),
    sp("status", K, "Status of the request"),
    sp("authored", D, "Date request signed (authoredOn)"),
];
static CARE_TEAM_PARAMS: &[SearchParamDef] = &[PATIENT_REF, SUBJECT_REF, STATUS];
static CONSENT_PARAMS: &[SearchParamDef] = &[PATIENT_REF, STATUS];
static DOCUMENT_REFERENCE_PARAMS: &[SearchParamDef] = &[
    PATIENT_REF,
    SUBJECT_REF,
    STATUS,
    sp("date", D, "When the document reference was created"),
];
static COMMUNICATION_PARAMS: &[SearchParamDef] =
    &[PATIENT_REF, SUBJECT_REF, STATUS, sp("sent", D, "When sent")];

/// Search parameters supported for a resource type (empty for unsupported types).
pub fn search_params(resource_type: &str) -> &'static [SearchParamDef] {
    match resource_type {
        "Patient" => PATIENT_PARAMS,
        "Practitioner" => PRACTITIONER_PARAMS,
        "Organization" => ORGANIZATION_PARAMS,
        "Observation" => OBSERVATION_PARAMS,
        "DiagnosticReport" => DIAGNOSTIC_REPORT_PARAMS,
        "Condition" => CONDITION_PARAMS,
        "MedicationRequest" => MEDICATION_REQUEST_PARAMS,
        "Encounter" => ENCOUNTER_PARAMS,
        "AllergyIntolerance" => ALLERGY_INTOLERANCE_PARAMS,
        "Procedure" => PROCEDURE_PARAMS,
        "Immunization" => IMMUNIZATION_PARAMS,
        "Appointment" => APPOINTMENT_PARAMS,
        "ServiceRequest" => SERVICE_REQUEST_PARAMS,
        "CareTeam" => CARE_TEAM_PARAMS,
        "Consent" => CONSENT_PARAMS,
        "DocumentReference" => DOCUMENT_REFERENCE_PARAMS,
        "Communication" => COMMUNICATION_PARAMS,
        _ => &[],
    }
}

/// Whether `patient` searches of `resource_type` are answered from its `subject` tokens.
///
/// Where a type has both, `patient` is `subject` restricted to Patient references, and a
/// Patient subject gives both parameters the same value: one token for both, not two (a
/// tenth of an Observation's tokens, HMACs and posting entries). Versions indexed before
/// this carry both tokens; queries use the `subject` one, which they have too.
fn patient_is_subject(resource_type: &str) -> bool {
    search_param(resource_type, "subject").is_some()
}

/// One search parameter of a resource type, by name.
pub fn search_param(resource_type: &str, name: &str) -> Option<&'static SearchParamDef> {
    search_params(resource_type).iter().find(|p| p.name == name)
}

/// Where a parameter's values come from: dotted element paths (arrays are flattened at
/// every step). For references, the optional required target type.
enum Source {
    Paths(&'static [&'static str]),
    Refs(&'static [&'static str], Option<&'static str>),
}

fn source(resource_type: &str, param: &str) -> Option<Source> {
    use Source::{Paths as P, Refs};
    const NAME_PARTS: &[&str] = &[
        "name.family",
        "name.given",
        "name.prefix",
        "name.suffix",
        "name.text",
    ];
    Some(match (resource_type, param) {
        ("Patient" | "Practitioner", "identifier") => P(&["identifier"]),
        ("Patient" | "Practitioner", "name") => P(NAME_PARTS),
        ("Patient" | "Practitioner", "family") => P(&["name.family"]),
        ("Patient" | "Practitioner", "given") => P(&["name.given"]),
        ("Patient", "birthdate") => P(&["birthDate"]),
        ("Patient", "gender") => P(&["gender"]),
        ("Organization", "identifier") => P(&["identifier"]),
        ("Organization", "name") => P(&["name", "alias"]),
        ("AllergyIntolerance" | "Immunization" | "Consent", "patient") => {
            Refs(&["patient"], Some("Patient"))
        }
        ("Appointment", "patient") => Refs(&["participant.actor"], Some("Patient")),
        ("Appointment", "practitioner") => Refs(&["participant.actor"], Some("Practitioner")),
        (_, "patient") => Refs(&["subject"], Some("Patient")),
        (_, "subject") => Refs(&["subject"], None),
        ("MedicationRequest", "code") => P(&["medicationCodeableConcept"]),
        ("Immunization", "vaccine-code") => P(&["vaccineCode"]),
        ("Encounter", "type") => P(&["type"]),
        ("Appointment", "service-type") => P(&["serviceType"]),
        (_, "code") => P(&["code"]),
        ("Condition" | "AllergyIntolerance", "clinical-status") => P(&["clinicalStatus"]),
        (_, "status") => P(&["status"]),
        ("Observation", "date") => P(&["effectiveDateTime", "effectivePeriod", "effectiveInstant"]),
        ("DiagnosticReport", "date") => P(&["effectiveDateTime", "effectivePeriod"]),
        ("Condition", "date") => P(&["onsetDateTime", "onsetPeriod", "recordedDate"]),
        ("AllergyIntolerance", "date") => P(&["onsetDateTime", "onsetPeriod", "recordedDate"]),
        ("MedicationRequest", "date") => P(&["authoredOn"]),
        ("ServiceRequest", "authored") => P(&["authoredOn"]),
        ("Encounter", "date") => P(&["period"]),
        ("Procedure", "date") => P(&["performedDateTime", "performedPeriod"]),
        ("Immunization", "date") => P(&["occurrenceDateTime"]),
        ("Appointment", "date") => P(&["start"]),
        ("DocumentReference", "date") => P(&["date"]),
        ("Communication", "sent") => P(&["sent"]),
        _ => return None,
    })
}

/// All values at a dotted path, flattening arrays at every step.
fn collect<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for seg in path.split('.') {
        let mut next = Vec::new();
        for c in cur {
            match c.get(seg) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(x) => next.push(x),
                None => {}
            }
        }
        cur = next;
    }
    cur
}

// ================================================================ normalisation

/// Token pairs (system, code) of a Coding, CodeableConcept, Identifier or plain code.
fn token_pairs(v: &Value) -> Vec<(Option<&str>, &str)> {
    fn pair<'a>(
        sys: Option<&'a Value>,
        code: Option<&'a Value>,
    ) -> Option<(Option<&'a str>, &'a str)> {
        let code = code?.as_str()?.trim();
        let sys = sys
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty());
        (!code.is_empty()).then_some((sys, code))
    }
    match v {
        Value::String(_) => pair(None, Some(v)).into_iter().collect(),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                codings
                    .iter()
                    .filter_map(|c| pair(c.get("system"), c.get("code")))
                    .collect()
            } else if o.contains_key("code") {
                pair(o.get("system"), o.get("code")).into_iter().collect()
            } else {
                pair(o.get("system"), o.get("value")).into_iter().collect()
            }
        }
        _ => Vec::new(),
    }
}

/// Where the index side's tokens go: each is handed on at once, formatted into one reused
/// buffer (an owned `String` per token was a third of the indexing).
struct TokenSink<'a> {
    buf: &'a mut String,
    emit: &'a mut dyn FnMut(&str),
}

impl TokenSink<'_> {
    fn put(&mut self, token: &str) {
        (self.emit)(token);
    }

    fn put_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = self.buf.write_fmt(args);
        (self.emit)(self.buf);
    }

    /// `tag:` and the numbers joined by `-`, each zero-padded to its width (1 to 9): the
    /// same text as `format_args!("{tag}:{:04}-{:02}", ..)`, which still writes a number
    /// that is negative or wider than its width.
    fn put_padded(&mut self, tag: u8, fields: &[(i32, usize)]) {
        debug_assert!(fields.iter().all(|&(_, w)| (1..=9).contains(&w)));
        self.buf.clear();
        self.buf.push(char::from(tag));
        self.buf.push(':');
        for (i, &(n, width)) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push('-');
            }
            let Some(n) = u32::try_from(n)
                .ok()
                .filter(|&n| n < 10u32.pow(width as u32))
            else {
                use std::fmt::Write;
                // Writing into a String cannot fail.
                let _ = write!(self.buf, "{n:0width$}");
                continue;
            };
            let mut div = 10u32.pow(width as u32 - 1);
            while div > 0 {
                // A single decimal digit: always a valid char.
                self.buf.push(char::from(b'0' + (n / div % 10) as u8));
                div /= 10;
            }
        }
        (self.emit)(self.buf);
    }
}

fn push_token_forms(sys: Option<&str>, code: &str, out: &mut TokenSink<'_>) {
    out.put(code);
    match sys {
        Some(s) => out.put_fmt(format_args!("{s}|{code}")),
        None => out.put_fmt(format_args!("|{code}")),
    }
}

/// Maximum prefix length (in chars) for string tokens.
const MAX_PREFIX: usize = 32;

/// ASCII folding for common Latin letters with diacritics (input already lowercase).
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' | 'ĉ' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' | 'ĝ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ł' | 'ľ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'þ' => "th",
        _ => return None,
    })
}

/// Lowercases, folds diacritics and splits into words. Apostrophes are dropped so that
/// "O'Brien" and "OBrien" normalise alike; other non-alphanumerics separate words.
pub(crate) fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c == '\'' || c == '\u{2019}' {
            continue;
        }
        if let Some(f) = fold(c) {
            cur.push_str(f);
        } else if c.is_alphanumeric() {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `p:` token for the query side: the word truncated to [`MAX_PREFIX`] chars.
fn prefix_token(word: &str) -> String {
    format!("p:{}", word.chars().take(MAX_PREFIX).collect::<String>())
}

fn push_string_tokens(s: &str, out: &mut TokenSink<'_>) {
    let mut prefix = String::new();
    for w in words(s) {
        prefix.clear();
        prefix.push_str("p:");
        for c in w.chars().take(MAX_PREFIX) {
            prefix.push(c);
            out.put(&prefix);
        }
        out.put_fmt(format_args!("w:{w}"));
    }
}

// ================================================================ days

/// A calendar day (days since 1970-01-01; only the ordering is meaningful to callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i32);

impl Day {
    /// Earliest representable day (used for open range starts).
    pub const MIN: Day = Day(i32::MIN / 2);
    /// Latest representable day (used for open range ends).
    pub const MAX: Day = Day(i32::MAX / 2);

    /// The day for a valid calendar date (years 1..=9999).
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Day> {
        ((1..=9999).contains(&y)
            && (1..=12).contains(&m)
            && d >= 1
            && d <= datetime::days_in_month(y, m))
        .then(|| Day(datetime::days_from_civil(y, m, d)))
    }

    /// Year, month and day of this day.
    pub fn ymd(self) -> (i32, u32, u32) {
        datetime::civil_from_days(self.0)
    }

    /// The range of days covered by a FHIR date, dateTime or instant string at its
    /// precision (`2020` → 2020-01-01..2020-12-31). A time part is ignored, so the day is
    /// the calendar day as written.
    pub fn parse_date_prefix_of(s: &str) -> Option<(Day, Day)> {
        let p = datetime::parse_date_prefix(s.trim())?;
        range_of(&p)
    }

    fn succ(self) -> Day {
        Day(self.0.saturating_add(1))
    }

    fn pred(self) -> Day {
        Day(self.0.saturating_sub(1))
    }
}

fn range_of(p: &datetime::Parsed) -> Option<(Day, Day)> {
    Some(match p.precision {
        Precision::Year => (Day::from_ymd(p.year, 1, 1)?, Day::from_ymd(p.year, 12, 31)?),
        Precision::Month => (
            Day::from_ymd(p.year, p.month, 1)?,
            Day::from_ymd(p.year, p.month, datetime::days_in_month(p.year, p.month))?,
        ),
        Precision::Day => {
            let d = Day::from_ymd(p.year, p.month, p.day)?;
            (d, d)
        }
    })
}

/// Bucket tokens of one date string at its own precision, plus its decade.
fn push_date_tokens(s: &str, out: &mut TokenSink<'_>) -> Option<i32> {
    let p = datetime::parse_date_prefix(s.trim())?;
    // The tag, then zero-padded fields: "y:2024", "m:2024-03", "d:2024-03-07", and
    // "c:202" for the decade. Written digit by digit, without `format_args!`'s machinery:
    // every date makes four or five of them.
    let (y, m, d) = (p.year, p.month, p.day);
    out.put_padded(b'c', &[(y / 10, 3)]);
    out.put_padded(b'y', &[(y, 4)]);
    match p.precision {
        // Coarse values also say so ("Y:", "M:"): a query can then ask for the coarse values
        // of a year or month without matching every finer value in it.
        Precision::Year => out.put_padded(b'Y', &[(y, 4)]),
        Precision::Month => {
            out.put_padded(b'm', &[(y, 4), (m as i32, 2)]);
            out.put_padded(b'M', &[(y, 4), (m as i32, 2)]);
        }
        Precision::Day => {
            out.put_padded(b'm', &[(y, 4), (m as i32, 2)]);
            out.put_padded(b'd', &[(y, 4), (m as i32, 2), (d as i32, 2)]);
        }
    }
    Some(p.year)
}

/// Year window used when enumerating tokens for open-ended ranges.
const MIN_YEAR: i32 = 1800;
const MAX_YEAR: i32 = 2200;

/// Date tokens of a date string or Period object.
fn date_value_tokens(v: &Value, out: &mut TokenSink<'_>) {
    match v {
        Value::String(s) => {
            push_date_tokens(s, out);
        }
        Value::Object(o) => {
            let start = o.get("start").and_then(Value::as_str);
            let end = o.get("end").and_then(Value::as_str);
            let sy = start.and_then(|s| push_date_tokens(s, out));
            let ey = end.and_then(|s| push_date_tokens(s, out));
            // Periods: every decade they span ("P:"), so queries inside a long period find
            // it. A missing bound is open: an ongoing period spans up to the window's end.
            if sy.is_some() || ey.is_some() {
                let lo = sy.unwrap_or(MIN_YEAR).clamp(MIN_YEAR, MAX_YEAR) / 10;
                let hi = ey.unwrap_or(MAX_YEAR).clamp(MIN_YEAR, MAX_YEAR) / 10;
                for dec in lo..=hi {
                    out.put_fmt(format_args!("P:{dec:03}"));
                }
            }
        }
        _ => {}
    }
}

/// Day range of a date string or Period (missing Period bounds are open).
fn date_value_range(v: &Value) -> Option<(Day, Day)> {
    match v {
        Value::String(s) => Day::parse_date_prefix_of(s),
        Value::Object(o) => {
            let start = o
                .get("start")
                .and_then(Value::as_str)
                .map(Day::parse_date_prefix_of);
            let end = o
                .get("end")
                .and_then(Value::as_str)
                .map(Day::parse_date_prefix_of);
            match (start, end) {
                (None, None) => None,
                (Some(None), _) | (_, Some(None)) => None,
                (s, e) => Some((
                    s.flatten().map_or(Day::MIN, |r| r.0),
                    e.flatten().map_or(Day::MAX, |r| r.1),
                )),
            }
        }
        _ => None,
    }
}

// ================================================================ index extraction

/// One blind-index entry: `field` is `Type.param`, `value` the normalised token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexEntry {
    /// `Type.param`, e.g. `Patient.family`.
    pub field: String,
    /// Normalised token, e.g. `p:smi`.
    pub value: String,
}

fn param_tokens(resource: &Value, rt: &str, def: &SearchParamDef, out: &mut TokenSink<'_>) {
    let Some(src) = source(rt, def.name) else {
        return;
    };
    match src {
        Source::Paths(paths) => {
            for v in paths.iter().flat_map(|p| collect(resource, p)) {
                match def.kind {
                    ParamKind::Token => {
                        for (sys, code) in token_pairs(v) {
                            push_token_forms(sys, code, out);
                        }
                    }
                    ParamKind::String => {
                        if let Some(s) = v.as_str() {
                            push_string_tokens(s, out);
                        }
                    }
                    ParamKind::Date => date_value_tokens(v, out),
                    ParamKind::Reference => {}
                }
            }
        }
        Source::Refs(paths, target) => {
            for v in paths.iter().flat_map(|p| collect(resource, p)) {
                let Some(r) = v.get("reference").and_then(Value::as_str) else {
                    continue;
                };
                let Some(norm) = normalize_reference(r) else {
                    continue;
                };
                if target.is_none_or(|t| norm.split('/').next() == Some(t)) {
                    out.put(&norm);
                }
            }
        }
    }
}

/// Blind-index tokens for the current version of a resource: sorted, deduplicated.
/// Unsupported or malformed resources yield no entries.
pub fn index_entries(resource: &Value) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for_each_index_entry(resource, |field, value| {
        out.push(IndexEntry {
            field: field.to_owned(),
            value: value.to_owned(),
        });
    });
    out.sort();
    out.dedup();
    out
}

/// The entries of [`index_entries`] as `f(field, value)`, unsorted and possibly repeated,
/// without building them: the server hashes each into a token at once (an owned `field`
/// and `value` per entry were about a third of the time spent indexing).
pub fn for_each_index_entry(resource: &Value, mut f: impl FnMut(&str, &str)) {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return;
    };
    let (mut field, mut buf) = (String::new(), String::new());
    let skip_patient = patient_is_subject(rt);
    for def in search_params(rt) {
        if skip_patient && def.name == "patient" {
            continue;
        }
        field.clear();
        field.push_str(rt);
        field.push('.');
        field.push_str(def.name);
        let mut emit = |value: &str| f(&field, value);
        let mut sink = TokenSink {
            buf: &mut buf,
            emit: &mut emit,
        };
        param_tokens(resource, rt, def, &mut sink);
    }
}

// ================================================================ queries

/// A parsed search query. Its `Debug` (and [`Clause`]'s) names the parameters and counts
/// the values, never shows them: they are what was searched for (names, identifiers, birth
/// dates, codes).
#[derive(Clone)]
pub struct SearchQuery {
    /// The resource type searched.
    pub resource_type: String,
    /// Clauses, all of which must match (AND).
    pub clauses: Vec<Clause>,
    /// `_id` values (OR); repeated `_id` parameters intersect.
    pub ids: Option<Vec<String>>,
    /// `_lastUpdated` bounds (AND), compared by the server against its own metadata.
    pub last_updated: Vec<DateBound>,
    /// `_count` (0..=1000).
    pub count: Option<usize>,
    /// `_offset` paging cursor, default 0.
    pub offset: usize,
}

impl std::fmt::Debug for SearchQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchQuery")
            .field("resource_type", &self.resource_type)
            .field("clauses", &self.clauses)
            .field("ids", &self.ids.as_ref().map(Vec::len))
            .field("last_updated", &self.last_updated.len())
            .field("count", &self.count)
            .field("offset", &self.offset)
            .finish()
    }
}

/// One index clause.
#[derive(Clone)]
pub struct Clause {
    /// `Type.param`, e.g. `Observation.code`.
    pub field: String,
    /// Candidate tokens (OR); never empty.
    pub any_of: Vec<String>,
    /// If set, the server must also apply [`matches`] after decryption.
    pub exact: Option<ExactFilter>,
}

impl std::fmt::Debug for Clause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clause")
            .field("field", &self.field)
            .field("any_of", &self.any_of.len())
            .field("exact", &self.exact.is_some())
            .finish()
    }
}

/// Exact post-filters for clauses whose index tokens are approximate.
#[derive(Debug, Clone)]
pub enum ExactFilter {
    /// All bounds must hold for at least one of the resource's date values.
    Date(Vec<DateBound>),
}

/// Supported date comparison prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatePrefix {
    /// `eq` (default): resource range within the value's range.
    Eq,
    /// `gt`: resource range ends after the value's range.
    Gt,
    /// `ge`: resource range ends on/after the value's start.
    Ge,
    /// `lt`: resource range starts before the value's start.
    Lt,
    /// `le`: resource range starts on/before the value's end.
    Le,
}

/// One date bound: the prefix and the query value's range at its precision. Its `Debug`
/// shows the prefix only (a searched date can be a birth date).
#[derive(Clone)]
pub struct DateBound {
    /// Comparison.
    pub prefix: DatePrefix,
    /// First day covered by the query value.
    pub start: Day,
    /// Last day covered by the query value.
    pub end: Day,
}

impl std::fmt::Debug for DateBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DateBound")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl DateBound {
    /// Whether a resource date range `[rs, re]` satisfies this bound.
    pub fn accepts(&self, rs: Day, re: Day) -> bool {
        match self.prefix {
            DatePrefix::Eq => rs >= self.start && re <= self.end,
            DatePrefix::Ge => re >= self.start,
            DatePrefix::Gt => re > self.end,
            DatePrefix::Le => rs <= self.end,
            DatePrefix::Lt => rs < self.start,
        }
    }
}

/// Splits on commas not escaped with a backslash; `\,` `\|` `\$` `\\` are unescaped.
fn split_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_date_bound(name: &str, v: &str) -> Result<DateBound, FhirError> {
    let bad = || FhirError::BadParamValue(name.to_owned());
    let v = v.trim();
    let (prefix, rest) = if v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        let (p, rest) = v.split_at_checked(2).ok_or_else(bad)?;
        let prefix = match p {
            "eq" => DatePrefix::Eq,
            "gt" => DatePrefix::Gt,
            "ge" => DatePrefix::Ge,
            "lt" => DatePrefix::Lt,
            "le" => DatePrefix::Le,
            "ne" | "sa" | "eb" | "ap" => {
                let prefix = match p {
                    "ne" => "ne",
                    "sa" => "sa",
                    "eb" => "eb",
                    _ => "ap",
                };
                return Err(FhirError::UnsupportedPrefix {
                    param: name.to_owned(),
                    prefix,
                });
            }
            _ => return Err(bad()),
        };
        (prefix, rest)
    } else {
        (DatePrefix::Eq, v)
    };
    let (start, end) = Day::parse_date_prefix_of(rest).ok_or_else(bad)?;
    Ok(DateBound { prefix, start, end })
}

fn parse_token(name: &str, v: &str) -> Result<String, FhirError> {
    let bad = || FhirError::BadParamValue(name.to_owned());
    match v.split_once('|') {
        None => {
            let c = v.trim();
            if c.is_empty() {
                return Err(bad());
            }
            Ok(c.to_owned())
        }
        Some((s, c)) => {
            let (s, c) = (s.trim(), c.trim());
            if c.is_empty() {
                // `system|` (any code in a system) would need a per-system token.
                return Err(bad());
            }
            Ok(format!("{s}|{c}"))
        }
    }
}

fn parse_reference(
    name: &str,
    default_type: &str,
    target: Option<&str>,
    v: &str,
) -> Result<String, FhirError> {
    let bad = || FhirError::BadParamValue(name.to_owned());
    let v = v.trim();
    let norm = if crate::is_valid_id(v) {
        format!("{default_type}/{v}")
    } else {
        normalize_reference(v).ok_or_else(bad)?
    };
    match target {
        Some(t) if norm.split('/').next() != Some(t) => Err(bad()),
        _ => Ok(norm),
    }
}

/// Tokens covering the window allowed by a set of date bounds (see the module docs).
fn date_clause_tokens(bounds: &[DateBound]) -> Vec<String> {
    let mut lo: Option<Day> = None;
    let mut hi: Option<Day> = None;
    for b in bounds {
        let (l, h) = match b.prefix {
            DatePrefix::Eq => (Some(b.start), Some(b.end)),
            DatePrefix::Ge => (Some(b.start), None),
            DatePrefix::Gt => (Some(b.end.succ()), None),
            DatePrefix::Le => (None, Some(b.end)),
            DatePrefix::Lt => (None, Some(b.start.pred())),
        };
        if let Some(l) = l {
            lo = Some(lo.map_or(l, |x| x.max(l)));
        }
        if let Some(h) = h {
            hi = Some(hi.map_or(h, |x| x.min(h)));
        }
    }
    let (min, max) = (
        Day::from_ymd(MIN_YEAR, 1, 1),
        Day::from_ymd(MAX_YEAR, 12, 31),
    );
    let (Some(min), Some(max)) = (min, max) else {
        return Vec::new();
    };
    let mut lo = lo.unwrap_or(min).clamp(min, max);
    let mut hi = hi.unwrap_or(max).clamp(min, max);
    if lo > hi {
        // Contradictory bounds: the exact post-filter rejects everything anyway.
        std::mem::swap(&mut lo, &mut hi);
    }
    let (ly, lm, ld) = lo.ymd();
    let (hy, hm, hd) = hi.ymd();
    let months = (hy - ly) * 12 + (hm as i32 - lm as i32);
    let year_aligned = lm == 1 && ld == 1 && hm == 12 && hd == 31;
    let month_aligned = ld == 1 && hd == datetime::days_in_month(hy, hm);
    let mut out = Vec::new();
    if hy - ly > 20 {
        for dec in ly / 10..=hy / 10 {
            out.push(format!("c:{dec:03}"));
        }
    } else if year_aligned || months > 24 {
        for y in ly..=hy {
            out.push(format!("y:{y:04}"));
        }
    } else if month_aligned || hi.0 - lo.0 > 62 {
        let (mut y, mut m) = (ly, lm);
        while (y, m) <= (hy, hm) {
            out.push(format!("m:{y:04}-{m:02}"));
            (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        }
    } else {
        let mut d = lo;
        while d <= hi {
            let (y, m, dd) = d.ymd();
            out.push(format!("d:{y:04}-{m:02}-{dd:02}"));
            d = d.succ();
        }
    }
    // Values coarser than the window's ends (a year or a month) and periods spanning it are
    // candidates too, through their own markers; the exact post-filter decides.
    for (y, m) in [(ly, lm), (hy, hm)] {
        out.push(format!("Y:{y:04}"));
        out.push(format!("M:{y:04}-{m:02}"));
    }
    for dec in ly / 10..=hy / 10 {
        out.push(format!("P:{dec:03}"));
    }
    out.sort();
    out.dedup();
    out
}

/// Special parameters this server handles.
const HANDLED_SPECIAL: &[&str] = &[
    "_id",
    "_lastUpdated",
    "_count",
    "_offset",
    "_format",
    "_pretty",
];

/// FHIR R4's search modifiers (a reference's modifier may also be a resource type).
const MODIFIERS: &[&str] = &[
    "missing",
    "exact",
    "contains",
    "text",
    "not",
    "above",
    "below",
    "in",
    "not-in",
    "of-type",
    "identifier",
    "type",
];

/// Whether an error may repeat `name`: a parameter some supported type defines, or one of
/// FHIR's special parameters. Any other key came from the query as sent, and may be data.
pub fn is_known_search_name(name: &str) -> bool {
    HANDLED_SPECIAL.contains(&name)
        || UNSUPPORTED_SPECIAL.contains(&name)
        || crate::SUPPORTED_TYPES
            .iter()
            .any(|t| search_param(t, name).is_some())
}

/// Whether an error may repeat the modifier `m`: one FHIR R4 defines, or a supported
/// resource type (a reference's modifier).
pub fn is_known_modifier(m: &str) -> bool {
    MODIFIERS.contains(&m) || crate::is_supported_type(m)
}

/// The text an error repeats for a modifier it may not: none of the modifier itself.
pub const UNREPEATED_MODIFIER: &str = "(a modifier FHIR does not define; not repeated)";

fn known_name(name: &str) -> Option<String> {
    is_known_search_name(name).then(|| name.to_owned())
}

/// A known parameter name with its modifier, the modifier repeated only if it is known.
fn with_modifier(name: String, modifier: Option<&str>) -> String {
    match modifier {
        None => name,
        Some(m) if is_known_modifier(m) => format!("{name}:{m}"),
        Some(_) => format!("{name}:{UNREPEATED_MODIFIER}"),
    }
}

/// Parameters recognised as FHIR features this server does not implement.
const UNSUPPORTED_SPECIAL: &[&str] = &[
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_has",
    "_list",
    "_text",
    "_content",
    "_query",
    "_filter",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_type",
];

/// Maximum `_count`.
pub const MAX_COUNT: usize = 1000;

/// Parses percent-decoded query pairs (in URL order) for a search on `resource_type`.
///
/// Same-name parameters are ANDed (dates combine into one clause with all bounds); comma
/// separated values are ORed. String values with several words become one clause per
/// word; an OR list of multi-word strings is rejected as `BadParamValue`. `name:exact`
/// is supported approximately (whole-word, case- and accent-insensitive). Date values
/// may not be comma-separated.
pub fn parse_search(
    resource_type: &str,
    pairs: &[(String, String)],
) -> Result<SearchQuery, FhirError> {
    if !crate::is_supported_type(resource_type) {
        return Err(FhirError::UnsupportedType);
    }
    let mut q = SearchQuery {
        resource_type: resource_type.to_owned(),
        clauses: Vec::new(),
        ids: None,
        last_updated: Vec::new(),
        count: None,
        offset: 0,
    };
    for (key, value) in pairs {
        let (name, modifier) = match key.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (key.as_str(), None),
        };
        let bad = || FhirError::BadParamValue(name.to_owned());
        if name.starts_with('_') {
            if matches!(name, "_format" | "_pretty") {
                continue;
            }
            if UNSUPPORTED_SPECIAL.contains(&name) || modifier.is_some() {
                return Err(match known_name(name) {
                    Some(name) => FhirError::UnsupportedParam(with_modifier(name, modifier)),
                    None => FhirError::UnknownParam(None),
                });
            }
            match name {
                "_id" => {
                    let mut ids = Vec::new();
                    for v in split_values(value) {
                        let v = v.trim();
                        if !crate::is_valid_id(v) {
                            return Err(bad());
                        }
                        ids.push(v.to_owned());
                    }
                    q.ids = Some(match q.ids.take() {
                        Some(prev) => prev.into_iter().filter(|i| ids.contains(i)).collect(),
                        None => ids,
                    });
                }
                "_lastUpdated" => {
                    if value.contains(',') {
                        return Err(bad());
                    }
                    q.last_updated.push(parse_date_bound(name, value)?);
                }
                "_count" => {
                    let n: usize = value.trim().parse().map_err(|_| bad())?;
                    if n > MAX_COUNT {
                        return Err(bad());
                    }
                    q.count = Some(n);
                }
                "_offset" => q.offset = value.trim().parse().map_err(|_| bad())?,
                _ => return Err(FhirError::UnknownParam(known_name(name))),
            }
            continue;
        }
        let def = search_param(resource_type, name)
            .ok_or_else(|| FhirError::UnknownParam(known_name(name)))?;
        let field = format!("{resource_type}.{name}");
        let exact_string = match (def.kind, modifier) {
            (_, None) => false,
            (ParamKind::String, Some("exact")) => true,
            _ => {
                return Err(FhirError::UnsupportedParam(with_modifier(
                    name.into(),
                    modifier,
                )))
            }
        };
        match def.kind {
            ParamKind::Token => {
                let mut any_of = split_values(value)
                    .iter()
                    .map(|v| parse_token(name, v))
                    .collect::<Result<Vec<_>, _>>()?;
                any_of.sort();
                any_of.dedup();
                q.clauses.push(Clause {
                    field,
                    any_of,
                    exact: None,
                });
            }
            ParamKind::Reference => {
                let (default_type, target) = match name {
                    "patient" => ("Patient", Some("Patient")),
                    "practitioner" => ("Practitioner", Some("Practitioner")),
                    _ => ("Patient", None),
                };
                let mut any_of = split_values(value)
                    .iter()
                    .map(|v| parse_reference(name, default_type, target, v))
                    .collect::<Result<Vec<_>, _>>()?;
                any_of.sort();
                any_of.dedup();
                let field = if name == "patient" && patient_is_subject(resource_type) {
                    format!("{resource_type}.subject")
                } else {
                    field
                };
                q.clauses.push(Clause {
                    field,
                    any_of,
                    exact: None,
                });
            }
            ParamKind::String => {
                let token = |w: &str| {
                    if exact_string {
                        format!("w:{w}")
                    } else {
                        prefix_token(w)
                    }
                };
                let alternatives: Vec<Vec<String>> =
                    split_values(value).iter().map(|v| words(v)).collect();
                if alternatives.iter().any(Vec::is_empty) {
                    return Err(bad());
                }
                if let [only] = alternatives.as_slice() {
                    for w in only {
                        q.clauses.push(Clause {
                            field: field.clone(),
                            any_of: vec![token(w)],
                            exact: None,
                        });
                    }
                } else {
                    if alternatives.iter().any(|a| a.len() > 1) {
                        return Err(bad());
                    }
                    let mut any_of: Vec<String> =
                        alternatives.iter().flatten().map(|w| token(w)).collect();
                    any_of.sort();
                    any_of.dedup();
                    q.clauses.push(Clause {
                        field,
                        any_of,
                        exact: None,
                    });
                }
            }
            ParamKind::Date => {
                if value.contains(',') {
                    return Err(bad());
                }
                let bound = parse_date_bound(name, value)?;
                match q.clauses.iter_mut().find(|c| c.field == field) {
                    Some(Clause {
                        exact: Some(ExactFilter::Date(bounds)),
                        ..
                    }) => bounds.push(bound),
                    _ => q.clauses.push(Clause {
                        field,
                        any_of: Vec::new(),
                        exact: Some(ExactFilter::Date(vec![bound])),
                    }),
                }
            }
        }
    }
    for c in &mut q.clauses {
        if let Some(ExactFilter::Date(bounds)) = &c.exact {
            c.any_of = date_clause_tokens(bounds);
        }
    }
    Ok(q)
}

/// Exact post-filter, applied by the server after decryption: the resource type must
/// match, `_id` (if given) must contain the resource id, and every clause with an
/// [`ExactFilter`] must hold. Clauses without one are decided by the index alone.
pub fn matches(query: &SearchQuery, resource: &Value) -> bool {
    let rt = query.resource_type.as_str();
    if resource.get("resourceType").and_then(Value::as_str) != Some(rt) {
        return false;
    }
    if let Some(ids) = &query.ids {
        let id = resource.get("id").and_then(Value::as_str);
        if !id.is_some_and(|id| ids.iter().any(|i| i == id)) {
            return false;
        }
    }
    query.clauses.iter().all(|c| {
        let Some(ExactFilter::Date(bounds)) = &c.exact else {
            return true;
        };
        let param = c.field.split_once('.').map_or("", |(_, p)| p);
        let Some(Source::Paths(paths)) = source(rt, param) else {
            return false;
        };
        paths
            .iter()
            .flat_map(|p| collect(resource, p))
            .filter_map(date_value_range)
            .any(|(rs, re)| bounds.iter().all(|b| b.accepts(rs, re)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored date tokens must stay byte for byte what `format_args!` made when they were
    /// indexed, or searches stop finding those rows: the digit-by-digit path against it,
    /// across every width it is used with, in range and out (negative, too wide).
    /// The tokens `f` puts into a sink, in order.
    fn emitted(f: impl FnOnce(&mut TokenSink<'_>)) -> Vec<String> {
        let mut buf = String::new();
        let mut got = Vec::new();
        let mut emit = |t: &str| got.push(t.to_owned());
        f(&mut TokenSink {
            buf: &mut buf,
            emit: &mut emit,
        });
        got
    }

    #[test]
    fn padded_tokens_are_the_formatted_ones() {
        let mut want = Vec::new();
        let got = emitted(|sink| {
            let numbers = (-1_100..=1_100).chain((9_900..=10_100).chain([i32::MIN, i32::MAX]));
            for n in numbers {
                sink.put_padded(b'c', &[(n, 3)]);
                want.push(format!("c:{n:03}"));
                sink.put_padded(b'y', &[(n, 4)]);
                want.push(format!("y:{n:04}"));
                let m = n.rem_euclid(14);
                let d = n.rem_euclid(103) - 1;
                sink.put_padded(b'M', &[(n, 4), (m, 2)]);
                want.push(format!("M:{n:04}-{m:02}"));
                sink.put_padded(b'd', &[(n, 4), (m, 2), (d, 2)]);
                want.push(format!("d:{n:04}-{m:02}-{d:02}"));
            }
        });
        assert_eq!(got, want);
    }

    /// The tokens of a day, a month and a year, spelled out (what stored dates were indexed
    /// by).
    #[test]
    fn date_tokens_of_a_day_a_month_and_a_year() {
        let tokens = |s: &str| {
            emitted(|sink| {
                push_date_tokens(s, sink);
            })
        };
        assert_eq!(
            tokens("2024-03-07T10:00:00Z"),
            ["c:202", "y:2024", "m:2024-03", "d:2024-03-07"]
        );
        assert_eq!(
            tokens("0987-11"),
            ["c:098", "y:0987", "m:0987-11", "M:0987-11"]
        );
        assert_eq!(tokens("2009"), ["c:200", "y:2009", "Y:2009"]);
    }

    #[test]
    fn word_splitting() {
        assert_eq!(words("José  Núñez-Ørsted"), ["jose", "nunez", "orsted"]);
        assert_eq!(words("O'Brien"), ["obrien"]);
        assert_eq!(words("STRAßE"), ["strasse"]);
        assert!(words(" - ").is_empty());
    }

    #[test]
    fn every_param_has_a_source() {
        for t in crate::SUPPORTED_TYPES {
            for p in search_params(t) {
                assert!(source(t, p.name).is_some(), "{t}.{}", p.name);
            }
        }
    }

    /// `patient_is_subject` holds only where `patient` is read from `subject` and limited
    /// to Patients: then its tokens are exactly `subject`'s Patient tokens.
    #[test]
    fn patient_is_subject_only_where_patient_comes_from_subject() {
        for t in crate::SUPPORTED_TYPES {
            if !patient_is_subject(t) {
                continue;
            }
            assert!(search_param(t, "patient").is_some(), "{t}");
            assert!(
                matches!(
                    source(t, "patient"),
                    Some(Source::Refs(&["subject"], Some("Patient")))
                ),
                "{t}.patient"
            );
            assert!(
                matches!(source(t, "subject"), Some(Source::Refs(&["subject"], None))),
                "{t}.subject"
            );
        }
    }

    #[test]
    fn day_ranges() {
        let r = Day::parse_date_prefix_of("2020").unwrap_or((Day::MIN, Day::MIN));
        assert_eq!(r.0.ymd(), (2020, 1, 1));
        assert_eq!(r.1.ymd(), (2020, 12, 31));
        let r = Day::parse_date_prefix_of("2024-02").unwrap_or((Day::MIN, Day::MIN));
        assert_eq!(r.1.ymd(), (2024, 2, 29));
        assert!(Day::parse_date_prefix_of("2020-02-30").is_none());
        assert!(Day::from_ymd(2021, 2, 29).is_none());
    }

    #[test]
    fn date_token_budget() {
        for q in [
            "ge1000",
            "le3000",
            "2020",
            "2020-03",
            "2020-03-04",
            "ge2019-12-01",
        ] {
            let b = parse_date_bound("date", q);
            let toks = b.map(|b| date_clause_tokens(&[b])).unwrap_or_default();
            assert!(!toks.is_empty() && toks.len() <= 400, "{q}: {}", toks.len());
        }
    }
}
