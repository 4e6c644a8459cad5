//! Transaction and batch Bundles: a transaction commits every entry or none (one store
//! write), with `urn:uuid` references rewritten to the ids it assigns; a batch runs each
//! entry on its own and reports per-entry outcomes. For a signed-in caller every entry is
//! decided by the access policy through a `Gate` (a transaction before anything is written).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use medvault_ledger::Outcome;
use medvault_policy::Action;

use crate::access::NEW_PATIENT;
use crate::clock::format_instant;
use crate::ledger::{Audit, Event};
use crate::outcome;
use crate::repo::{
    check_if_match, new_uuid, parse_query_string, patient_of_resource, patient_of_stored,
    unless_panic, PendingKeys, PreparedWrite, RepoError, Repository, Result, Stored,
};
use crate::vault::Keys;

/// Largest number of entries accepted in one Bundle.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

struct Entry {
    index: usize,
    method: Method,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

/// One access a bundle entry makes, to be decided for the caller.
pub(crate) struct Touch<'a> {
    pub action: Action,
    pub rtype: &'a str,
    /// The compartment (bare patient id; `NEW_PATIENT` for a patient not stored yet).
    pub patient: String,
    pub id: Option<&'a str>,
    pub resource: Option<&'a Value>,
}

/// Decides one access; `None` means the caller is not subject to the policy (anonymous
/// under `--danger-no-auth`).
pub(crate) type Gate<'g> = Option<&'g dyn Fn(&Touch<'_>) -> Result<()>>;

fn refused(code: &'static str) -> RepoError {
    RepoError::Forbidden {
        reason: code,
        break_glass_available: false,
        patient: None,
    }
}

fn check(gate: Gate<'_>, t: Touch<'_>) -> Result<()> {
    gate.map_or(Ok(()), |g| g(&t))
}

/// Decide a read of a stored resource.
fn check_read(gate: Gate<'_>, s: &Stored) -> Result<()> {
    check(
        gate,
        Touch {
            action: Action::Read,
            rtype: &s.rtype,
            patient: patient_of_stored(s),
            id: Some(&s.id),
            resource: s.resource.as_ref(),
        },
    )
}

/// Decide a change (`Update` or `Delete`) of the stored current version of a resource.
fn check_current(
    gate: Gate<'_>,
    repo: &Repository,
    action: Action,
    rtype: &str,
    id: &str,
) -> Result<()> {
    if gate.is_none() {
        return Ok(());
    }
    match repo.read(rtype, id) {
        Ok(s) => check(
            gate,
            Touch {
                action,
                rtype,
                patient: patient_of_stored(&s),
                id: Some(id),
                resource: s.resource.as_ref(),
            },
        ),
        Err(RepoError::NotFound | RepoError::Gone) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The compartment of a resource about to be written: a Patient is its own (the
/// placeholder when it is new); anything else its patient's, the placeholder when that
/// patient is created in the same transaction.
fn compartment(rtype: &str, id: &str, value: &Value, new_patients: &HashSet<String>) -> String {
    let p = if rtype == "Patient" {
        id.to_string()
    } else {
        patient_of_resource(value)
    };
    if new_patients.contains(&p) {
        NEW_PATIENT.to_string()
    } else {
        p
    }
}

fn bad(index: usize, msg: &str) -> RepoError {
    RepoError::BadRequest(format!("Bundle.entry[{index}]: {msg}"))
}

/// Parse an `If-Match` value: `W/"3"`, `"3"` or `3`.
pub fn parse_etag(v: &str) -> Option<i64> {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn parse_entries(mut bundle: Value) -> Result<(bool, Vec<Entry>)> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(RepoError::BadRequest(
            "POST to the base URL expects a Bundle".into(),
        ));
    }
    let transaction = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        _ => {
            return Err(RepoError::BadRequest(
                "Bundle.type must be transaction or batch".into(),
            ))
        }
    };
    // Take the entries out of the bundle rather than copying every resource.
    let mut raw = match bundle.get_mut("entry").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(RepoError::BadRequest(
                "Bundle.entry must be an array".into(),
            ))
        }
    };
    if raw.len() > MAX_ENTRIES {
        return Err(RepoError::BadRequest(format!(
            "a Bundle may have at most {MAX_ENTRIES} entries"
        )));
    }
    let mut entries = Vec::with_capacity(raw.len());
    for (index, e) in raw.iter_mut().enumerate() {
        // One pass over the entry's members and its request's, rather than a hash lookup
        // per member: the lookups were nearly three quarters of this function, which runs
        // on the transaction's thread before any other work can start. Keys are unique in
        // a parsed object, so this finds what lookups would.
        let (mut resource, mut request, mut full_url) = (None, None, None);
        if let Value::Object(members) = e {
            for (key, value) in members.iter_mut() {
                match key.as_str() {
                    // Taken rather than copied; the rest is read in place.
                    "resource" => resource = Some(value.take()),
                    "request" => request = Some(&*value),
                    "fullUrl" => full_url = value.as_str().map(String::from),
                    _ => {}
                }
            }
        }
        let request = request.ok_or_else(|| bad(index, "request is required"))?;
        let (mut method, mut url, mut if_match, mut if_none_exist) = (None, None, None, None);
        if let Value::Object(members) = request {
            for (key, value) in members {
                match key.as_str() {
                    "method" => method = value.as_str(),
                    "url" => url = value.as_str(),
                    "ifMatch" => if_match = value.as_str(),
                    "ifNoneExist" => if_none_exist = value.as_str(),
                    _ => {}
                }
            }
        }
        let method = match method {
            Some("GET") => Method::Get,
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            Some("DELETE") => Method::Delete,
            _ => {
                return Err(bad(
                    index,
                    "request.method must be GET, POST, PUT or DELETE",
                ))
            }
        };
        let url = url
            .ok_or_else(|| bad(index, "request.url is required"))?
            .trim_start_matches('/')
            .to_string();
        if matches!(method, Method::Post | Method::Put) && resource.is_none() {
            return Err(bad(index, "resource is required for POST and PUT"));
        }
        let if_match = match if_match {
            Some(v) => Some(
                parse_etag(v).ok_or_else(|| bad(index, "request.ifMatch is not a version ETag"))?,
            ),
            None => None,
        };
        entries.push(Entry {
            index,
            method,
            url,
            full_url,
            resource,
            if_none_exist: if_none_exist.map(String::from),
            if_match,
        });
    }
    Ok((transaction, entries))
}

