//! Search tests: index tokens (snapshots), query parsing (snapshots), errors and the
//! exact date post-filter.

use expect_test::{expect, Expect};
use medvault_fhir::{
    index_entries, matches, parse_search, search_param, search_params, FhirError, ParamKind,
    SUPPORTED_TYPES,
};
use serde_json::{json, Value};

use crate::examples;

fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
    q.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn index_text(v: &Value) -> String {
    index_entries(v)
        .iter()
        .map(|e| format!("{} = {}\n", e.field, e.value))
        .collect()
}

fn query_text(rt: &str, q: &[(&str, &str)]) -> String {
    match parse_search(rt, &pairs(q)) {
        Ok(q) => {
            let mut s = String::new();
            for c in &q.clauses {
                s.push_str(&format!(
                    "{} exact={} any_of={:?}\n",
                    c.field,
                    c.exact.is_some(),
                    c.any_of
                ));
            }
            s.push_str(&format!(
                "ids={:?} last_updated={} count={:?} offset={}\n",
                q.ids,
                q.last_updated.len(),
                q.count,
                q.offset
            ));
            s
        }
        Err(e) => format!("error: {e:?}\n"),
    }
}

fn check_query(rt: &str, q: &[(&str, &str)], expect: Expect) {
    expect.assert_eq(&query_text(rt, q));
}

#[test]
fn params_table() {
    for t in SUPPORTED_TYPES {
        assert!(!search_params(t).is_empty(), "{t}");
    }
    assert_eq!(
        search_param("Patient", "family").map(|p| p.kind),
        Some(ParamKind::String)
    );
    assert_eq!(
        search_param("Immunization", "vaccine-code").map(|p| p.kind),
        Some(ParamKind::Token)
    );
    assert!(search_param("Immunization", "subject").is_none());
    assert!(search_param("AllergyIntolerance", "subject").is_none());
    assert!(search_param("Encounter", "code").is_none());
    assert!(search_params("Bundle").is_empty());
}

