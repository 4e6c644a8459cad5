//! Validation tests: valid examples pass; each kind of defect yields the expected issue,
//! and diagnostics never echo the offending value.

use medvault_fhir::{validate, Issue, IssueCode, SUPPORTED_TYPES};
use serde_json::{json, Value};

use crate::examples;

fn issues(v: &Value) -> Vec<Issue> {
    validate(v).err().unwrap_or_default()
}

/// Asserts an issue with `code` at `expression` exists and that no diagnostics contain
/// `secret` (the invalid value).
#[track_caller]
fn assert_issue(v: &Value, code: IssueCode, expression: &str, secret: &str) {
    let found = issues(v);
    assert!(
        found
            .iter()
            .any(|i| i.code == code && i.expression == expression),
        "expected {code:?} at {expression}, got {found:#?}"
    );
    for i in &found {
        assert!(
            !i.diagnostics.contains(secret) && !i.expression.contains(secret),
            "issue leaks value: {i:?}"
        );
    }
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    if let Some(o) = base.as_object_mut() {
        o.remove(key);
    }
    base
}

#[test]
fn valid_examples_pass() {
    let all = examples::all();
    assert_eq!(all.len(), SUPPORTED_TYPES.len());
    for (ex, ty) in all.iter().zip(SUPPORTED_TYPES) {
        assert_eq!(ex["resourceType"], *ty);
        assert_eq!(validate(ex), Ok(()), "{ty}");
    }
    assert_eq!(validate(&examples::blood_pressure()), Ok(()));
}

#[test]
fn minimal_resources_pass() {
    for ty in ["Patient", "Practitioner", "Organization", "CareTeam"] {
        assert_eq!(validate(&json!({"resourceType": ty})), Ok(()), "{ty}");
    }
}

#[test]
fn missing_resource_type() {
    assert_issue(
        &json!({"id": "x"}),
        IssueCode::Required,
        "Resource.resourceType",
        "x",
    );
    assert_issue(&json!([1]), IssueCode::Structure, "Resource", "1");
    assert_issue(
        &json!({"resourceType": 5}),
        IssueCode::Structure,
        "Resource.resourceType",
        "5",
    );
}

#[test]
fn unsupported_type() {
    assert_issue(
        &json!({"resourceType": "Spaceship"}),
        IssueCode::NotSupported,
        "Resource.resourceType",
        "Spaceship",
    );
}

#[test]
fn unknown_elements() {
    let v = with(examples::patient(), "favouriteColour", json!("blue-secret"));
    assert_issue(
        &v,
        IssueCode::Structure,
        "Patient.favouriteColour",
        "blue-secret",
    );
    let mut v = examples::observation();
    v["code"]["coding"][0]["flavour"] = json!("x");
    assert_issue(
        &v,
        IssueCode::Structure,
        "Observation.code.coding[0].flavour",
        "zz",
    );
    let v = with(examples::patient(), "_nothing", json!({}));
    assert_issue(&v, IssueCode::Structure, "Patient._nothing", "zz");
}

#[test]
fn wrong_json_types() {
    let v = with(examples::patient(), "active", json!("yes-secret"));
    assert_issue(&v, IssueCode::Structure, "Patient.active", "yes-secret");
    let v = with(examples::patient(), "birthDate", json!(19840229));
    assert_issue(&v, IssueCode::Structure, "Patient.birthDate", "19840229");
    let v = with(examples::patient(), "gender", json!(["female"]));
    assert_issue(&v, IssueCode::Structure, "Patient.gender", "female");
    let v = with(examples::patient(), "name", json!({"family": "Smith"}));
    assert_issue(&v, IssueCode::Structure, "Patient.name", "Smith");
    let mut v = examples::observation();
    v["valueQuantity"]["value"] = json!("72.5");
    assert_issue(
        &v,
        IssueCode::Structure,
        "Observation.valueQuantity.value",
        "72.5",
    );
    let v = with(examples::appointment(), "minutesDuration", json!(0));
    assert_issue(&v, IssueCode::Value, "Appointment.minutesDuration", "zz");
    let v = with(examples::appointment(), "minutesDuration", json!(1.5));
    assert_issue(&v, IssueCode::Value, "Appointment.minutesDuration", "1.5");
}

