//! Deterministic synthetic test data: transaction Bundles of patients with encounters,
//! observations, conditions and medication requests (used by `gen`, `bench` and tests).

use serde_json::{json, Value};

/// A tiny deterministic generator (xorshift); test data only, never keys.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

const FAMILY: &[&str] = &[
    "Smith",
    "García",
    "Nguyen",
    "Okafor",
    "Müller",
    "Kowalski",
    "Haddad",
    "Tanaka",
    "Silva",
    "Johansson",
];
const GIVEN: &[&str] = &[
    "Ana", "John", "Mei", "Chidi", "Lena", "Piotr", "Yusuf", "Aiko", "Rafael", "Ingrid",
];
const LOINC: &[(&str, &str, &str)] = &[
    ("8867-4", "Heart rate", "/min"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    ("29463-7", "Body weight", "kg"),
    ("2339-0", "Glucose", "mg/dL"),
];
const SNOMED: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
];

/// One transaction Bundle with `patients` patients, each with one encounter, `obs` observations,
/// one condition and one medication request. Returns the bundle and its resource count.
pub fn transaction_bundle(seed: u64, patients: usize, obs: usize) -> (Value, usize) {
    let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut entries = Vec::new();
    for p in 0..patients {
        let pid = format!("urn:uuid:{:08x}-0000-4000-8000-{:012x}", seed as u32, p);
        let year = rng.range(1930, 2020);
        let month = rng.range(1, 12);
        let day = rng.range(1, 28);
        entries.push(json!({
            "fullUrl": pid,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": format!("MRN-{seed}-{p}-{}", rng.next() % 100_000)}],
                "name": [{"use": "official", "family": rng.pick(FAMILY), "given": [rng.pick(GIVEN)]}],
                "gender": rng.pick(&["male", "female", "other", "unknown"]),
                "birthDate": format!("{year:04}-{month:02}-{day:02}"),
                "address": [{"line": [format!("{} Main Street", rng.range(1, 999))], "city": "Springfield", "postalCode": format!("{:05}", rng.range(10000, 99999)), "country": "US"}],
            },
            "request": {"method": "POST", "url": "Patient"},
        }));
        let enc = format!("urn:uuid:{:08x}-0001-4000-8000-{:012x}", seed as u32, p);
        let date = format!(
            "20{:02}-{:02}-{:02}",
            rng.range(15, 25),
            rng.range(1, 12),
            rng.range(1, 28)
        );
        entries.push(json!({
            "fullUrl": enc,
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": pid},
                "period": {"start": format!("{date}T09:00:00Z"), "end": format!("{date}T09:30:00Z")},
            },
            "request": {"method": "POST", "url": "Encounter"},
        }));
        for _ in 0..obs {
            let (code, display, unit) = LOINC[(rng.next() % LOINC.len() as u64) as usize];
            entries.push(json!({
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                    "subject": {"reference": pid},
                    "encounter": {"reference": enc},
                    "effectiveDateTime": format!("{date}T09:{:02}:00Z", rng.range(0, 29)),
                    "valueQuantity": {"value": rng.range(40, 180), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
                },
                "request": {"method": "POST", "url": "Observation"},
            }));
        }
        let (code, display) = SNOMED[(rng.next() % SNOMED.len() as u64) as usize];
        entries.push(json!({
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
                "subject": {"reference": pid},
                "recordedDate": date,
            },
            "request": {"method": "POST", "url": "Condition"},
        }));
        entries.push(json!({
            "resource": {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975", "display": "metformin 500 MG Oral Tablet"}]},
                "subject": {"reference": pid},
                "authoredOn": date,
            },
            "request": {"method": "POST", "url": "MedicationRequest"},
        }));
    }
    let n = entries.len();
    (
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        n,
    )
}