/// For `crate::fuzzing` only: every step a Bundle goes through before the repository,
/// the keys or the clock are used, run on untrusted input. Entries are parsed as
/// `process` parses them; then, as `run_transaction` plans and `run_single` runs them,
/// each URL is split, checked and (for a search) parsed, `fullUrl`s are mapped to
/// `Type/id` (a fixed id stands in for a generated one), references are rewritten, and
/// each resource's compartment is worked out and the resource validated. No I/O.
pub(crate) fn parse_for_fuzzing(bundle: Value) -> Result<usize> {
    let (_transaction, mut entries) = parse_entries(bundle)?;
    let mut map: HashMap<String, String> = HashMap::new();
    for e in &entries {
        let (rtype, id, query) = split_url(&e.url);
        let id_ok = id.is_some_and(medvault_fhir::is_valid_id);
        if e.method == Method::Get && id.is_none() {
            // A failing search fails only its own entry here; keep going.
            let _ = crate::repo::parse_query(rtype, &parse_query_string(query.unwrap_or("")));
        }
        if let Some(full) = &e.full_url {
            if medvault_fhir::is_supported_type(rtype) && (id.is_none() || id_ok) {
                let id = id.unwrap_or("00000000-0000-4000-8000-000000000000");
                map.insert(full.clone(), format!("{rtype}/{id}"));
            }
        }
    }
    let new_patients: HashSet<String> = map
        .values()
        .filter_map(|r| r.strip_prefix("Patient/").map(str::to_owned))
        .collect();
    for e in &mut entries {
        let (rtype, id, _) = split_url(&e.url);
        if let Some(r) = e.resource.as_mut() {
            medvault_fhir::rewrite_references(r, &map);
            let _ = compartment(rtype, id.unwrap_or(""), r, &new_patients);
            let _ = medvault_fhir::validate(r);
        }
    }
    Ok(entries.len())
}

/// `Type` or `Type/id` of an entry URL (query string removed).
fn split_url(url: &str) -> (&str, Option<&str>, Option<&str>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    match path.split_once('/') {
        Some((t, id)) => (t, Some(id), query),
        None => (path, None, query),
    }
}

fn response(status: &str, stored: Option<&Stored>) -> Value {
    let mut r = serde_json::Map::with_capacity(4);
    r.insert("status".into(), Value::String(status.into()));
    if let Some(s) = stored {
        // Concatenated rather than `format!`ed: a large transaction answers hundreds.
        let version = s.version.to_string();
        r.insert(
            "location".into(),
            Value::String([&s.rtype, "/", &s.id, "/_history/", &version].concat()),
        );
        r.insert(
            "etag".into(),
            Value::String(["W/\"", &version, "\""].concat()),
        );
        r.insert(
            "lastModified".into(),
            Value::String(format_instant(s.updated_ms)),
        );
    }
    Value::Object(r)
}