#[test]
fn bad_dates() {
    let v = with(examples::patient(), "birthDate", json!("2020-13-01"));
    assert_issue(&v, IssueCode::Value, "Patient.birthDate", "2020-13-01");
    let v = with(examples::patient(), "birthDate", json!("2019-02-29"));
    assert_issue(&v, IssueCode::Value, "Patient.birthDate", "2019-02-29");
    let v = with(examples::patient(), "birthDate", json!("2020-02-29"));
    assert_eq!(validate(&v), Ok(()));
    let v = with(
        examples::patient(),
        "birthDate",
        json!("2020-01-01T00:00:00Z"),
    );
    assert_issue(&v, IssueCode::Value, "Patient.birthDate", "2020-01-01");
    let v = with(
        examples::observation(),
        "effectiveDateTime",
        json!("2020-03-01T09:10:00"),
    );
    assert_issue(
        &v,
        IssueCode::Value,
        "Observation.effectiveDateTime",
        "09:10",
    );
    let v = with(examples::observation(), "issued", json!("2020-03-01"));
    assert_issue(&v, IssueCode::Value, "Observation.issued", "2020-03-01");
    let mut v = examples::encounter();
    v["period"]["end"] = json!("2020-02-30");
    assert_issue(&v, IssueCode::Value, "Encounter.period.end", "2020-02-30");
}

#[test]
fn bad_codes() {
    let v = with(examples::patient(), "gender", json!("robot-secret"));
    assert_issue(&v, IssueCode::Value, "Patient.gender", "robot-secret");
    let d = issues(&v)
        .into_iter()
        .map(|i| i.diagnostics)
        .collect::<String>();
    assert!(d.contains("male|female|other|unknown"), "{d}");
    let v = with(examples::observation(), "status", json!("done"));
    assert_issue(&v, IssueCode::Value, "Observation.status", "done");
    let v = with(examples::observation(), "status", json!(" final"));
    assert_issue(&v, IssueCode::Value, "Observation.status", " final");
    let mut v = examples::appointment();
    v["participant"][1]["status"] = json!("maybe");
    assert_issue(
        &v,
        IssueCode::Value,
        "Appointment.participant[1].status",
        "maybe",
    );
    let mut v = examples::consent();
    v["provision"]["provision"][0]["type"] = json!("allowz");
    assert_issue(
        &v,
        IssueCode::Value,
        "Consent.provision.provision[0].type",
        "allowz",
    );
    let v = with(
        examples::allergy_intolerance(),
        "category",
        json!(["pollen"]),
    );
    assert_issue(
        &v,
        IssueCode::Value,
        "AllergyIntolerance.category[0]",
        "pollen",
    );
}

#[test]
fn choice_types() {
    let v = with(examples::observation(), "valueString", json!("heavy"));
    assert_issue(&v, IssueCode::Structure, "Observation.value[x]", "heavy");
    let v = with(examples::observation(), "valueFoo", json!("x"));
    assert_issue(&v, IssueCode::Structure, "Observation.valueFoo", "zz");
    let v = with(
        without(examples::observation(), "valueQuantity"),
        "valueBoolean",
        json!(true),
    );
    assert_eq!(validate(&v), Ok(()));
    let v = without(examples::immunization(), "occurrenceDateTime");
    assert_issue(&v, IssueCode::Required, "Immunization.occurrence[x]", "zz");
}

#[test]
fn missing_required() {
    let cases: &[(Value, &str)] = &[
        (
            without(examples::observation(), "status"),
            "Observation.status",
        ),
        (without(examples::observation(), "code"), "Observation.code"),
        (
            without(examples::condition(), "subject"),
            "Condition.subject",
        ),
        (
            without(examples::medication_request(), "medicationCodeableConcept"),
            "MedicationRequest.medication[x]",
        ),
        (
            without(examples::medication_request(), "intent"),
            "MedicationRequest.intent",
        ),
        (without(examples::encounter(), "class"), "Encounter.class"),
        (
            without(examples::allergy_intolerance(), "patient"),
            "AllergyIntolerance.patient",
        ),
        (
            without(examples::appointment(), "participant"),
            "Appointment.participant",
        ),
        (
            without(examples::procedure(), "subject"),
            "Procedure.subject",
        ),
        (
            without(examples::immunization(), "vaccineCode"),
            "Immunization.vaccineCode",
        ),
        (without(examples::consent(), "category"), "Consent.category"),
        (without(examples::consent(), "scope"), "Consent.scope"),
        (
            without(examples::service_request(), "intent"),
            "ServiceRequest.intent",
        ),
        (
            without(examples::document_reference(), "content"),
            "DocumentReference.content",
        ),
        (
            without(examples::diagnostic_report(), "code"),
            "DiagnosticReport.code",
        ),
    ];
    for (v, expr) in cases {
        assert_issue(v, IssueCode::Required, expr, "zz");
    }
    let mut v = examples::document_reference();
    v["content"][0] = json!({"format": {"code": "x"}});
    assert_issue(
        &v,
        IssueCode::Required,
        "DocumentReference.content[0].attachment",
        "zz",
    );
    let mut v = examples::appointment();
    v["participant"][0] = json!({"actor": {"reference": "Patient/1"}});
    assert_issue(
        &v,
        IssueCode::Required,
        "Appointment.participant[0].status",
        "zz",
    );
}