#[test]
fn patient_index_snapshot() {
    let mut p = examples::patient();
    p["name"] = json!([{"family": "Núñez", "given": ["Jo"]}]);
    expect![[r#"
        Patient.birthdate = c:198
        Patient.birthdate = d:1984-02-29
        Patient.birthdate = m:1984-02
        Patient.birthdate = y:1984
        Patient.family = p:n
        Patient.family = p:nu
        Patient.family = p:nun
        Patient.family = p:nune
        Patient.family = p:nunez
        Patient.family = w:nunez
        Patient.gender = female
        Patient.gender = |female
        Patient.given = p:j
        Patient.given = p:jo
        Patient.given = w:jo
        Patient.identifier = 7c2a1c3e
        Patient.identifier = MRN-0042
        Patient.identifier = http://hospital.smarthealthit.org|MRN-0042
        Patient.identifier = https://github.com/synthetichealth/synthea|7c2a1c3e
        Patient.name = p:j
        Patient.name = p:jo
        Patient.name = p:n
        Patient.name = p:nu
        Patient.name = p:nun
        Patient.name = p:nune
        Patient.name = p:nunez
        Patient.name = w:jo
        Patient.name = w:nunez
    "#]]
    .assert_eq(&index_text(&p));
}

#[test]
fn observation_index_snapshot() {
    expect![[r#"
        Observation.code = 29463-7
        Observation.code = http://loinc.org|29463-7
        Observation.date = c:202
        Observation.date = d:2020-03-01
        Observation.date = m:2020-03
        Observation.date = y:2020
        Observation.status = final
        Observation.status = |final
        Observation.subject = Patient/pat-1
    "#]]
    .assert_eq(&index_text(&examples::observation()));
}

#[test]
fn period_index_snapshot() {
    let mut e = examples::encounter();
    e["period"] = json!({"start": "1999-12", "end": "2021"});
    let dates: String = index_entries(&e)
        .iter()
        .filter(|x| x.field == "Encounter.date")
        .map(|x| format!("{} ", x.value))
        .collect();
    expect!["M:1999-12 P:199 P:200 P:201 P:202 Y:2021 c:199 c:202 m:1999-12 y:1999 y:2021 "]
        .assert_eq(&dates);
}

/// Every example with a `patient` parameter is found by `patient=pat-1`: the query's
/// token is among its entries (under `subject` where the type has it, and indexed once).
#[test]
fn every_example_is_found_by_its_patient_where_applicable() {
    for ex in examples::all() {
        let rt = ex["resourceType"].as_str().unwrap_or_default().to_owned();
        let entries = index_entries(&ex);
        if search_param(&rt, "patient").is_none() {
            assert!(
                !entries
                    .iter()
                    .any(|e| e.value == "Patient/pat-1" && e.field.ends_with(".patient")),
                "{rt}"
            );
            continue;
        }
        let query = parse_search(&rt, &pairs(&[("patient", "pat-1")]));
        let Ok([clause]) = query.as_ref().map(|q| q.clauses.as_slice()) else {
            panic!("{rt}: {query:?}")
        };
        assert_eq!(clause.any_of, ["Patient/pat-1"], "{rt}");
        assert!(
            entries
                .iter()
                .any(|e| e.field == clause.field && e.value == "Patient/pat-1"),
            "{rt}: {} not indexed",
            clause.field
        );
        let fields: Vec<&str> = entries
            .iter()
            .filter(|e| e.value == "Patient/pat-1")
            .map(|e| e.field.as_str())
            .collect();
        assert_eq!(
            fields.len(),
            1,
            "{rt}: the patient is indexed once, not as {fields:?}"
        );
    }
}

#[test]
fn query_snapshots() {
    check_query(
        "Patient",
        &[
            ("family", "NÚÑEZ"),
            ("given", "Mar Jo"),
            ("gender", "female"),
            ("_count", "10"),
        ],
        expect![[r#"
            Patient.family exact=false any_of=["p:nunez"]
            Patient.given exact=false any_of=["p:mar"]
            Patient.given exact=false any_of=["p:jo"]
            Patient.gender exact=false any_of=["female"]
            ids=None last_updated=0 count=Some(10) offset=0
        "#]],
    );
    check_query(
        "Observation",
        &[
            ("patient", "pat-1"),
            ("code", "http://loinc.org|29463-7,|abc,8480-6"),
            ("_format", "json"),
            ("_id", "a,b"),
            ("_id", "b,c"),
            ("_offset", "20"),
        ],
        expect![[r#"
            Observation.subject exact=false any_of=["Patient/pat-1"]
            Observation.code exact=false any_of=["8480-6", "http://loinc.org|29463-7", "|abc"]
            ids=Some(["b"]) last_updated=0 count=None offset=20
        "#]],
    );
    check_query(
        "Observation",
        &[("date", "2020-03")],
        expect![[r#"
            Observation.date exact=true any_of=["M:2020-03", "P:202", "Y:2020", "m:2020-03"]
            ids=None last_updated=0 count=None offset=0
        "#]],
    );
    check_query(
        "Observation",
        &[("date", "2020-03-04")],
        expect![[r#"
            Observation.date exact=true any_of=["M:2020-03", "P:202", "Y:2020", "d:2020-03-04"]
            ids=None last_updated=0 count=None offset=0
        "#]],
    );
    check_query(
        "Observation",
        &[
            ("date", "ge2020-01-01"),
            ("date", "le2021-12-31"),
            ("_lastUpdated", "gt2024"),
        ],
        expect![[r#"
            Observation.date exact=true any_of=["M:2020-01", "M:2021-12", "P:202", "Y:2020", "Y:2021", "y:2020", "y:2021"]
            ids=None last_updated=1 count=None offset=0
        "#]],
    );
    check_query(
        "Observation",
        &[("date", "ge2019-11-20"), ("date", "lt2020-01-10")],
        expect![[r#"
            Observation.date exact=true any_of=["M:2019-11", "M:2020-01", "P:201", "P:202", "Y:2019", "Y:2020", "d:2019-11-20", "d:2019-11-21", "d:2019-11-22", "d:2019-11-23", "d:2019-11-24", "d:2019-11-25", "d:2019-11-26", "d:2019-11-27", "d:2019-11-28", "d:2019-11-29", "d:2019-11-30", "d:2019-12-01", "d:2019-12-02", "d:2019-12-03", "d:2019-12-04", "d:2019-12-05", "d:2019-12-06", "d:2019-12-07", "d:2019-12-08", "d:2019-12-09", "d:2019-12-10", "d:2019-12-11", "d:2019-12-12", "d:2019-12-13", "d:2019-12-14", "d:2019-12-15", "d:2019-12-16", "d:2019-12-17", "d:2019-12-18", "d:2019-12-19", "d:2019-12-20", "d:2019-12-21", "d:2019-12-22", "d:2019-12-23", "d:2019-12-24", "d:2019-12-25", "d:2019-12-26", "d:2019-12-27", "d:2019-12-28", "d:2019-12-29", "d:2019-12-30", "d:2019-12-31", "d:2020-01-01", "d:2020-01-02", "d:2020-01-03", "d:2020-01-04", "d:2020-01-05", "d:2020-01-06", "d:2020-01-07", "d:2020-01-08", "d:2020-01-09"]
            ids=None last_updated=0 count=None offset=0
        "#]],
    );
    check_query(
        "Observation",
        &[
            ("subject", "https://x.org/fhir/Group/g1"),
            ("subject", "p2"),
        ],
        expect![[r#"
        Observation.subject exact=false any_of=["Group/g1"]
        Observation.subject exact=false any_of=["Patient/p2"]
        ids=None last_updated=0 count=None offset=0
    "#]],
    );
    check_query(
        "Appointment",
        &[("practitioner", "prac-1"), ("date", "2021-04")],
        expect![[r#"
            Appointment.practitioner exact=false any_of=["Practitioner/prac-1"]
            Appointment.date exact=true any_of=["M:2021-04", "P:202", "Y:2021", "m:2021-04"]
            ids=None last_updated=0 count=None offset=0
        "#]],
    );
    check_query(
        "Patient",
        &[("name:exact", "Smith"), ("name", "smith,jones")],
        expect![[r#"
        Patient.name exact=false any_of=["w:smith"]
        Patient.name exact=false any_of=["p:jones", "p:smith"]
        ids=None last_updated=0 count=None offset=0
    "#]],
    );
}

/// Keys that carry data (a value joined to its name by an encoded `=`, a bare value, data in
/// a modifier) are never repeated in an error, whatever form they take.
#[test]
fn errors_never_repeat_a_key_this_server_does_not_define() {
    let cases: &[(&str, &str)] = &[
        ("Patient", "family=Smith"),
        ("Patient", "birthdate=1970-01-01"),
        ("Patient", "123-45-6789"),
        ("Patient", "smith"),
        ("Patient", "name:exact=John Smith"),
        ("Patient", "identifier:Smith"),
        ("Patient", "_id:Smith"),
        ("Patient", "_smith"),
        ("Patient", "_sort:Smith"),
        ("Observation", "code:Smith=1"),
    ];
    for (rt, key) in cases {
        let Err(e) = parse_search(rt, &pairs(&[(key, "")])) else {
            panic!("{key} was accepted");
        };
        let text = e.to_string();
        for word in ["Smith", "smith", "1970", "6789"] {
            assert!(!text.contains(word), "{key}: {text}");
        }
    }
}

#[test]
fn query_errors() {
    let err = |rt: &str, q: &[(&str, &str)]| parse_search(rt, &pairs(q)).err();
    assert_eq!(
        err("Patient", &[("shoe-size", "42")]),
        Some(FhirError::UnknownParam(None))
    );
    assert_eq!(
        err("Patient", &[("_sort", "name")]),
        Some(FhirError::UnsupportedParam("_sort".into()))
    );
    assert_eq!(
        err("Patient", &[("_include", "x")]),
        Some(FhirError::UnsupportedParam("_include".into()))
    );
    assert_eq!(
        err("Patient", &[("gender:not", "male")]),
        Some(FhirError::UnsupportedParam("gender:not".into()))
    );
    assert_eq!(
        err("Patient", &[("name:contains", "x")]),
        Some(FhirError::UnsupportedParam("name:contains".into()))
    );
    assert_eq!(
        err("Patient", &[("_bogus", "1")]),
        Some(FhirError::UnknownParam(None))
    );
    // A name some other type defines is repeated, as a client's likely mix-up.
    assert_eq!(
        err("Patient", &[("code", "x")]),
        Some(FhirError::UnknownParam(Some("code".into())))
    );
    assert_eq!(
        err("Patient", &[("_sort:x", "name")]),
        Some(FhirError::UnsupportedParam(
            "_sort:(a modifier FHIR does not define; not repeated)".into()
        ))
    );
    assert_eq!(
        err("Observation", &[("subject:Patient", "1")]),
        Some(FhirError::UnsupportedParam("subject:Patient".into()))
    );
    assert_eq!(err("Spaceship", &[]), Some(FhirError::UnsupportedType));
    assert_eq!(
        err("Patient", &[("_count", "1001")]),
        Some(FhirError::BadParamValue("_count".into()))
    );
    assert_eq!(
        err("Patient", &[("_count", "-1")]),
        Some(FhirError::BadParamValue("_count".into()))
    );
    assert_eq!(
        err("Patient", &[("_id", "a b")]),
        Some(FhirError::BadParamValue("_id".into()))
    );
    assert_eq!(
        err("Patient", &[("identifier", "http://sys|")]),
        Some(FhirError::BadParamValue("identifier".into()))
    );
    assert_eq!(
        err("Patient", &[("gender", "")]),
        Some(FhirError::BadParamValue("gender".into()))
    );
    assert_eq!(
        err("Patient", &[("birthdate", "2020-13")]),
        Some(FhirError::BadParamValue("birthdate".into()))
    );
    assert_eq!(
        err("Patient", &[("birthdate", "xx2020")]),
        Some(FhirError::BadParamValue("birthdate".into()))
    );
    assert_eq!(
        err("Patient", &[("birthdate", "ne2020")]),
        Some(FhirError::UnsupportedPrefix {
            param: "birthdate".into(),
            prefix: "ne"
        })
    );
    assert_eq!(
        err("Patient", &[("name", "--")]),
        Some(FhirError::BadParamValue("name".into()))
    );
    assert_eq!(
        err("Patient", &[("name", "a b,c")]),
        Some(FhirError::BadParamValue("name".into()))
    );
    assert_eq!(
        err("Observation", &[("patient", "Practitioner/1")]),
        Some(FhirError::BadParamValue("patient".into()))
    );
    assert_eq!(
        err("Observation", &[("patient", "urn:uuid:1")]),
        Some(FhirError::BadParamValue("patient".into()))
    );
    assert!(err("Patient", &[("_pretty", "true"), ("_count", "1000")]).is_none());
    // Errors never echo the value.
    let e = err("Patient", &[("birthdate", "1984-02-30")]);
    assert!(!format!("{e:?}").contains("1984"));
}

/// Builds a query and checks the post-filter against a resource with the given dates.
fn date_match(q: &[(&str, &str)], resource: &Value) -> bool {
    let rt = resource["resourceType"].as_str().unwrap_or_default();
    match parse_search(rt, &pairs(q)) {
        Ok(q) => matches(&q, resource),
        Err(e) => panic!("query failed: {e}"),
    }
}

fn obs_at(effective: &str) -> Value {
    json!({"resourceType": "Observation", "effectiveDateTime": effective})
}

#[test]
fn date_semantics_eq() {
    assert!(date_match(
        &[("date", "2020")],
        &obs_at("2020-03-04T10:00:00Z")
    ));
    assert!(date_match(&[("date", "2020-03")], &obs_at("2020-03-04")));
    assert!(date_match(
        &[("date", "eq2020-03-04")],
        &obs_at("2020-03-04T23:59:59+14:00")
    ));
    assert!(!date_match(
        &[("date", "2020-03-05")],
        &obs_at("2020-03-04")
    ));
    // A year-precision value is not contained in a single month.
    assert!(!date_match(&[("date", "2020-03")], &obs_at("2020")));
    assert!(date_match(&[("date", "2020")], &obs_at("2020")));
}

#[test]
fn date_semantics_ranges() {
    let v = obs_at("2020-06-15");
    assert!(date_match(&[("date", "ge2020-06-15")], &v));
    assert!(!date_match(&[("date", "ge2020-06-16")], &v));
    assert!(date_match(&[("date", "le2020-06-15")], &v));
    assert!(!date_match(&[("date", "le2020-06-14")], &v));
    assert!(date_match(&[("date", "gt2020-06-14")], &v));
    assert!(!date_match(&[("date", "gt2020-06-15")], &v));
    assert!(date_match(&[("date", "lt2020-06-16")], &v));
    assert!(!date_match(&[("date", "lt2020-06-15")], &v));
    assert!(date_match(&[("date", "ge2020"), ("date", "le2020")], &v));
    assert!(!date_match(&[("date", "ge2021"), ("date", "le2019")], &v));
    // Year precision resource value 2020 = 2020-01-01..2020-12-31.
    let y = obs_at("2020");
    assert!(date_match(&[("date", "ge2020-12-31")], &y));
    assert!(!date_match(&[("date", "gt2020-12-31")], &y));
    assert!(date_match(&[("date", "lt2020-01-02")], &y));
    assert!(!date_match(&[("date", "gt2020")], &y));
    // Month-precision query bounds.
    assert!(date_match(&[("date", "gt2020-05")], &v));
    assert!(!date_match(&[("date", "gt2020-06")], &v));
}

#[test]
fn date_semantics_periods() {
    let e = json!({"resourceType": "Encounter", "period": {"start": "2019-12-31", "end": "2020-01-02"}});
    assert!(date_match(&[("date", "ge2020-01-01")], &e));
    assert!(date_match(&[("date", "le2019-12-31")], &e));
    assert!(!date_match(&[("date", "gt2020-01-02")], &e));
    assert!(!date_match(&[("date", "2020-01-01")], &e));
    assert!(date_match(
        &[("date", "ge2019-12"), ("date", "le2020-01")],
        &e
    ));
    assert!(!date_match(&[("date", "ge2020-02")], &e));
    // An open-ended period is ongoing.
    let open = json!({"resourceType": "Encounter", "period": {"start": "2019-12-31"}});
    assert!(date_match(&[("date", "ge2030")], &open));
    assert!(!date_match(&[("date", "lt2019-12-31")], &open));
    // No date at all never matches a date clause; other clauses are index-only.
    let none = json!({"resourceType": "Encounter"});
    assert!(!date_match(&[("date", "ge2000")], &none));
    assert!(date_match(&[("status", "finished")], &none));
    // Wrong type never matches.
    let q = parse_search("Encounter", &pairs(&[("status", "x")]));
    assert!(q.is_ok_and(|q| !matches(&q, &obs_at("2020"))));
}

#[test]
fn index_and_query_tokens_meet() {
    // Every index candidate required by the exact filter must share a token with the query.
    let cases: &[(&str, &[&str])] = &[
        (
            "2020",
            &["2020", "ge2020-12-31", "le2020-01-01", "ge1900", "le2100"],
        ),
        (
            "2020-03",
            &[
                "2020",
                "2020-03",
                "ge2020-03-31",
                "le2020-03-01",
                "gt2019",
                "lt2021",
            ],
        ),
        (
            "2020-03-04T10:00:00Z",
            &[
                "2020",
                "2020-03",
                "2020-03-04",
                "ge2020-03-04",
                "le2020-03-04",
                "ge1850",
            ],
        ),
    ];
    for (value, queries) in cases {
        let obs = obs_at(value);
        let tokens: Vec<String> = index_entries(&obs)
            .into_iter()
            .filter(|e| e.field == "Observation.date")
            .map(|e| e.value)
            .collect();
        for q in *queries {
            let parsed = parse_search("Observation", &pairs(&[("date", q)]));
            let Ok(parsed) = parsed else { panic!("{q}") };
            assert!(matches(&parsed, &obs), "{value} should match {q}");
            let any_of = &parsed.clauses[0].any_of;
            assert!(
                any_of.iter().any(|t| tokens.contains(t)),
                "{value} vs {q}: {any_of:?} / {tokens:?}"
            );
        }
    }
    // A long period overlapping a short query range is a candidate via its decades.
    let enc = json!({"resourceType": "Encounter", "period": {"start": "2005-01-01", "end": "2031-01-01"}});
    let tokens: Vec<String> = index_entries(&enc).into_iter().map(|e| e.value).collect();
    let Ok(q) = parse_search(
        "Encounter",
        &pairs(&[("date", "ge2020-03-01"), ("date", "le2020-03-02")]),
    ) else {
        panic!("parse")
    };
    assert!(matches(&q, &enc));
    assert!(q.clauses[0].any_of.iter().any(|t| tokens.contains(t)));
    // An ongoing period (no end) is a candidate for a window long after its start.
    let ongoing = json!({"resourceType": "Encounter", "period": {"start": "2005-01-01"}});
    let tokens: Vec<String> = index_entries(&ongoing)
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert!(matches(&q, &ongoing));
    assert!(q.clauses[0].any_of.iter().any(|t| tokens.contains(t)));
}

#[test]
fn day_queries_do_not_match_every_value_of_the_year() {
    // Selectivity: a day-precision value on another day of the same year is not a candidate.
    let other_day = obs_at("2020-05-05T10:00:00Z");
    let tokens: Vec<String> = index_entries(&other_day)
        .into_iter()
        .filter(|e| e.field == "Observation.date")
        .map(|e| e.value)
        .collect();
    for q in ["2020-03-04", "ge2020-03-01&le2020-03-31", "2020-03"] {
        let qp: Vec<(&str, &str)> = q.split('&').map(|v| ("date", v)).collect();
        let Ok(parsed) = parse_search("Observation", &pairs(&qp)) else {
            panic!("{q}")
        };
        let any_of = &parsed.clauses[0].any_of;
        assert!(
            !any_of.iter().any(|t| tokens.contains(t)),
            "{q}: {any_of:?} / {tokens:?}"
        );
    }
}

#[test]
fn string_and_token_queries_meet_index() {
    let p = examples::patient();
    let tokens: Vec<String> = index_entries(&p)
        .into_iter()
        .map(|e| format!("{}={}", e.field, e.value))
        .collect();
    for (k, v) in [
        ("family", "nun"),
        ("family", "NUÑEZ"),
        ("given", "marí"),
        ("name", "mrs"),
        ("identifier", "MRN-0042"),
        ("identifier", "http://hospital.smarthealthit.org|MRN-0042"),
        ("gender", "female"),
        ("gender", "|female"),
        ("birthdate", "1984-02-29"),
    ] {
        let Ok(q) = parse_search("Patient", &pairs(&[(k, v)])) else {
            panic!("{k}")
        };
        for c in &q.clauses {
            assert!(
                c.any_of
                    .iter()
                    .any(|t| tokens.contains(&format!("{}={t}", c.field))),
                "{k}={v}: {:?}",
                c.any_of
            );
        }
        assert!(matches(&q, &p));
    }
}

#[test]
fn a_query_s_debug_output_names_parameters_but_not_values() {
    let q = parse_search(
        "Patient",
        &pairs(&[
            ("family", "Zimmermann"),
            ("birthdate", "ge1961-04-12"),
            ("identifier", "urn:oid:2.16.840.1.113883.4.1|123-45-6789"),
            ("_id", "p-77"),
            ("_lastUpdated", "ge2020-01-01"),
        ]),
    );
    let Ok(q) = q else {
        panic!("the query parses: {:?}", q.err());
    };
    let text = format!("{q:?}");
    for hidden in ["immermann", "1961", "123-45-6789", "p-77", "2020"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    assert!(text.contains("Patient.family"), "{text}");
    assert!(text.contains("Patient.birthdate"), "{text}");
    assert!(text.contains("last_updated: 1"), "{text}");
    // The birth date's exact filter, printed on its own, shows the prefix only.
    let exact: Vec<String> = q
        .clauses
        .iter()
        .filter_map(|c| c.exact.as_ref().map(|e| format!("{e:?}")))
        .collect();
    assert_eq!(exact, ["Date([DateBound { prefix: Ge, .. }])"]);
}