/// A searchset entry: the resource found, moved in.
pub(crate) fn search_match(full_url: String, resource: Option<Value>) -> Value {
    object([
        ("fullUrl", Value::String(full_url)),
        ("resource", resource.unwrap_or(Value::Null)),
        ("search", json!({ "mode": "match" })),
    ])
}

/// A JSON object from its members, moved in (`json!` would deep-copy every `Value`
/// interpolated into it, which is most of a large transaction's answer).
fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A Bundle answering a batch or transaction.
fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    object([
        ("resourceType", Value::String("Bundle".into())),
        ("type", Value::String(kind.into())),
        ("entry", Value::Array(entries)),
    ])
}

/// Entries of a batch the policy refused: the patient concerned and the reason (each is
/// recorded in that patient's log like any refusal).
pub(crate) type Refused = Vec<(String, &'static str)>;

pub(crate) fn process(
    repo: &Repository,
    audit: &Audit,
    bundle: Value,
    gate: Gate<'_>,
) -> Result<(Value, Refused)> {
    let (transaction, entries) = parse_entries(bundle)?;
    if transaction {
        Ok((run_transaction(repo, audit, entries, gate)?, Vec::new()))
    } else {
        Ok(run_batch(repo, audit, entries, gate))
    }
}

fn run_batch(
    repo: &Repository,
    audit: &Audit,
    entries: Vec<Entry>,
    gate: Gate<'_>,
) -> (Value, Refused) {
    let mut out = Vec::with_capacity(entries.len());
    let mut refused = Vec::new();
    for e in entries {
        let result = run_single(repo, audit, &e, gate);
        if let Err(RepoError::Forbidden {
            reason, patient, ..
        }) = &result
        {
            refused.push((patient.clone().unwrap_or_default(), *reason));
        }
        out.push(match result {
            Ok(v) => v,
            Err(err) => {
                let (status, oo) = outcome::for_repo_error(&err);
                json!({ "response": { "status": status.as_u16().to_string(), "outcome": oo } })
            }
        });
    }
    (response_bundle("batch-response", out), refused)
}

fn run_single(repo: &Repository, audit: &Audit, e: &Entry, gate: Gate<'_>) -> Result<Value> {
    let (rtype, id, query) = split_url(&e.url);
    let none = HashSet::new();
    match e.method {
        Method::Get => read_entry(repo, rtype, id, query, gate),
        Method::Post => {
            let resource = e.resource.clone().unwrap_or(Value::Null);
            if gate.is_some() {
                // A condition is a search over every chart; signed-in callers use the REST
                // create, where it is limited to the chart written to.
                if e.if_none_exist.is_some() {
                    return Err(refused("conditional-create-in-bundle"));
                }
                let patient = if rtype == "Patient" {
                    NEW_PATIENT.to_string()
                } else {
                    compartment(rtype, "", &resource, &none)
                };
                check(
                    gate,
                    Touch {
                        action: Action::Create,
                        rtype,
                        patient,
                        id: None,
                        resource: Some(&resource),
                    },
                )?;
            }
            let w = repo.create(audit, rtype, resource, e.if_none_exist.as_deref())?;
            let status = if w.created { "201 Created" } else { "200 OK" };
            let answer = response(status, Some(&w.stored));
            Ok(object([
                ("resource", w.stored.resource.unwrap_or(Value::Null)),
                ("response", answer),
            ]))
        }
        Method::Put => {
            let id = id.ok_or_else(|| bad(e.index, "PUT needs Type/id"))?;
            if rtype == "Patient" && id == NEW_PATIENT {
                return Err(bad(e.index, "this Patient id is reserved"));
            }
            if gate.is_some() {
                let exists = repo.read(rtype, id).is_ok();
                check_current(gate, repo, Action::Update, rtype, id)?;
                let value = e.resource.clone().unwrap_or(Value::Null);
                check(
                    gate,
                    Touch {
                        action: if exists {
                            Action::Update
                        } else {
                            Action::Create
                        },
                        rtype,
                        patient: compartment(rtype, id, &value, &none),
                        id: Some(id),
                        resource: Some(&value),
                    },
                )?;
            }
            let w = repo.update(
                audit,
                rtype,
                id,
                e.resource.clone().unwrap_or(Value::Null),
                e.if_match,
            )?;
            let status = if w.created { "201 Created" } else { "200 OK" };
            let answer = response(status, Some(&w.stored));
            Ok(object([
                ("resource", w.stored.resource.unwrap_or(Value::Null)),
                ("response", answer),
            ]))
        }
        Method::Delete => {
            let id = id.ok_or_else(|| bad(e.index, "DELETE needs Type/id"))?;
            check_current(gate, repo, Action::Delete, rtype, id)?;
            repo.delete(audit, rtype, id, e.if_match)?;
            Ok(json!({ "response": { "status": "204 No Content" } }))
        }
    }
}

fn read_entry(
    repo: &Repository,
    rtype: &str,
    id: Option<&str>,
    query: Option<&str>,
    gate: Gate<'_>,
) -> Result<Value> {
    match id {
        Some(id) => {
            let s = repo.read(rtype, id)?;
            check_read(gate, &s)?;
            let answer = response("200 OK", Some(&s));
            Ok(object([
                ("resource", s.resource.unwrap_or(Value::Null)),
                ("response", answer),
            ]))
        }
        // Searches in bundles are not filtered by the policy; signed-in callers search
        // through the REST API.
        None if gate.is_some() => Err(refused("search-in-bundle")),
        None => {
            let pairs = parse_query_string(query.unwrap_or(""));
            let page = repo.search(rtype, &pairs)?;
            // Built with `object`: `json!` would serialize (copy) the resources.
            let entries = page
                .entries
                .into_iter()
                .map(|s| search_match(format!("{}/{}", s.rtype, s.id), s.resource));
            let inner = object([
                ("resourceType", json!("Bundle")),
                ("type", json!("searchset")),
                ("total", json!(page.total)),
                ("entry", Value::Array(entries.collect())),
            ]);
            Ok(object([
                ("resource", inner),
                ("response", json!({ "status": "200 OK" })),
            ]))
        }
    }
}

/// A write of a transaction before preparation.
struct Job {
    index: usize,
    rtype: String,
    id: String,
    version: i64,
    expected: Option<i64>,
    resource: Value,
    created: bool,
}

enum Work {
    Job(Job),
    /// Already prepared (deletions need no encryption).
    Ready(usize, Box<PreparedWrite>),
}

/// The machine's cores, asked once (the answer comes from reading cgroup files).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// From this many writes up to `PIPELINE_MAX`, a create-only transaction is prepared while
/// it is written. Above it, preparing would hold the ledger and the store's writer for too
/// long (every recorded request, reads included, waits for the ledger).
const PIPELINE_MIN: usize = 16;
const PIPELINE_MAX: usize = 1_000;

/// Below this many writes a transaction is prepared on the calling thread. Measured with
/// `medvault bench ingest` on 2 cores: Bundles of about 45 entries were slower prepared
/// in parallel (waking the pool's threads costs more than half the work saves).
const PARALLEL_MIN: usize = 64;

/// Step 2 of a transaction for one entry: rewrite its references and decide its version.
fn plan_write(
    repo: &Repository,
    keys: &Keys,
    e: &mut Entry,
    plan: &Plan,
    map: &HashMap<String, String>,
    now: i64,
    work: &mut Vec<Work>,
) -> Result<()> {
    if let Some(r) = e.resource.as_mut() {
        medvault_fhir::rewrite_references(r, map);
    }
    match plan {
        Plan::Create { rtype, id } => work.push(Work::Job(create_job(e, rtype, id))),
        Plan::Update { rtype, id } => {
            let mut r = e.resource.take().unwrap_or(Value::Null);
            match r.get("id").and_then(Value::as_str) {
                Some(body_id) if body_id == id => {}
                Some(_) => return Err(bad(e.index, "resource id does not match the url")),
                None => {
                    if let Some(o) = r.as_object_mut() {
                        o.insert("id".into(), Value::String(id.clone()));
                    }
                }
            }
            let current = repo.current_record(rtype, id)?;
            check_if_match(current.as_ref(), e.if_match)?;
            let created = current.as_ref().is_none_or(|c| c.is_deleted());
            let cur = current.map(|c| c.version);
            work.push(Work::Job(Job {
                index: e.index,
                rtype: rtype.clone(),
                id: id.clone(),
                version: cur.unwrap_or(0) + 1,
                expected: cur,
                resource: r,
                created,
            }));
        }
        Plan::Delete { rtype, id } => {
            let current = repo.current_record(rtype, id)?;
            check_if_match(current.as_ref(), e.if_match)?;
            if let Some(cur) = current.filter(|c| !c.is_deleted()) {
                let patient = repo.patient_for_delete(keys, &cur);
                work.push(Work::Ready(
                    e.index,
                    Box::new(repo.prepare_delete(&cur, now, patient)),
                ));
            }
        }
        Plan::Existing(_) | Plan::Get => {}
    }
    Ok(())
}

/// The write of a planned create: the entry's resource (references already rewritten).
fn create_job(e: &mut Entry, rtype: &str, id: &str) -> Job {
    Job {
        index: e.index,
        rtype: rtype.to_owned(),
        id: id.to_owned(),
        version: 1,
        expected: None,
        resource: e.resource.take().unwrap_or(Value::Null),
        created: true,
    }
}

/// The ids of the Patients a transaction creates (their charts are new: see `compartment`).
fn new_patient_ids(plans: &[Plan]) -> HashSet<String> {
    plans
        .iter()
        .filter_map(|p| match p {
            Plan::Create { rtype, id } if rtype == "Patient" => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Step 2b for one planned write: the signed-in caller's decision on the version it
/// writes (a PUT that creates is decided as a create).
fn decide_job(gate: Gate<'_>, j: &Job, new_patients: &HashSet<String>) -> Result<()> {
    let action = if j.created {
        Action::Create
    } else {
        Action::Update
    };
    check(
        gate,
        Touch {
            action,
            rtype: &j.rtype,
            patient: compartment(&j.rtype, &j.id, &j.resource, new_patients),
            id: (action == Action::Update).then_some(j.id.as_str()),
            resource: Some(&j.resource),
        },
    )
}

/// Validate, encrypt and index one planned write; its errors name its entry.
fn prepare_job(
    repo: &Repository,
    keys: &Keys,
    j: Job,
    now: i64,
    pending: &PendingKeys,
) -> Result<PreparedWrite> {
    repo.prepare_version(
        keys, &j.rtype, &j.id, j.version, j.expected, j.resource, now, pending,
    )
    .map_err(|err| in_entry(j.index, err))
}

/// Prepare every write, in entry order; the first failing entry (by index) is the error.
fn prepare_all(
    repo: &Repository,
    keys: &Keys,
    work: Vec<Work>,
    now: i64,
    pending: &PendingKeys,
) -> Result<Vec<(usize, PreparedWrite, bool)>> {
    let one = |w: Work| -> Result<(usize, PreparedWrite, bool)> {
        match w {
            Work::Ready(index, p) => Ok((index, *p, false)),
            Work::Job(j) => {
                let (index, created) = (j.index, j.created);
                // A panic while preparing is this entry's internal error, on whichever thread.
                let p = unless_panic(|| prepare_job(repo, keys, j, now, pending))?;
                Ok((index, p, created))
            }
        }
    };
    if cores() < 2 || work.len() < PARALLEL_MIN {
        return work.into_iter().map(one).collect();
    }
    // rayon's pool lives as long as the process: no thread is started per transaction
    // (a new thread also starts with an empty allocator heap, whose first pages fault in).
    // Every result is kept, in entry order, so the error reported is the first entry's.
    use rayon::prelude::*;
    let results: Vec<Result<(usize, PreparedWrite, bool)>> =
        work.into_par_iter().with_min_len(4).map(one).collect();
    results.into_iter().collect()
}

/// Point validation issues at the transaction entry they came from.
fn in_entry(index: usize, err: RepoError) -> RepoError {
    match err {
        RepoError::Invalid(issues) => RepoError::Invalid(
            issues
                .into_iter()
                .map(|mut i| {
                    i.expression = format!("Bundle.entry[{index}].resource.{}", i.expression);
                    i
                })
                .collect(),
        ),
        RepoError::BadRequest(msg) if !msg.starts_with("Bundle.entry[") => {
            RepoError::BadRequest(format!("Bundle.entry[{index}]: {msg}"))
        }
        other => other,
    }
}

/// Planned action for one transaction entry.
enum Plan {
    Create { rtype: String, id: String },
    Existing(Stored),
    Update { rtype: String, id: String },
    Delete { rtype: String, id: String },
    Get,
}

fn run_transaction(
    repo: &Repository,
    audit: &Audit,
    mut entries: Vec<Entry>,
    gate: Gate<'_>,
) -> Result<Value> {
    let keys = repo.keys()?;
    // A transaction that only creates depends on nothing another writer could change
    // between its planning and its commit: its ids are new. It is planned and prepared
    // without the write lock, beside other writers' commits; see `Repository::commit_all`
    // for the one race it can lose. Updates, deletes and conditional creates read what they
    // replace or match, so they hold the lock throughout; so do a signed-in caller's reads,
    // which are decided at planning and answered after the commit (without the lock another
    // writer could move the resource to a patient the decision never saw).
    let locked = needs_write_lock(&entries, gate.is_some());
    let _guard = locked.then(|| repo.lock_writes());
    let now = repo.clock().now_ms();

    // 1. Decide what each entry does and which ids it gets; map fullUrls to real references.
    // Sized up front: their rehashing showed in profiles of 280-entry Bundles.
    let mut map: HashMap<String, String> = HashMap::with_capacity(entries.len());
    let mut plans = Vec::with_capacity(entries.len());
    let mut touched: HashSet<(String, String)> = HashSet::with_capacity(entries.len());
    for e in &entries {
        let (rtype, id, _) = split_url(&e.url);
        if e.method != Method::Get && !medvault_fhir::is_supported_type(rtype) {
            return Err(bad(e.index, "resource type is not supported"));
        }
        let plan = match e.method {
            Method::Get => {
                // Check reads before anything is written: once the writes are committed a
                // read can no longer fail the transaction.
                if !medvault_fhir::is_supported_type(rtype) {
                    return Err(bad(e.index, "resource type is not supported"));
                }
                match (id, split_url(&e.url).2) {
                    (Some(id), _) if !medvault_fhir::is_valid_id(id) => {
                        return Err(bad(e.index, "invalid resource id"))
                    }
                    // Decided now, on the stored version: nothing in this transaction may
                    // be readable only because of what it writes.
                    (Some(id), _) if gate.is_some() => match repo.read(rtype, id) {
                        Ok(s) => check_read(gate, &s)?,
                        Err(RepoError::NotFound | RepoError::Gone) => {}
                        Err(err) => return Err(err),
                    },
                    (None, _) if gate.is_some() => return Err(refused("search-in-bundle")),
                    (None, query) => {
                        let pairs = parse_query_string(query.unwrap_or(""));
                        crate::repo::parse_query(rtype, &pairs)?;
                    }
                    _ => {}
                }
                Plan::Get
            }
            Method::Post => {
                if id.is_some() {
                    return Err(bad(e.index, "POST url must be a resource type"));
                }
                if gate.is_some() && e.if_none_exist.is_some() {
                    return Err(refused("conditional-create-in-bundle"));
                }
                let existing = match &e.if_none_exist {
                    Some(q) => repo.conditional_match(&keys, rtype, q)?,
                    None => None,
                };
                match existing {
                    Some(s) => Plan::Existing(s),
                    None => Plan::Create {
                        rtype: rtype.into(),
                        id: new_uuid(&**repo.rng())?,
                    },
                }
            }
            Method::Put => {
                let id = id
                    .filter(|i| medvault_fhir::is_valid_id(i))
                    .ok_or_else(|| bad(e.index, "PUT url must be Type/id with a valid id"))?;
                if rtype == "Patient" && id == NEW_PATIENT {
                    return Err(bad(e.index, "this Patient id is reserved"));
                }
                Plan::Update {
                    rtype: rtype.into(),
                    id: id.into(),
                }
            }
            Method::Delete => {
                let id = id
                    .filter(|i| medvault_fhir::is_valid_id(i))
                    .ok_or_else(|| bad(e.index, "DELETE url must be Type/id"))?;
                Plan::Delete {
                    rtype: rtype.into(),
                    id: id.into(),
                }
            }
        };
        let target = match &plan {
            Plan::Create { rtype, id }
            | Plan::Update { rtype, id }
            | Plan::Delete { rtype, id } => Some((rtype.clone(), id.clone())),
            Plan::Existing(s) => Some((s.rtype.clone(), s.id.clone())),
            Plan::Get => None,
        };
        if let Some((t, i)) = target {
            if let Some(full) = &e.full_url {
                map.insert(full.clone(), format!("{t}/{i}"));
            }
            if !matches!(plan, Plan::Existing(_)) && !touched.insert((t, i)) {
                return Err(bad(
                    e.index,
                    "the same resource appears twice in one transaction",
                ));
            }
        }
        plans.push(plan);
    }

    // A large create-only transaction is planned, prepared and written at once (every
    // write is a create: `locked` is false only for creates and ungated reads).
    let creates = plans
        .iter()
        .filter(|p| matches!(p, Plan::Create { .. }))
        .count();
    if !locked && (PIPELINE_MIN..=PIPELINE_MAX).contains(&creates) {
        return run_pipelined(repo, audit, &keys, entries, plans, &map, gate, now, creates);
    }

    // 2. Rewrite references and decide each write's version (reads the store).
    let mut work: Vec<Work> = Vec::new();
    // An entry that fails here stops planning; entries before it are still prepared so that
    // the error reported is always the first failing entry's.
    let mut first_err: Option<RepoError> = None;
    for (e, plan) in entries.iter_mut().zip(&plans) {
        if let Err(err) = plan_write(repo, &keys, e, plan, &map, now, &mut work) {
            first_err = Some(in_entry(e.index, err));
            break;
        }
    }

    // 2b. Decide every write for a signed-in caller, before anything is prepared: the
    //     version replaced (updates, deletes) and the version written (creates, updates).
    if first_err.is_none() && gate.is_some() {
        let new_patients = new_patient_ids(&plans);
        for w in &work {
            match w {
                Work::Job(j) => {
                    if !j.created {
                        check_current(gate, repo, Action::Update, &j.rtype, &j.id)?;
                    }
                    decide_job(gate, j, &new_patients)?;
                }
                Work::Ready(index, _) => {
                    if let Plan::Delete { rtype, id } = &plans[*index] {
                        check_current(gate, repo, Action::Delete, rtype, id)?;
                    }
                }
            }
        }
    }

    // 3. Data keys for new patients (sequential, cheap), then validate, encrypt and index
    //    every write, on all cores for large transactions.
    let pending = PendingKeys::default();
    for w in &work {
        if let Work::Job(j) = w {
            repo.ensure_dek(&keys, &j.rtype, &j.id, &j.resource, &pending)?;
        }
    }
    let prepared = prepare_all(repo, &keys, work, now, &pending)?;
    if let Some(err) = first_err {
        return Err(err);
    }
    let mut writes = Vec::with_capacity(prepared.len());
    let mut write_slot = vec![None; entries.len()];
    for (index, p, created) in prepared {
        write_slot[index] = Some((writes.len(), created));
        writes.push(p);
    }

    // 4. One atomic commit for all writes.
    let stored = repo.commit_all(&keys, audit, writes, pending, locked)?;
    let answered = answer(repo, &entries, plans, &write_slot, &stored, None);
    free_here((stored, entries));
    answered
}

/// Steps 2 to 5 of a large create-only transaction (`creates` writes, no lock held): each
/// create is planned as in `plan_write`, decided for a signed-in caller as in step 2b and
/// given its data key, then handed to a pool thread that prepares it while the next ones
/// are planned and, after them, while the versions are written (`commit_pipelined`).
/// Nothing is committed unless every entry passes; the error is the first entry's that
/// fails (a refusal is found in planning, before any version is written).
#[allow(clippy::too_many_arguments)]
fn run_pipelined(
    repo: &Repository,
    audit: &Audit,
    keys: &Keys,
    mut entries: Vec<Entry>,
    plans: Vec<Plan>,
    map: &HashMap<String, String>,
    gate: Gate<'_>,
    now: i64,
    creates: usize,
) -> Result<Value> {
    let new_patients = new_patient_ids(&plans);
    let mut write_slot = vec![None; entries.len()];
    // Every create here has an id the server drew (creates with a caller's id are PUTs,
    // which take the locked path), so a data key stored for a new Patient would take a
    // random id colliding with an existing owner's: not looked up, and refused by the store
    // should it happen (the transaction is then prepared again, looking keys up).
    let pending = PendingKeys::with_new_patients(new_patients.iter().map(String::as_str));
    let (stored, made) = repo.commit_pipelined(
        keys,
        audit,
        creates,
        &pending,
        |publish: &dyn Fn(Job)| {
            let mut events = Vec::with_capacity(creates);
            for (e, plan) in entries.iter_mut().zip(&plans) {
                let Plan::Create { rtype, id } = plan else {
                    continue;
                };
                if let Some(r) = e.resource.as_mut() {
                    medvault_fhir::rewrite_references(r, map);
                }
                let job = create_job(e, rtype, id);
                if gate.is_some() {
                    decide_job(gate, &job, &new_patients)?;
                }
                let patient = repo.ensure_dek(keys, rtype, id, &job.resource, &pending)?;
                events.push(Event::new("create", rtype, id, Outcome::Allow).patient(&patient));
                write_slot[e.index] = Some((events.len() - 1, true));
                publish(job);
            }
            Ok(events)
        },
        |j: Job| prepare_job(repo, keys, j, now, &pending),
        // Every write of this path is a create.
        |s: &Stored| write_entry(s, true),
    )?;
    let answered = answer(repo, &entries, plans, &write_slot, &stored, made);
    free_here((stored, entries));
    answered
}

/// Free a transaction's parsed resources here, on the thread that parsed them (the API
/// parses a Bundle on the thread that runs it). Freed on another thread, as they once were
/// to keep the drop off the answer's path, each of a JSON tree's many small blocks went back
/// through the allocator's cross-thread path, a contended atomic on a cache line the owning
/// thread was using: `mi_free_block_delayed_mt` alone took 18% of the pool thread's time on
/// generated Bundles, and the process used 4-11% more CPU than it does with this drop
/// (BENCHMARKS.md, `bench ingest`).
fn free_here<T>(leftovers: T) {
    drop(leftovers);
}

/// Whether a transaction must hold the write lock from planning to its answer (see
/// `run_transaction`): anything but creates without conditions, and reads a gate decides.
fn needs_write_lock(entries: &[Entry], gated: bool) -> bool {
    entries.iter().any(|e| {
        matches!(e.method, Method::Put | Method::Delete)
            || e.if_none_exist.is_some()
            || (e.method == Method::Get && gated)
    })
}

/// One written entry of a transaction's answer: where the version is and how it was made.
fn write_entry(s: &Stored, created: bool) -> Value {
    let status = if created { "201 Created" } else { "200 OK" };
    object([
        ("fullUrl", Value::String([&s.rtype, "/", &s.id].concat())),
        ("response", response(status, Some(s))),
    ])
}

/// Step 5 of a transaction: the answer, entry by entry, after the commit. `write_slot`
/// gives each writing entry's place in `stored` and whether it created the resource;
/// `made`, when given, holds each write's entry already made (`write_entry`), in the same
/// places.
fn answer(
    repo: &Repository,
    entries: &[Entry],
    plans: Vec<Plan>,
    write_slot: &[Option<(usize, bool)>],
    stored: &[Stored],
    made: Option<Vec<Value>>,
) -> Result<Value> {
    let mut made: Vec<Option<Value>> = made
        .filter(|m| m.len() == stored.len())
        .map(|m| m.into_iter().map(Some).collect())
        .unwrap_or_default();
    // Reads run after the writes, as FHIR orders them.
    let mut out = Vec::with_capacity(entries.len());
    for (e, plan) in entries.iter().zip(plans) {
        let v = match plan {
            Plan::Existing(s) => object([("response", response("200 OK", Some(&s)))]),
            Plan::Get => {
                let (rtype, id, query) = split_url(&e.url);
                // Committed already: a failing read is reported in its entry only (it
                // was decided before the commit).
                read_entry(repo, rtype, id, query, None).unwrap_or_else(|err| {
                    let (status, oo) = outcome::for_repo_error(&err);
                    json!({ "response": { "status": status.as_u16().to_string(), "outcome": oo } })
                })
            }
            Plan::Delete { .. } => json!({ "response": { "status": "204 No Content" } }),
            Plan::Create { .. } | Plan::Update { .. } => {
                let Some((slot, s, created)) = write_slot
                    .get(e.index)
                    .copied()
                    .flatten()
                    .and_then(|(slot, created)| Some((slot, stored.get(slot)?, created)))
                else {
                    return Err(RepoError::Internal("transaction slot"));
                };
                match made.get_mut(slot).and_then(Option::take) {
                    Some(entry) => entry,
                    None => write_entry(s, created),
                }
            }
        };
        out.push(v);
    }
    Ok(response_bundle("transaction-response", out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn entries(requests: &[serde_json::Value]) -> Vec<Entry> {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": requests.iter().map(|r| {
                let method = r["method"].as_str().unwrap_or_default();
                if method == "GET" || method == "DELETE" {
                    json!({ "request": r })
                } else {
                    json!({ "request": r, "resource": { "resourceType": "Patient" } })
                }
            }).collect::<Vec<_>>(),
        });
        parse_entries(bundle).unwrap().1
    }

    #[test]
    fn only_unconditional_creates_and_ungated_reads_go_without_the_write_lock() {
        let create = json!({"method": "POST", "url": "Patient"});
        let read = json!({"method": "GET", "url": "Patient/p1"});
        let cases = [
            (vec![create.clone(), create.clone()], false, false),
            (vec![create.clone(), read.clone()], false, false),
            // A signed-in caller's read is decided before the commit and answered after it.
            (vec![create.clone(), read.clone()], true, true),
            (vec![create.clone()], true, false),
            (
                vec![
                    create.clone(),
                    json!({"method": "PUT", "url": "Patient/p1"}),
                ],
                false,
                true,
            ),
            (
                vec![
                    create.clone(),
                    json!({"method": "DELETE", "url": "Patient/p1"}),
                ],
                false,
                true,
            ),
            (
                vec![json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x|1"})],
                false,
                true,
            ),
        ];
        for (requests, gated, locked) in cases {
            assert_eq!(
                needs_write_lock(&entries(&requests), gated),
                locked,
                "{requests:?}, gated: {gated}"
            );
        }
    }
}