#[test]
fn bad_ids_and_empty_content() {
    let v = with(examples::patient(), "id", json!("bad id!"));
    assert_issue(&v, IssueCode::Value, "Patient.id", "bad id!");
    let v = with(examples::patient(), "id", json!("x".repeat(65)));
    assert_issue(&v, IssueCode::Value, "Patient.id", "xxxx");
    let v = with(examples::observation(), "code", json!({}));
    assert_issue(&v, IssueCode::Structure, "Observation.code", "zz");
    let v = with(examples::patient(), "identifier", json!([]));
    assert_issue(&v, IssueCode::Structure, "Patient.identifier", "zz");
    let v = with(examples::patient(), "active", Value::Null);
    assert_issue(&v, IssueCode::Structure, "Patient.active", "zz");
}

#[test]
fn reports_all_issues() {
    let v = json!({
        "resourceType": "Observation",
        "status": "nope",
        "subject": "Patient/1",
        "effectiveDateTime": "2020-13",
        "bogus": 1
    });
    let mut found: Vec<(String, &str)> = issues(&v)
        .iter()
        .map(|i| (i.expression.clone(), i.code.as_str()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("Observation.bogus".to_owned(), "structure"),
            ("Observation.code".to_owned(), "required"),
            ("Observation.effectiveDateTime".to_owned(), "value"),
            ("Observation.status".to_owned(), "value"),
            ("Observation.subject".to_owned(), "structure"),
        ]
    );
}

#[test]
fn contained_resources() {
    let v = with(
        examples::observation(),
        "contained",
        json!([{"resourceType": "Patient", "id": "p1", "gender": "dragon"}]),
    );
    assert_issue(
        &v,
        IssueCode::Value,
        "Observation.contained[0].gender",
        "dragon",
    );
    let v = with(examples::observation(), "contained", json!([{"id": "p1"}]));
    assert_issue(
        &v,
        IssueCode::Required,
        "Observation.contained[0].resourceType",
        "p1",
    );
    let v = with(
        examples::observation(),
        "contained",
        json!({"resourceType": "Patient"}),
    );
    assert_issue(&v, IssueCode::Structure, "Observation.contained", "zz");
    let v = with(
        examples::observation(),
        "contained",
        json!([{"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]}]),
    );
    assert_issue(
        &v,
        IssueCode::Invalid,
        "Observation.contained[0].contained",
        "zz",
    );
    let v = with(
        examples::observation(),
        "contained",
        json!([{"resourceType": "Patient", "id": "p1"}]),
    );
    assert_eq!(validate(&v), Ok(()));
}

#[test]
fn datatypes_are_checked_recursively() {
    let mut v = examples::patient();
    v["telecom"][0]["system"] = json!("pigeon");
    assert_issue(&v, IssueCode::Value, "Patient.telecom[0].system", "pigeon");
    let mut v = examples::patient();
    v["extension"][0] = json!({"valueCode": "F"});
    assert_issue(&v, IssueCode::Required, "Patient.extension[0].url", "zz");
    let mut v = examples::patient();
    v["text"]["div"] = json!("plain text");
    assert_issue(&v, IssueCode::Value, "Patient.text.div", "plain text");
    let mut v = examples::diagnostic_report();
    v["presentedForm"][0]["data"] = json!("not base64!");
    assert_issue(
        &v,
        IssueCode::Value,
        "DiagnosticReport.presentedForm[0].data",
        "base64!",
    );
    let mut v = examples::observation();
    v["code"]["coding"][0]["system"] = json!("http://loinc org");
    assert_issue(
        &v,
        IssueCode::Value,
        "Observation.code.coding[0].system",
        "loinc org",
    );
    let mut v = examples::medication_request();
    v["dosageInstruction"][0]["doseAndRate"] = json!({"doseQuantity": {}});
    assert_issue(
        &v,
        IssueCode::Structure,
        "MedicationRequest.dosageInstruction[0].doseAndRate",
        "zz",
    );
    let mut v = examples::consent();
    v["provision"]["actor"][0]["reference"] = json!("Organization/org-1");
    assert_issue(
        &v,
        IssueCode::Structure,
        "Consent.provision.actor[0].reference",
        "org-1",
    );
    let mut v = examples::encounter();
    v["period"] = json!({"start": "2020-03-02", "end": "2020-03-01"});
    assert_issue(&v, IssueCode::Invalid, "Encounter.period", "zz");
}
