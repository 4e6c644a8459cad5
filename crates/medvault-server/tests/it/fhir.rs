//! FHIR REST behaviour through the router: CRUD, history, conditional create, If-Match,
//! paging, transactions (rewrite and rollback), batch, patch, validation and error shapes.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{observation, patient, Harness, BASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_vread_and_history() {
    let h = Harness::unsealed();
    let created = h
        .call(
            "POST",
            "/fhir/Patient",
            Some(patient("Smith", "Ana", "1980-02-29")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert_eq!(
        created.header("location").unwrap(),
        format!("{BASE}/fhir/Patient/{id}/_history/1")
    );
    assert_eq!(created.json["meta"]["versionId"], "1");
    assert_eq!(
        created.json["meta"]["lastUpdated"],
        "2026-11-23T10:00:00.000Z"
    );

    let read = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json["name"][0]["family"], "Smith");
    assert_eq!(
        read.header("content-type"),
        Some("application/fhir+json; charset=utf-8")
    );

    h.clock.advance(60_000);
    let mut changed = read.json.clone();
    changed["name"][0]["family"] = json!("Smith-Jones");
    let updated = h
        .call("PUT", &format!("/fhir/Patient/{id}"), Some(changed))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.json);
    assert_eq!(updated.json["meta"]["versionId"], "2");

    let v1 = h
        .call("GET", &format!("/fhir/Patient/{id}/_history/1"), None)
        .await;
    assert_eq!(v1.json["name"][0]["family"], "Smith");
    let v2 = h
        .call("GET", &format!("/fhir/Patient/{id}/_history/2"), None)
        .await;
    assert_eq!(v2.json["name"][0]["family"], "Smith-Jones");
    h.call("GET", &format!("/fhir/Patient/{id}/_history/3"), None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);

    let deleted = h.call("DELETE", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    h.call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .assert_outcome(StatusCode::GONE);
    // Deleting again is idempotent.
    let again = h.call("DELETE", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);

    let hist = h
        .call("GET", &format!("/fhir/Patient/{id}/_history"), None)
        .await;
    assert_eq!(hist.json["type"], "history");
    assert_eq!(hist.json["total"], 3);
    let methods: Vec<&str> = hist.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "POST"]);
    assert!(hist.json["entry"][0].get("resource").is_none());
    assert_eq!(
        hist.json["entry"][0]["response"]["status"],
        "204 No Content"
    );
    let put = &hist.json["entry"][1];
    assert_eq!(put["request"]["url"], format!("Patient/{id}"));
    assert_eq!(put["response"]["status"], "200 OK");
    assert_eq!(put["response"]["etag"], "W/\"2\"");
    assert_eq!(put["resource"]["meta"]["versionId"], "2");
    let post = &hist.json["entry"][2];
    assert_eq!(post["request"]["url"], "Patient");
    assert_eq!(post["response"]["status"], "201 Created");
    assert_eq!(post["resource"]["id"], id.as_str());
    assert_eq!(post["fullUrl"], format!("{BASE}/fhir/Patient/{id}"));

    let type_hist = h.call("GET", "/fhir/Patient/_history", None).await;
    assert_eq!(type_hist.json["total"], 3);
    h.call("GET", "/fhir/Patient/does-not-exist", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_can_create_with_client_id_and_checks_ids() {
    let h = Harness::unsealed();
    let mut p = patient("Lee", "Mei", "1990-01-01");
    p["id"] = json!("p-1");
    let r = h.call("PUT", "/fhir/Patient/p-1", Some(p.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED);
    h.call("PUT", "/fhir/Patient/p-2", Some(p.clone()))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    p["id"] = json!("bad id!");
    h.call("PUT", "/fhir/Patient/bad%20id!", Some(p))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_and_conditional_create() {
    let h = Harness::unsealed();
    let id = h.create(patient("Okafor", "Chidi", "1975-06-01")).await;
    let mut body = h
        .call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .json;
    body["gender"] = json!("male");
    h.call_with(
        "PUT",
        &format!("/fhir/Patient/{id}"),
        Some(body.clone()),
        &[("if-match", "W/\"7\"")],
    )
    .await
    .assert_outcome(StatusCode::PRECONDITION_FAILED);
    // Nothing changed.
    let still = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(still.json["meta"]["versionId"], "1");
    let ok = h
        .call_with(
            "PUT",
            &format!("/fhir/Patient/{id}"),
            Some(body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    h.call_with(
        "DELETE",
        &format!("/fhir/Patient/{id}"),
        None,
        &[("if-match", "W/\"1\"")],
    )
    .await
    .assert_outcome(StatusCode::PRECONDITION_FAILED);

    // Conditional create: the first creates, the second finds it, a broad match is refused.
    let cond = [("if-none-exist", "identifier=urn:mrn|MRN-Garcia-Rafael")];
    let first = h
        .call_with(
            "POST",
            "/fhir/Patient",
            Some(patient("Garcia", "Rafael", "1960")),
            &cond,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = h
        .call_with(
            "POST",
            "/fhir/Patient",
            Some(patient("Garcia", "Rafael", "1960")),
            &cond,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.json["id"], first.json["id"]);
    h.call_with(
        "POST",
        "/fhir/Patient",
        Some(patient("X", "Y", "1960")),
        &[("if-none-exist", "gender=female,male")],
    )
    .await
    .assert_outcome(StatusCode::PRECONDITION_FAILED);
    let all = h.call("GET", "/fhir/Patient", None).await;
    assert_eq!(all.json["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_parameters_and_paging() {
    let h = Harness::unsealed();
    let ana = h.create(patient("Smith", "Ana", "1980-02-29")).await;
    let bob = h.create(patient("Smythe", "Bob", "1991-07-04")).await;
    for i in 0..7 {
        h.create(observation(
            &ana,
            "8867-4",
            &format!("2024-03-0{}", i + 1),
            60 + i,
        ))
        .await;
    }
    h.create(observation(&bob, "8867-4", "2024-03-02", 80))
        .await;
    h.create(observation(&ana, "2339-0", "2023-12-31", 99))
        .await;

    let total = |v: &Value| v["total"].as_u64().unwrap();
    let h = &h;
    let q = |s: &'static str| async move { h.call("GET", s, None).await.json };
    assert_eq!(total(&q("/fhir/Patient?family=smi").await), 1);
    assert_eq!(total(&q("/fhir/Patient?name=SM").await), 2);
    assert_eq!(total(&q("/fhir/Patient?given=bob").await), 1);
    assert_eq!(total(&q("/fhir/Patient?birthdate=1980-02-29").await), 1);
    assert_eq!(total(&q("/fhir/Patient?birthdate=ge1985").await), 1);
    assert_eq!(total(&q("/fhir/Patient?gender=female").await), 2);
    assert_eq!(
        total(&q("/fhir/Patient?identifier=urn:mrn|MRN-Smith-Ana").await),
        1
    );
    let by_patient = h
        .call(
            "GET",
            &format!("/fhir/Observation?patient={ana}&code=8867-4"),
            None,
        )
        .await
        .json;
    assert_eq!(total(&by_patient), 7);
    let by_subject = h
        .call(
            "GET",
            &format!("/fhir/Observation?subject=Patient/{bob}"),
            None,
        )
        .await
        .json;
    assert_eq!(total(&by_subject), 1);
    assert_eq!(
        total(&q("/fhir/Observation?code=http://loinc.org|8867-4&date=ge2024-03-03&date=le2024-03-05").await),
        3
    );
    assert_eq!(total(&q("/fhir/Observation?date=lt2024").await), 1);
    assert_eq!(total(&q("/fhir/Observation?status=final").await), 9);
    assert_eq!(
        total(&q("/fhir/Observation?_lastUpdated=ge2026-11-23").await),
        9
    );
    assert_eq!(
        total(&q("/fhir/Observation?_lastUpdated=lt2026-11-23").await),
        0
    );
    let by_id = h
        .call("GET", &format!("/fhir/Patient?_id={bob}"), None)
        .await
        .json;
    assert_eq!(total(&by_id), 1);
    assert_eq!(by_id["entry"][0]["resource"]["id"], json!(bob));

    // Paging: absolute next links that start with the public base; walk them to the end.
    let mut url = format!("/fhir/Observation?patient={ana}&_count=3");
    let mut seen = Vec::new();
    loop {
        let page = h.call("GET", &url, None).await.json;
        assert_eq!(total(&page), 8);
        for e in page["entry"].as_array().unwrap() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
            assert!(e["fullUrl"].as_str().unwrap().starts_with(BASE));
        }
        let next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(n) => {
                assert!(n.starts_with(&format!("{BASE}/fhir/Observation?")), "{n}");
                url = n.trim_start_matches(BASE).to_string();
            }
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 8);

    // Paging through a post-filtered (date range) search gives the same totals.
    let page = q("/fhir/Observation?date=ge2024-03-01&_count=2").await;
    assert_eq!(total(&page), 8);
    assert_eq!(page["entry"].as_array().unwrap().len(), 2);

    h.call("GET", "/fhir/Patient?unknown=1", None)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    h.call("GET", "/fhir/Patient?birthdate=ne2000", None)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
}

fn tx(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rewrites_urn_uuid_references() {
    let h = Harness::unsealed();
    let bundle = tx(vec![
        json!({"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
               "resource": patient("Tanaka", "Aiko", "2001-01-01"),
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": observation("x", "8867-4", "2024-01-01", 70),
               "request": {"method": "POST", "url": "Observation"}}),
    ]);
    let mut bundle = bundle;
    bundle["entry"][1]["resource"]["subject"]["reference"] =
        json!("urn:uuid:11111111-1111-4111-8111-111111111111");
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["type"], "transaction-response");
    assert_eq!(r.json["entry"][0]["response"]["status"], "201 Created");
    let loc = r.json["entry"][0]["response"]["location"].as_str().unwrap();
    let pid = loc.split('/').nth(1).unwrap().to_string();
    assert_eq!(loc, format!("Patient/{pid}/_history/1"));
    assert_eq!(r.json["entry"][0]["response"]["etag"], "W/\"1\"");
    assert_eq!(r.json["entry"][0]["fullUrl"], format!("Patient/{pid}"));
    let obs = h
        .call("GET", &format!("/fhir/Observation?patient={pid}"), None)
        .await;
    assert_eq!(obs.json["total"], 1);
    assert_eq!(
        obs.json["entry"][0]["resource"]["subject"]["reference"],
        json!(format!("Patient/{pid}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_with_one_bad_entry_stores_nothing() {
    let h = Harness::unsealed();
    let existing = h.create(patient("Silva", "Rafael", "1950-05-05")).await;
    let mut bad_obs = observation(&existing, "8867-4", "2024-13-01", 70);
    bad_obs["status"] = json!("final");
    let mut update = h
        .call("GET", &format!("/fhir/Patient/{existing}"), None)
        .await
        .json;
    update["gender"] = json!("male");
    let bundle = tx(vec![
        json!({"resource": patient("New", "One", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": update, "request": {"method": "PUT", "url": format!("Patient/{existing}")}}),
        json!({"resource": bad_obs, "request": {"method": "POST", "url": "Observation"}}),
    ]);
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Bundle.entry[2].resource.Observation.effectiveDateTime"
    );
    // Nothing of the transaction is visible: no new patient, no update, no observation.
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 1);
    let p = h
        .call("GET", &format!("/fhir/Patient/{existing}"), None)
        .await
        .json;
    assert_eq!(p["meta"]["versionId"], "1");
    assert_eq!(p["gender"], "female");
    assert_eq!(
        h.call("GET", "/fhir/Observation/_history", None).await.json["total"],
        0
    );
    assert_eq!(
        h.call("GET", "/fhir/Patient/_history", None).await.json["total"],
        1
    );
}

/// A large create-only transaction is written while later entries are still being
/// prepared; invalid entries in the middle must still leave nothing behind (no
/// resource, no audit-ledger entry), and the first of them is the entry the error names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_create_only_transaction_with_bad_entries_stores_nothing() {
    let h = Harness::unsealed();
    let mut entries = vec![json!({
        "fullUrl": "urn:uuid:6b0c4a8e-4b35-4c5e-9a3e-0a1c2b3d4e5f",
        "resource": patient("Many", "Entries", "1970-01-01"),
        "request": {"method": "POST", "url": "Patient"}
    })];
    // Two bad entries: the first one (by index) is the error, whichever thread met which.
    for i in 1..40 {
        let date = if i == 25 || i == 33 {
            "2024-13-01"
        } else {
            "2024-01-02"
        };
        let mut obs = observation("x", "8867-4", date, 60 + i);
        obs["subject"]["reference"] = json!("urn:uuid:6b0c4a8e-4b35-4c5e-9a3e-0a1c2b3d4e5f");
        entries.push(json!({"resource": obs, "request": {"method": "POST", "url": "Observation"}}));
    }
    // A small create-only transaction is prepared whole, then written.
    let small = tx(entries[..3].to_vec());
    let r = h.call("POST", "/fhir", Some(small)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(h.repo.pipelined_commits(), 0);
    let ledger_before = medvault_store::Store::ledger_size(&*h.data.store).unwrap();
    let r = h.call("POST", "/fhir", Some(tx(entries.clone()))).await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Bundle.entry[25].resource.Observation.effectiveDateTime"
    );
    assert_eq!(h.repo.pipelined_commits(), 1, "the large one is pipelined");
    // Only the request's own summary entry (its outcome an error), no entry per write.
    assert_eq!(
        medvault_store::Store::ledger_size(&*h.data.store).unwrap(),
        ledger_before + 1
    );
    for (rtype, small) in [("Patient", 1), ("Observation", 2)] {
        assert_eq!(
            h.call("GET", &format!("/fhir/{rtype}/_history"), None)
                .await
                .json["total"],
            small
        );
    }
    // The same transaction without the bad entry commits whole: one entry for its writes
    // (all of one patient), and the summary.
    entries[25]["resource"]["effectiveDateTime"] = json!("2024-01-02");
    entries[33]["resource"]["effectiveDateTime"] = json!("2024-01-02");
    let before = medvault_store::Store::ledger_size(&*h.data.store).unwrap();
    let r = h.call("POST", "/fhir", Some(tx(entries))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        medvault_store::Store::ledger_size(&*h.data.store).unwrap(),
        before + 2
    );
    assert_eq!(h.repo.pipelined_commits(), 2);
    assert_eq!(
        h.call("GET", "/fhir/Observation?_count=1", None).await.json["total"],
        41
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reports_each_entry() {
    let h = Harness::unsealed();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("Ok", "One", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/nope"}},
    ]});
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["type"], "batch-response");
    assert_eq!(r.json["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(r.json["entry"][1]["response"]["status"], "400");
    assert_eq!(
        r.json["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(r.json["entry"][2]["response"]["status"], "404");
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 1);
    // Reads and searches inside a batch answer with the resources themselves.
    let id = r.json["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reads = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{id}")}},
        {"request": {"method": "GET", "url": "Patient?family=Ok"}},
    ]});
    let r = h.call("POST", "/fhir", Some(reads)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let read = &r.json["entry"][0];
    assert_eq!(read["response"]["status"], "200 OK");
    assert_eq!(read["response"]["etag"], "W/\"1\"");
    assert_eq!(read["resource"]["id"], id.as_str());
    assert_eq!(read["resource"]["name"][0]["family"], "Ok");
    let found = &r.json["entry"][1];
    assert_eq!(found["response"]["status"], "200 OK");
    assert_eq!(found["resource"]["type"], "searchset");
    assert_eq!(found["resource"]["total"], 1);
    let hit = &found["resource"]["entry"][0];
    assert_eq!(hit["fullUrl"], format!("Patient/{id}"));
    assert_eq!(hit["resource"]["id"], id.as_str());
    assert_eq!(hit["search"]["mode"], "match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch() {
    let h = Harness::unsealed();
    let id = h.create(patient("Haddad", "Yusuf", "1988-08-08")).await;
    let ops = json!([{"op": "replace", "path": "/gender", "value": "male"}]);
    let r = h
        .call_with(
            "PATCH",
            &format!("/fhir/Patient/{id}"),
            Some(ops.clone()),
            &[
                ("content-type", "application/json-patch+json"),
                ("if-match", "W/\"1\""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["gender"], "male");
    assert_eq!(r.json["meta"]["versionId"], "2");
    // A stale If-Match, a patch that breaks validation, and one that changes the id all fail.
    h.call_with(
        "PATCH",
        &format!("/fhir/Patient/{id}"),
        Some(ops),
        &[
            ("content-type", "application/json-patch+json"),
            ("if-match", "W/\"1\""),
        ],
    )
    .await
    .assert_outcome(StatusCode::PRECONDITION_FAILED);
    h.call_with(
        "PATCH",
        &format!("/fhir/Patient/{id}"),
        Some(json!([{"op": "replace", "path": "/gender", "value": "robot"}])),
        &[("content-type", "application/json-patch+json")],
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    h.call_with(
        "PATCH",
        &format!("/fhir/Patient/{id}"),
        Some(json!([{"op": "replace", "path": "/id", "value": "other"}])),
        &[("content-type", "application/json-patch+json")],
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let now = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(now.json["meta"]["versionId"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_with_operation_outcomes_and_stores_nothing() {
    let h = Harness::unsealed();
    let bad = [
        json!({"resourceType": "Patient", "birthDate": "1980-02-30"}),
        json!({"resourceType": "Patient", "gender": "robot"}),
        json!({"resourceType": "Patient", "shoeSize": 42}),
        json!({"resourceType": "Patient", "name": "not-an-array"}),
        json!({"resourceType": "Observation", "status": "final"}),
        json!({"resourceType": "Practitioner"}),
    ];
    for body in bad {
        let r = h.call("POST", "/fhir/Patient", Some(body.clone())).await;
        r.assert_outcome(StatusCode::BAD_REQUEST);
        let text = r.json.to_string();
        assert!(
            !text.contains("1980-02-30") && !text.contains("robot"),
            "{text}"
        );
    }
    let r = h
        .call(
            "POST",
            "/fhir/Observation",
            Some(json!({"resourceType": "Observation", "status": "final"})),
        )
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(r.json["issue"][0]["code"], "required");

    // Not JSON, wrong media type, unknown type, unknown route.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("content-type", "application/fhir+json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    h.raw(req).await.assert_outcome(StatusCode::BAD_REQUEST);
    // The same at the base, where a Bundle is parsed on the thread that runs it.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/fhir")
        .header("content-type", "application/fhir+json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    let r = h.raw(req).await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["diagnostics"],
        "the request body is not valid JSON"
    );
    h.call_with(
        "POST",
        "/fhir",
        Some(json!({"resourceType": "Bundle", "type": "transaction", "entry": []})),
        &[("content-type", "text/plain")],
    )
    .await
    .assert_outcome(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    h.call_with(
        "POST",
        "/fhir/Patient",
        Some(patient("A", "B", "2000")),
        &[("content-type", "text/plain")],
    )
    .await
    .assert_outcome(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    h.call("GET", "/fhir/Spaceship/1", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    h.call("GET", "/nowhere", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    // application/json is accepted as well as application/fhir+json.
    let ok = h
        .call_with(
            "POST",
            "/fhir/Patient",
            Some(patient("A", "B", "2000")),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(
        h.call("GET", "/fhir/Patient/_history", None).await.json["total"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_statement() {
    let h = Harness::unsealed();
    let r = h.call("GET", "/fhir/metadata", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["resourceType"], "CapabilityStatement");
    assert_eq!(r.json["fhirVersion"], "4.0.1");
    let patient = r.json["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Patient")
        .unwrap();
    let names: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in [
        "identifier",
        "name",
        "family",
        "given",
        "birthdate",
        "gender",
        "_id",
        "_lastUpdated",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_resources_go_to_the_blob_store() {
    let h = Harness::unsealed();
    let big = "x".repeat(400 * 1024);
    let doc = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64_of(&big)}}],
    });
    let id = h.create(doc).await;
    let r = h
        .call("GET", &format!("/fhir/DocumentReference/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["content"][0]["attachment"]["data"]
            .as_str()
            .unwrap()
            .len(),
        base64_of(&big).len()
    );
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let blob_ref: Option<String> = conn
        .query_row(
            "SELECT blob_ref FROM resource_version WHERE id = unhex(replace(?, '-', ''))",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let name = blob_ref.unwrap();
    assert!(
        name.starts_with(&format!("resources/DocumentReference/{id}/1-")),
        "{name}"
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_bombs_are_refused() {
    let h = Harness::unsealed();
    let id = h.create(patient("Bomb", "Copy", "1970-01-01")).await;
    let patch_ct = [("content-type", "application/json-patch+json")];
    // Doubling by copy: refused once the document grows past the size limit.
    let doubling: Vec<Value> = (0..40)
        .map(|_| json!({"op": "copy", "from": "/name", "path": "/name/-"}))
        .collect();
    let r = h
        .call_with(
            "PATCH",
            &format!("/fhir/Patient/{id}"),
            Some(json!(doubling)),
            &patch_ct,
        )
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    // Deep nesting built up operation by operation: refused at the depth limit.
    let mut deep = json!("x");
    for _ in 0..60 {
        deep = json!({ "url": "urn:x", "extension": [deep] });
    }
    let ops = json!([
        {"op": "add", "path": "/extension", "value": [deep.clone()]},
        {"op": "add", "path": "/extension/0/extension/0/extension/0/extension/-", "value": deep},
    ]);
    h.call_with(
        "PATCH",
        &format!("/fhir/Patient/{id}"),
        Some(ops),
        &patch_ct,
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    // Too many operations.
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"op": "test", "path": "/id", "value": id}))
        .collect();
    h.call_with(
        "PATCH",
        &format!("/fhir/Patient/{id}"),
        Some(json!(many)),
        &patch_ct,
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let now = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(now.json["meta"]["versionId"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_reads_are_checked_before_writing() {
    let h = Harness::unsealed();
    // An unsupported type or a bad search in a GET entry fails the transaction up front.
    for get in ["Spaceship/1", "Patient?bogus=1"] {
        let bundle = tx(vec![
            json!({"resource": patient("Tx", "Get", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}}),
            json!({"request": {"method": "GET", "url": get}}),
        ]);
        let r = h.call("POST", "/fhir", Some(bundle)).await;
        assert!(r.status.is_client_error(), "{}", r.json);
        assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 0);
    }
    // A read of a missing resource after the writes is reported in its entry only.
    let bundle = tx(vec![
        json!({"resource": patient("Tx", "Get", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}}),
        json!({"request": {"method": "GET", "url": "Patient/missing"}}),
    ]);
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["entry"][1]["response"]["status"], "404");
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_urn_references_and_failed_transactions_leave_nothing() {
    let h = Harness::unsealed();
    let mut obs = observation("x", "8867-4", "2024-01-01", 70);
    obs["subject"]["reference"] = json!("urn:uuid:99999999-9999-4999-8999-999999999999");
    let bundle = tx(vec![
        json!({"resource": patient("Dangling", "Ref", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": obs.clone(), "request": {"method": "POST", "url": "Observation"}}),
    ]);
    h.call("POST", "/fhir", Some(bundle))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    h.call("POST", "/fhir/Observation", Some(obs))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    // Not even a data key for the refused patient was stored.
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM data_key", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!((keys, rows), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_updated_honours_time_and_zone() {
    let h = Harness::unsealed(); // clock at 2026-11-23T10:00:00Z
    let early = h.create(patient("Early", "E", "2000-01-01")).await;
    h.clock.advance(5 * 60 * 60 * 1000); // 15:00Z
    let late = h.create(patient("Late", "L", "2000-01-01")).await;
    let ids = |v: &Value| -> Vec<String> {
        v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = h
        .call(
            "GET",
            "/fhir/Patient?_lastUpdated=gt2026-11-23T10:00:00Z",
            None,
        )
        .await;
    assert_eq!(ids(&r.json), [late]);
    let r = h
        .call(
            "GET",
            "/fhir/Patient?_lastUpdated=lt2026-11-23T12:00:00%2B01:00",
            None,
        )
        .await;
    assert_eq!(ids(&r.json), [early]);
    let r = h
        .call("GET", "/fhir/Patient?_lastUpdated=2026-11-23", None)
        .await;
    assert_eq!(r.json["total"], 2);
    h.call(
        "GET",
        "/fhir/Patient?_lastUpdated=ge2026-11-23T10:00:00",
        None,
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_operation_outcomes_too() {
    let h = Harness::unsealed();
    h.call("DELETE", "/fhir/Patient", None)
        .await
        .assert_outcome(StatusCode::METHOD_NOT_ALLOWED);
    let huge = vec![b' '; medvault_server::api::MAX_BODY + 1];
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("content-type", "application/fhir+json")
        .body(axum::body::Body::from(huge))
        .unwrap();
    h.raw(req)
        .await
        .assert_outcome(StatusCode::PAYLOAD_TOO_LARGE);
    h.call_with(
        "DELETE",
        "/fhir/Patient/never-existed",
        None,
        &[("if-match", "W/\"1\"")],
    )
    .await
    .assert_outcome(StatusCode::PRECONDITION_FAILED);
    h.call_with(
        "POST",
        "/fhir/Patient",
        Some(patient("A", "B", "2000")),
        &[("if-none-exist", "gender=female&_offset=1")],
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    h.call("GET", "/fhir/Patient?_offset=18446744073709551615", None)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_are_prepared_in_parallel_and_stay_atomic() {
    let h = Harness::unsealed();
    let mut entries = Vec::new();
    for p in 0..20 {
        let full = format!("urn:uuid:00000000-0000-4000-8000-{p:012}");
        entries.push(
            json!({"fullUrl": full, "resource": patient("Bulk", &format!("P{p}"), "1990-01-01"),
                            "request": {"method": "POST", "url": "Patient"}}),
        );
        for o in 0..9 {
            let mut obs = observation("x", "8867-4", &format!("2024-01-{:02}", o + 1), 60 + o);
            obs["subject"]["reference"] = json!(full);
            entries.push(
                json!({"resource": obs, "request": {"method": "POST", "url": "Observation"}}),
            );
        }
    }
    assert_eq!(entries.len(), 200);
    // One bad entry deep in the second half: refused, named, nothing stored.
    let mut bad = entries.clone();
    bad[151]["resource"]["status"] = json!("bogus");
    let r = h.call("POST", "/fhir", Some(tx(bad))).await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Bundle.entry[151].resource.Observation.status"
    );
    assert_eq!(
        h.call("GET", "/fhir/Observation/_history", None).await.json["total"],
        0
    );
    // The valid one stores everything, each observation under its own patient.
    let r = h.call("POST", "/fhir", Some(tx(entries))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        h.call("GET", "/fhir/Observation", None).await.json["total"],
        180
    );
    let pid = r.json["entry"][10]["response"]["location"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_string();
    let mine = h
        .call(
            "GET",
            &format!("/fhir/Observation?patient={pid}&_count=100"),
            None,
        )
        .await;
    assert_eq!(mine.json["total"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reports_its_first_failing_entry() {
    let h = Harness::unsealed();
    let id = h.create(patient("Order", "O", "1970-01-01")).await;
    let mut current = h
        .call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .json;
    current["gender"] = json!("male");
    let bundle = tx(vec![
        json!({"resource": {"resourceType": "Patient", "gender": "bogus"},
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": current, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"9\""}}),
    ]);
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Bundle.entry[0].resource.Patient.gender"
    );
    // A read that the real search would refuse is refused before anything is written.
    let bundle = tx(vec![
        json!({"resource": patient("Tx", "Read", "2000-01-01"), "request": {"method": "POST", "url": "Patient"}}),
        json!({"request": {"method": "GET", "url": "Patient?_lastUpdated=ge2024-05-01T10:00:00"}}),
    ]);
    h.call("POST", "/fhir", Some(bundle))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 1);
}

/// An entry without what its request needs is refused with its index and what is wrong,
/// in a transaction and a batch alike, and nothing of the Bundle is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bundle_entries_are_refused_with_their_index() {
    let h = Harness::unsealed();
    let good = json!({"resource": patient("Fine", "F", "1970-01-01"),
                      "request": {"method": "POST", "url": "Patient"}});
    let cases = [
        (json!("not an entry"), "request is required"),
        (
            json!({"resource": patient("No", "Request", "1970-01-01")}),
            "request is required",
        ),
        (
            json!({"request": "POST Patient"}),
            "request.method must be GET, POST, PUT or DELETE",
        ),
        (
            json!({"request": {"url": "Patient"}}),
            "request.method must be GET, POST, PUT or DELETE",
        ),
        (
            json!({"request": {"method": "PATCH", "url": "Patient"}}),
            "request.method must be GET, POST, PUT or DELETE",
        ),
        (
            json!({"request": {"method": 7, "url": "Patient"}}),
            "request.method must be GET, POST, PUT or DELETE",
        ),
        (
            json!({"request": {"method": "GET"}}),
            "request.url is required",
        ),
        (
            json!({"request": {"method": "GET", "url": 3}}),
            "request.url is required",
        ),
        (
            json!({"request": {"method": "POST", "url": "Patient"}}),
            "resource is required for POST and PUT",
        ),
        (
            json!({"resource": patient("Bad", "Etag", "1970-01-01"),
                   "request": {"method": "PUT", "url": "Patient/x", "ifMatch": "W/\"v\""}}),
            "request.ifMatch is not a version ETag",
        ),
    ];
    for (entry, why) in cases {
        for kind in ["transaction", "batch"] {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [good.clone(), entry.clone()]});
            let r = h.call("POST", "/fhir", Some(bundle)).await;
            r.assert_outcome(StatusCode::BAD_REQUEST);
            assert_eq!(
                r.json["issue"][0]["diagnostics"],
                format!("Bundle.entry[1]: {why}"),
                "{kind} {entry}"
            );
        }
    }
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 0);
    // What the entries carry beside the resource is read: fullUrl (the reference below is
    // rewritten), ifNoneExist (the second create finds the first) and a leading slash.
    let bundle = tx(vec![
        json!({"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
               "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "k1"}]},
               "request": {"method": "POST", "url": "/Patient", "ifNoneExist": "identifier=urn:s|k1"}}),
        json!({"resource": {"resourceType": "Observation", "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                            "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000aa"}},
               "request": {"method": "POST", "url": "Observation"}}),
    ]);
    let r = h.call("POST", "/fhir", Some(bundle.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let patient_at = r.json["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let observation = r.json["entry"][1]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let read = h
        .call(
            "GET",
            &format!("/fhir/{}", observation.split("/_history").next().unwrap()),
            None,
        )
        .await;
    assert!(
        patient_at.contains(read.json["subject"]["reference"].as_str().unwrap()),
        "{}",
        read.json
    );
    let again = h.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(
        again.json["entry"][0]["response"]["status"], "200 OK",
        "{}",
        again.json
    );
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinical_types_search_by_patient_code_date_and_status() {
    let h = Harness::unsealed();
    let pid = h.create(patient("Clinic", "C", "1960-01-01")).await;
    let other = h.create(patient("Other", "O", "1961-01-01")).await;
    let subject = json!({"reference": format!("Patient/{pid}")});
    let cc = |system: &str, code: &str| json!({"coding": [{"system": system, "code": code}]});
    let resources = [
        json!({"resourceType": "DiagnosticReport", "status": "final", "code": cc("http://loinc.org", "58410-2"),
               "subject": subject, "effectiveDateTime": "2024-02-03T10:00:00Z"}),
        json!({"resourceType": "Condition", "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
               "code": cc("http://snomed.info/sct", "44054006"), "subject": subject, "recordedDate": "2024-02-03"}),
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
               "subject": subject, "authoredOn": "2024-02-03"}),
        json!({"resourceType": "Encounter", "status": "finished",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
               "type": [cc("http://snomed.info/sct", "185349003")], "subject": subject,
               "period": {"start": "2024-02-03T09:00:00Z", "end": "2024-02-03T09:30:00Z"}}),
        json!({"resourceType": "AllergyIntolerance", "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
               "code": cc("http://snomed.info/sct", "91936005"), "patient": subject, "recordedDate": "2024-02-03"}),
        json!({"resourceType": "Appointment", "status": "booked", "serviceType": [cc("http://snomed.info/sct", "11429006")],
               "start": "2024-02-03T08:00:00Z", "end": "2024-02-03T08:30:00Z",
               "participant": [{"actor": subject, "status": "accepted"}]}),
    ];
    for r in resources {
        h.create(r).await;
    }
    let cases = [
        (
            "DiagnosticReport",
            "code=http://loinc.org|58410-2",
            "status=final",
        ),
        ("Condition", "code=44054006", "clinical-status=active"),
        ("MedicationRequest", "code=860975", "status=active"),
        ("Encounter", "type=185349003", "status=finished"),
        (
            "AllergyIntolerance",
            "code=91936005",
            "clinical-status=active",
        ),
        ("Appointment", "service-type=11429006", "status=booked"),
    ];
    for (rtype, code, status) in cases {
        for q in [
            format!("patient={pid}"),
            format!("patient={pid}&{code}&{status}&date=ge2024-02-01&date=le2024-02-28"),
        ] {
            let r = h.call("GET", &format!("/fhir/{rtype}?{q}"), None).await;
            assert_eq!(r.json["total"], 1, "{rtype}?{q}: {}", r.json);
        }
        for q in [
            format!("patient={other}"),
            format!("patient={pid}&date=ge2024-03-01"),
            format!("patient={pid}&{code}x"),
        ] {
            let r = h.call("GET", &format!("/fhir/{rtype}?{q}"), None).await;
            assert_eq!(r.json["total"], 0, "{rtype}?{q}: {}", r.json);
        }
    }
    let by_subject = h
        .call(
            "GET",
            &format!("/fhir/Condition?subject=Patient/{pid}"),
            None,
        )
        .await;
    assert_eq!(by_subject.json["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_a_deeply_nested_one_400() {
    use std::time::Duration;
    let mut h = Harness::unsealed();
    h.app = medvault_server::api::router(
        medvault_server::api::AppState::new(h.repo.clone(), crate::support::BASE)
            .allowing_anonymous(true)
            .with_body_timeout(Duration::from_millis(200)),
    );
    // Half a resource, then nothing for longer than the deadline.
    let chunks = async_stream_body(vec![
        (Duration::ZERO, b"{\"resourceType\": \"Pat".to_vec()),
        (Duration::from_secs(2), b"ient\"}".to_vec()),
    ]);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("content-type", "application/fhir+json")
        .body(chunks)
        .unwrap();
    let r = h.raw(req).await;
    r.assert_outcome(StatusCode::REQUEST_TIMEOUT);
    assert_eq!(h.repo.search("Patient", &[]).unwrap().entries.len(), 0);
    // Arrays nested far beyond any resource: a 400, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/fhir/Patient")
        .header("content-type", "application/fhir+json")
        .body(axum::body::Body::from(deep))
        .unwrap();
    h.raw(req).await.assert_outcome(StatusCode::BAD_REQUEST);
    // A Bundle with more entries than the limit: refused before any work.
    let entries: Vec<Value> = (0..medvault_server::MAX_BUNDLE_ENTRIES + 1)
        .map(|_| json!({"request": {"method": "GET", "url": "Patient/x"}}))
        .collect();
    let r = h
        .call(
            "POST",
            "/fhir",
            Some(json!({"resourceType": "Bundle", "type": "batch", "entry": entries})),
        )
        .await;
    assert!(
        matches!(
            r.status,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ),
        "{}",
        r.status
    );
    r.assert_outcome(r.status);
}

/// A request body that yields `chunks`, each after its delay.
fn async_stream_body(chunks: Vec<(std::time::Duration, Vec<u8>)>) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (delay, bytes) in chunks {
            tokio::time::sleep(delay).await;
            if tx.send(Ok(axum::body::Bytes::from(bytes))).await.is_err() {
                return;
            }
        }
    });
    axum::body::Body::from_stream(Chunks(rx))
}

/// The receiving end of a channel as a body stream.
struct Chunks(tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>);
impl futures_core::Stream for Chunks {
    type Item = Result<axum::body::Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserved_new_patient_id_cannot_be_written_through_bundles_either() {
    let h = Harness::unsealed();
    let mut p = patient("Res", "Erved", "1990-01-01");
    p["id"] = json!("new-patient");
    for kind in ["transaction", "batch"] {
        let r = h
            .call(
                "POST",
                "/fhir",
                Some(json!({"resourceType": "Bundle", "type": kind, "entry": [
                    {"resource": p, "request": {"method": "PUT", "url": "Patient/new-patient"}}]})),
            )
            .await;
        if kind == "transaction" {
            r.assert_outcome(StatusCode::BAD_REQUEST);
        } else {
            assert_eq!(
                r.json["entry"][0]["response"]["status"], "400",
                "{}",
                r.json
            );
        }
    }
    assert!(h.repo.read("Patient", "new-patient").is_err());
}

/// fhirclient, fhirpy and fhir-kit-client post transaction and batch Bundles to `[base]/`
/// (with a trailing slash); that is the same endpoint as `[base]`, authenticated and recorded
/// in the audit ledger the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_posted_to_the_base_with_a_trailing_slash() {
    let h = Harness::unsealed();
    let mut bundle = tx(vec![
        json!({"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
               "resource": patient("Slash", "Tess", "1999-09-09"),
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": observation("x", "8867-4", "2024-01-01", 70),
               "request": {"method": "POST", "url": "Observation"}}),
    ]);
    bundle["entry"][1]["resource"]["subject"]["reference"] =
        json!("urn:uuid:22222222-2222-4222-8222-222222222222");
    let r = h.call("POST", "/fhir/", Some(bundle)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["type"], "transaction-response");
    assert_eq!(r.json["entry"][1]["response"]["status"], "201 Created");
    assert_eq!(
        h.call("GET", "/fhir/Observation?code=8867-4", None)
            .await
            .json["total"],
        1
    );
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("Slash", "Ines", "1999-09-09"),
         "request": {"method": "POST", "url": "Patient"}}]});
    let r = h.call("POST", "/fhir/?", Some(batch)).await;
    assert_eq!(r.json["type"], "batch-response", "{}", r.json);

    // Recorded like a bundle posted to /fhir: its writes, then the summary entry.
    use medvault_store::Store;
    let keys = h.repo.vault().keys().unwrap();
    let last = h.data.store.ledger_entries(0, 100_000).unwrap();
    let last = medvault_server::ledger::open_entry(&keys, last.last().unwrap())
        .unwrap()
        .0;
    assert_eq!(last.action.as_str(), "bundle");

    // Only POST; and without a token where tokens are required, refused like /fhir.
    h.call("GET", "/fhir/", None)
        .await
        .assert_outcome(StatusCode::METHOD_NOT_ALLOWED);
    let h = Harness::unsealed_requiring_auth();
    h.call("POST", "/fhir/", Some(tx(vec![])))
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
}

/// SMART discovery is at `[FHIR base]/.well-known/smart-configuration` (SMART App Launch;
/// fhir-kit-client's `smartAuthMetadata` asks there), public even where FHIR needs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_discovery_is_also_under_the_fhir_base() {
    let h = Harness::unsealed_requiring_auth();
    let at_base = h
        .call("GET", "/fhir/.well-known/smart-configuration", None)
        .await;
    assert_eq!(at_base.status, StatusCode::OK, "{}", at_base.json);
    assert_eq!(at_base.json["token_endpoint"], format!("{BASE}/auth/token"));
    let at_root = h
        .call("GET", "/.well-known/smart-configuration", None)
        .await;
    assert_eq!(at_base.json, at_root.json);
}

/// fhirpy's conditional create puts its criteria in the query string (`POST
/// Patient?identifier=..`), which FHIR R4 does not define; a server that ignored them would
/// create a duplicate each time. They are refused; If-None-Exist is the conditional create.
/// An empty query (fhirpy always sends `?`) and `_format`/`_pretty` are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_parameters_on_a_create_are_refused_not_ignored() {
    let h = Harness::unsealed();
    let p = patient("Query", "Quinn", "1988-08-08");
    h.call(
        "POST",
        "/fhir/Patient?identifier=urn:mrn|MRN-Query-Quinn",
        Some(p.clone()),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(h.call("GET", "/fhir/Patient", None).await.json["total"], 0);
    for uri in ["/fhir/Patient?", "/fhir/Patient?_format=json&_pretty=true"] {
        let r = h.call("POST", uri, Some(p.clone())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{uri}: {}", r.json);
    }
    let again = h
        .call_with(
            "POST",
            "/fhir/Patient",
            Some(p),
            &[("if-none-exist", "identifier=urn:mrn|MRN-Query-Quinn")],
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        again.json
    );
}

/// Plain creates are prepared outside the repository's write lock. When several race to make
/// the first data key of one owner (here Observations of a patient not stored yet), the store
/// keeps one key and refuses the others' commits; those are prepared again under the lock
/// with the stored key. Every create succeeds and reads back.
#[test]
fn concurrent_creates_racing_for_a_new_owners_key_all_succeed() {
    let h = Harness::unsealed();
    for round in 0..5 {
        let written = all_at_once(&h, |_, repo, audit| {
            let resource = observation(&format!("new-owner-{round}"), "8867-4", "2024-01-02", 70);
            move || repo.create(&audit, "Observation", resource, None)
        });
        for written in written {
            let written = written.expect("a racing create must succeed");
            let read = h.repo.read("Observation", &written.stored.id).unwrap();
            assert_eq!(
                read.resource.unwrap()["subject"]["reference"],
                format!("Patient/new-owner-{round}")
            );
        }
    }
}

/// A large create-only transaction does not ask the store for the data key of a Patient it
/// creates (the id is one it drew). Should a key be stored under that id all the same
/// (here an Observation written first for the id the transaction will draw, foreseen with
/// the same seeded randomness), the store refuses the transaction's new key and the
/// transaction is prepared again, asking: it commits whole, under the stored key, and
/// everything, old and new, reads back.
#[test]
fn a_new_patient_id_that_already_has_a_data_key_is_prepared_again_under_that_key() {
    use medvault_crypto::DeterministicRandom;
    use medvault_server::repo::Repository;
    use std::sync::Arc;

    let audit = medvault_server::ledger::Audit::system("test");
    let anyone = medvault_server::access::Caller::Anonymous;
    let urn = "urn:uuid:22222222-2222-4222-8222-222222222222";
    let bundle = || {
        let mut entries = vec![json!({
            "fullUrl": urn,
            "resource": patient("Okafor", "Chidi", "1990-02-03"),
            "request": {"method": "POST", "url": "Patient"}
        })];
        for i in 0..19 {
            let mut obs = observation("x", "8867-4", "2024-01-02", 60 + i);
            obs["subject"]["reference"] = json!(urn);
            entries.push(
                json!({"resource": obs, "request": {"method": "POST", "url": "Observation"}}),
            );
        }
        tx(entries)
    };
    let patient_id = |answer: &Value| {
        answer["entry"][0]["fullUrl"]
            .as_str()
            .unwrap()
            .strip_prefix("Patient/")
            .unwrap()
            .to_owned()
    };
    // The id the transaction draws on a fresh harness (same seed, same history).
    let foreseen = {
        let h = Harness::unsealed();
        patient_id(&h.repo.bundle(&audit, bundle(), &anyone).unwrap().0)
    };
    let h = Harness::unsealed();
    // Another node (its own vault, so its key cache is its own, and its own randomness, so
    // the harness's draws are unchanged) stores an Observation of that patient first, and
    // with it the patient's data key.
    let rng: Arc<dyn medvault_crypto::Random> = Arc::new(DeterministicRandom::new(99));
    let vault = Arc::new(medvault_server::vault::Vault::new(
        h.data.store.clone(),
        rng.clone(),
    ));
    vault.submit_share(&h.shares[0]).unwrap();
    let other = Repository::new(
        h.data.store.clone(),
        h.data.blobs.clone(),
        vault,
        h.clock.clone(),
        rng,
    );
    let earlier = other
        .create(
            &audit,
            "Observation",
            observation(&foreseen, "8480-6", "2023-05-06", 120),
            None,
        )
        .unwrap();
    let (answer, _) = h.repo.bundle(&audit, bundle(), &anyone).unwrap();
    assert_eq!(patient_id(&answer), foreseen);
    assert_eq!(h.repo.pipelined_commits(), 1);
    assert_eq!(
        h.repo.retried_commits(),
        1,
        "the new key is refused, then the stored one used"
    );
    let entries = answer["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 20);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created");
        let (rtype, id) = e["fullUrl"].as_str().unwrap().split_once('/').unwrap();
        assert!(
            h.repo.read(rtype, id).unwrap().resource.is_some(),
            "{rtype}/{id}"
        );
    }
    // The other node's only key for this patient is the stored one, so its reads show that
    // the transaction's versions are under that key.
    for e in entries {
        let (rtype, id) = e["fullUrl"].as_str().unwrap().split_once('/').unwrap();
        assert!(
            other.read(rtype, id).unwrap().resource.is_some(),
            "{rtype}/{id}"
        );
    }
    let read = h.repo.read("Observation", &earlier.stored.id).unwrap();
    assert_eq!(read.resource.unwrap()["valueQuantity"]["value"], 120);
    let found = h
        .repo
        .search("Observation", &[("patient".into(), foreseen.clone())])
        .unwrap();
    assert_eq!(found.entries.len(), 20);
    // The retry prepared each write again from the resources the first try prepared (kept
    // until the COMMIT, before which a conflict comes): the values are the transaction's,
    // the earlier Observation's beside them.
    let mut values: Vec<i64> = found
        .entries
        .iter()
        .map(|s| {
            s.resource.as_ref().unwrap()["valueQuantity"]["value"]
                .as_i64()
                .unwrap()
        })
        .collect();
    values.sort();
    let mut want: Vec<i64> = (60..79).collect();
    want.push(120);
    want.sort();
    assert_eq!(values, want);
}

/// Eight writers on the repository, released at once by a barrier; their results in order.
/// `make(w, repo, audit)` builds writer `w`'s work before the start.
fn all_at_once<T, F>(
    h: &Harness,
    make: impl Fn(
        u32,
        std::sync::Arc<medvault_server::repo::Repository>,
        medvault_server::ledger::Audit,
    ) -> F,
) -> Vec<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use std::sync::{Arc, Barrier};
    let barrier = Arc::new(Barrier::new(8));
    let audit = medvault_server::ledger::Audit::system("test");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let work = make(w, h.repo.clone(), audit.clone());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                work()
            })
        })
        .collect();
    writers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// The same race for transactions that only create: they are prepared without the write
/// lock, and a transaction whose commit loses the race for a new owner's first data key is
/// prepared again under the lock. Every transaction commits whole and reads back. Small
/// transactions are prepared before their commit; large ones (20 entries here) while it is
/// written, so both ways lose the race and retry.
#[test]
fn concurrent_create_only_transactions_racing_for_a_new_owners_key_all_succeed() {
    for size in [2, 20] {
        create_only_transactions_race(size);
    }
}

fn create_only_transactions_race(size: usize) {
    let h = Harness::unsealed();
    for round in 0..5 {
        let answers = all_at_once(&h, |w, repo, audit| {
            let owner = format!("tx-owner-{round}");
            let entry = |code: &str| {
                json!({
                    "resource": observation(&owner, code, "2024-01-02", w),
                    "request": { "method": "POST", "url": "Observation" }
                })
            };
            let codes = ["8867-4", "8480-6"];
            let bundle = tx((0..size).map(|i| entry(codes[i % 2])).collect());
            move || repo.bundle(&audit, bundle, &medvault_server::access::Caller::Anonymous)
        });
        for answer in answers {
            let (answer, _) = answer.expect("a racing transaction must succeed");
            let entries = answer["entry"].as_array().unwrap();
            assert_eq!(entries.len(), size);
            for e in entries {
                assert_eq!(e["response"]["status"], "201 Created");
                let id = e["fullUrl"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("Observation/")
                    .unwrap();
                let read = h.repo.read("Observation", id).unwrap();
                assert_eq!(
                    read.resource.unwrap()["subject"]["reference"],
                    format!("Patient/tx-owner-{round}")
                );
            }
        }
    }
}

/// A version's row never points at a blob that was not stored: when the blob store refuses
/// the write, the create fails and no row is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_whose_blob_cannot_be_stored_is_not_created() {
    let h = Harness::unsealed();
    // Where the blobs of DocumentReferences go, a file: nothing can be created under it
    // (as root too, which file permissions would not stop).
    let resources = h.data.path.join("blobs").join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(resources.join("DocumentReference"), b"in the way").unwrap();
    let doc = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain",
            "data": base64_of(&"x".repeat(400 * 1024))}}],
    });
    let r = h.call("POST", "/fhir/DocumentReference", Some(doc)).await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.json);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM resource_version WHERE rtype = 'DocumentReference'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    // A small one (inline, no blob) is still created: the refusal was the blob store's.
    let small = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64_of("ok")}}],
    });
    let r = h.call("POST", "/fhir/DocumentReference", Some(small)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
}
