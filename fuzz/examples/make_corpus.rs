//! Writes the seed corpus (`fuzz/corpus/<target>/`): a handful of valid and near-valid
//! inputs per target, made from the crates' test examples and fixtures, in each target's
//! input layout (see `fuzz_targets/*.rs`). Deterministic; rerun after changing a layout:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example make_corpus -- fuzz/corpus
//! ```
//!
//! File names are `<what>`, so a seed says what it is; the fuzzer's own finds are not kept.

#[path = "../../crates/medvault-fhir/tests/it/examples.rs"]
#[allow(dead_code)]
mod examples;

use std::fs;
use std::path::{Path, PathBuf};

use medvault_crypto::jose::{AccessClaims, TokenSigner};
use medvault_crypto::share_text::ShareText;
use medvault_crypto::{shamir, DeterministicRandom, KeyBundle, SecretKey};
use medvault_fhir::SUPPORTED_TYPES;
use medvault_fuzz::*;
use medvault_ledger::{
    inclusion_proof, leaf_hash, mth, Checkpoint, Entry, EntryText, Hash, Outcome, SigningKey,
};
use serde_json::{json, Value};

/// The crypto tests' offline fixtures: real RS384/ES384 tokens made by another implementation.
const OFFLINE: &str =
    include_str!("../../crates/medvault-crypto/tests/it/jose/fixtures/offline.json");

/// RFC 9449 §4.1, Figure 4: an ES256 DPoP proof (checked against another URL and time, so
/// here a well-formed proof that fails late).
const RFC9449_PROOF: &str = concat!(
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0",
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10",
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19",
    ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1w",
    "bGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ",
    ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg",
);

struct Out {
    root: PathBuf,
}

impl Out {
    fn put(&self, target: &str, name: &str, mode: Option<u8>, body: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.extend(mode);
        bytes.extend_from_slice(body);
        fs::write(dir.join(name), bytes).expect("write seed");
    }
}

/// `a`, NUL, `b`, ...
fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

fn type_index(t: &str) -> u8 {
    let i = SUPPORTED_TYPES.iter().position(|s| *s == t).expect("type");
    u8::try_from(i).expect("17 types")
}

fn fhir_validate(out: &Out) {
    for r in examples::all() {
        let name = r["resourceType"].as_str().expect("type").to_lowercase();
        let id = r["id"].as_str().unwrap_or("x");
        out.put(
            "fhir_validate",
            &format!("{name}-{id}.json"),
            None,
            r.to_string().as_bytes(),
        );
    }
    // Near-valid: one problem each (from the validation tests).
    let bad = [
        (
            "bad-date",
            json!({"resourceType": "Patient", "birthDate": "1980-02-30"}),
        ),
        (
            "missing-status",
            json!({"resourceType": "Observation", "code": {"text": "x"}}),
        ),
        (
            "nested-contained",
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "c",
                "contained": [{"resourceType": "Patient", "id": "d"}]}]}),
        ),
        (
            "unknown-and-choice",
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueString": "a", "valueInteger": 1, "zzz\u{e9}": "N\u{fa}\u{f1}ez", "_status": 3}),
        ),
        ("bundle", json!({"resourceType": "Bundle", "type": "batch"})),
    ];
    for (name, v) in bad {
        out.put(
            "fhir_validate",
            &format!("{name}.json"),
            None,
            v.to_string().as_bytes(),
        );
    }
}

fn fhir_search(out: &Out) {
    let typed = [
        ("Patient", "family=smi"),
        (
            "Patient",
            "family=N%C3%9A%C3%91EZ&given=Mar+Jo&gender=female&_count=10",
        ),
        ("Patient", "identifier=urn:mrn|12345&name:exact=Smith"),
        (
            "Patient",
            "birthdate=ge1980&birthdate=le1990&_count=10&_offset=20",
        ),
        ("Patient", "name=smith,jones&_id=a,b&_id=b,c&_format=json"),
        ("Patient", "birthdate=1984-02-30&gender:not=male"),
        (
            "Observation",
            "patient=pat-1&code=http://loinc.org|29463-7,|abc,8480-6&date=ge2020-01-01",
        ),
        (
            "Observation",
            "date=ge2019-11-20&date=lt2020-01-10&status=final",
        ),
        (
            "Observation",
            "subject=https://x.org/fhir/Group/g1&date=eq2020-03-04",
        ),
        (
            "Encounter",
            "date=2020-03&_lastUpdated=gt2024-05-01T10:00:00.5%2B02:00",
        ),
        ("Appointment", "practitioner=prac-1&date=2021-04"),
        (
            "Condition",
            "clinical-status=active&date=le2020&_lastUpdated=le2024",
        ),
        ("ServiceRequest", "authored=gt2020-06-14&_sort=name"),
        ("Immunization", "vaccine-code=08&date=ne2020"),
    ];
    for (i, (t, q)) in typed.iter().enumerate() {
        out.put(
            "fhir_search",
            &format!("{}-{i}", t.to_lowercase()),
            Some(type_index(t)),
            q.as_bytes(),
        );
    }
    for (i, q) in ["Bundle?_id=x", "patient?family=a", "Patient?shoe-size=42"]
        .iter()
        .enumerate()
    {
        out.put(
            "fhir_search",
            &format!("anytype-{i}"),
            Some(0x80),
            q.as_bytes(),
        );
    }
    let with_resource = [
        (examples::observation(), "date=ge2020&code=8867-4"),
        (examples::encounter(), "date=le2020-06-15"),
        (
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                "onsetPeriod": {"start": "2019-12-30"}}),
            "date=gt2020-06-14&date=lt2021",
        ),
    ];
    for (i, (r, q)) in with_resource.iter().enumerate() {
        let body = joined(&[r.to_string().as_bytes(), q.as_bytes()]);
        out.put("fhir_search", &format!("resource-{i}"), Some(0xC0), &body);
    }
}

fn bundle(out: &Out) {
    let patient = examples::patient();
    let mut observation = examples::observation();
    observation["subject"] = json!({"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"});
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient,
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": observation,
             "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": "Patient/pat-1"}},
        ]
    });
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "/Patient?family=smi&_lastUpdated=ge2024-01-01"}},
            {"resource": examples::practitioner(),
             "request": {"method": "PUT", "url": "Practitioner/prac-1", "ifMatch": "W/\"2\""}},
            {"request": {"method": "DELETE", "url": "Observation/obs-1", "ifMatch": "3"}},
            {"resource": examples::condition(),
             "request": {"method": "POST", "url": "Condition", "ifNoneExist": "patient=pat-1"}},
        ]
    });
    let near = [
        ("not-a-bundle", json!({"resourceType": "Patient"})),
        (
            "bad-type",
            json!({"resourceType": "Bundle", "type": "collection", "entry": []}),
        ),
        (
            "bad-entry",
            json!({"resourceType": "Bundle", "type": "batch",
                "entry": [{"request": {"method": "PATCH", "url": "Patient/1"}}, {}]}),
        ),
    ];
    out.put(
        "bundle",
        "transaction.json",
        None,
        transaction.to_string().as_bytes(),
    );
    out.put("bundle", "batch.json", None, batch.to_string().as_bytes());
    for (name, v) in near {
        out.put(
            "bundle",
            &format!("{name}.json"),
            None,
            v.to_string().as_bytes(),
        );
    }
}

fn jose(out: &Out) {
    let offline: Value = serde_json::from_str(OFFLINE).expect("offline fixtures");
    let signer = TokenSigner::new(&SecretKey::from_bytes(SIGNING_SEED));
    let key = ed25519(&SIGNING_SEED);
    let jwk = signer.public_jwk().to_json_value();

    // Mode 0: real tokens.
    for (name, token) in [
        ("rs384-2048-assertion", &offline["rsa2048"]["assertion"]),
        ("es384-assertion", &offline["p384"]["assertion"]),
        ("es384-dpop", &offline["p384"]["dpop"]),
    ] {
        let token = token.as_str().expect("fixture token");
        out.put("jose", name, Some(0), token.as_bytes());
    }
    out.put("jose", "rfc9449-dpop", Some(0), RFC9449_PROOF.as_bytes());
    let claims = AccessClaims::new(
        "acct-1",
        "physician",
        "medvault-cli",
        "jti-1",
        NOW - 10,
        NOW + 290,
    )
    .expect("claims")
    .bound_to(signer.public_jwk().thumbprint());
    let token = signer.issue(TOKEN_ISSUER, TOKEN_AUDIENCE, &claims);
    out.put("jose", "access-token", Some(0), token.as_bytes());
    let dpop_header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk});
    let dpop_claims = json!({"jti": "proof-1", "htm": "GET", "htu": DPOP_URL, "iat": NOW,
        "ath": access_token_hash_of(ACCESS_TOKEN), "nonce": DPOP_NONCE});
    let proof = sign_compact(
        &key,
        dpop_header.to_string().as_bytes(),
        dpop_claims.to_string().as_bytes(),
    );
    out.put("jose", "eddsa-dpop", Some(0), proof.as_bytes());

    // Mode 1: JWKs.
    for (name, k) in [
        ("jwk-rsa2048", offline["rsa2048"]["jwk"].clone()),
        ("jwk-p384", offline["p384"]["jwk"].clone()),
        ("jwk-ed25519", jwk.clone()),
        (
            "jwk-p256-rfc9449",
            json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}),
        ),
        (
            "jwk-private",
            json!({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "d": jwk["x"]}),
        ),
    ] {
        out.put("jose", name, Some(1), k.to_string().as_bytes());
    }

    // Mode 2: header and claims, signed by the harness.
    let signed = [
        ("signed-dpop", dpop_header.clone(), dpop_claims.clone()),
        (
            "signed-access-token",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": signer.kid()}),
            json!({"iss": TOKEN_ISSUER, "sub": "acct-1", "aud": [TOKEN_AUDIENCE],
                "client_id": "medvault-cli", "role": "nurse", "jti": "t-1",
                "iat": NOW, "exp": NOW + 300, "nbf": NOW - 1,
                "cnf": {"jkt": signer.public_jwk().thumbprint().as_str()}}),
        ),
        (
            "signed-assertion",
            json!({"alg": "EdDSA", "typ": "JWT"}),
            json!({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": TOKEN_ENDPOINT,
                "exp": NOW + 240, "iat": NOW, "jti": "a-1"}),
        ),
    ];
    for (name, h, c) in signed {
        let body = joined(&[h.to_string().as_bytes(), c.to_string().as_bytes()]);
        out.put("jose", name, Some(2), &body);
    }

    // Mode 3: method, expected URL, htu.
    for (i, (m, u, h)) in [
        (
            "GET",
            DPOP_URL,
            "https://MEDVAULT.example:443/fhir/./x/../Patient/%31%323?q=1",
        ),
        (
            "POST",
            "http://[::1]:8200/auth/token",
            "http://[::1]:8200/auth/token",
        ),
        (
            "GET",
            "https://a.example/%7euser/",
            "https://a.example/~user/#f",
        ),
    ]
    .iter()
    .enumerate()
    {
        out.put(
            "jose",
            &format!("htu-{i}"),
            Some(3),
            &joined(&[m.as_bytes(), u.as_bytes(), h.as_bytes()]),
        );
    }
}

/// RFC 9449 `ath` (computed here as the crate does: base64url of SHA-256).
fn access_token_hash_of(token: &str) -> String {
    medvault_crypto::jose::access_token_hash(token)
}

fn share_text(out: &Out) {
    let secret = [0x42u8; 32];
    let shares = shamir::split(&secret, 2, 3, &DeterministicRandom::new(5)).expect("split");
    let texts: Vec<String> = shares
        .into_iter()
        .map(|s| {
            ShareText::new([1, 2, 3, 4, 5, 6, 7, 8], 2, s)
                .encode()
                .to_string()
        })
        .collect();
    out.put(
        "share_text",
        "two-of-three",
        Some(0),
        texts[..2].join("\n").as_bytes(),
    );
    out.put(
        "share_text",
        "one-share",
        Some(0),
        format!("  {}\r\n", texts[2]).as_bytes(),
    );
    let bodies: Vec<&str> = texts
        .iter()
        .map(|t| t.rsplit_once(':').map_or(t.as_str(), |(b, _)| b))
        .collect();
    out.put(
        "share_text",
        "bodies",
        Some(1),
        bodies.join("\n").as_bytes(),
    );
    out.put(
        "share_text",
        "near-bodies",
        Some(1),
        b"medvault-share:v1:0102030405060708:03:2:_wAQ\nmedvault-share:v1:01020304050607AA:3:2:_wA=\nmedvault-share:v2:x",
    );
    out.put(
        "share_text",
        "split",
        Some(2),
        &[3, 5, 9, 1, 0xde, 0xad, 0xbe, 0xef],
    );
}

fn sample_entry() -> Entry {
    let t = |s: &str| EntryText::new(s).expect("entry text");
    Entry {
        time: 1_714_557_600,
        actor: t("acct-1"),
        role: t("physician"),
        client: EntryText::empty(),
        action: t("read"),
        resource_type: t("Patient"),
        resource_id: t("pat-1"),
        patient: t("pat-1"),
        outcome: Outcome::Allow,
        reason: t("care-relationship"),
        purpose: t("treatment"),
        break_glass: false,
        address: t("127.0.0.1"),
        user_agent: t("medvault/0.1 (\u{e9})"),
    }
}

fn ledger(out: &Out) {
    let key = SigningKey::from_seed(LEDGER_KEY_NAME, &LEDGER_SEED).expect("ledger key");
    let leaves: Vec<Hash> = (0u64..8).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let cp = Checkpoint::new(LEDGER_KEY_NAME, 8, mth(&leaves)).expect("checkpoint");
    let note = key.sign(&cp).expect("sign");
    out.put("ledger", "note", Some(0), note.as_str().as_bytes());
    let other = SigningKey::from_seed("witness.example", &[4; 32]).expect("key");
    let cosigned = format!(
        "{}{}",
        note.as_str(),
        other
            .sign(&cp)
            .expect("sign")
            .as_str()
            .rsplit_once("\n\n")
            .expect("sig")
            .1
    );
    out.put("ledger", "note-cosigned", Some(0), cosigned.as_bytes());
    out.put("ledger", "body", Some(1), cp.body().as_bytes());
    out.put(
        "ledger",
        "body-extensions",
        Some(1),
        format!("{}ext one\n\u{e9}xt two\n", cp.body()).as_bytes(),
    );
    out.put(
        "ledger",
        "body-near",
        Some(1),
        b"medvault.example/ledger\n08\nAA==\n",
    );
    out.put(
        "ledger",
        "verifier-key",
        Some(2),
        key.verifier_key().to_string().as_bytes(),
    );
    out.put("ledger", "entry", Some(3), &sample_entry().encode());
    let mut truncated = sample_entry().encode();
    truncated.truncate(40);
    out.put("ledger", "entry-truncated", Some(3), &truncated);

    // Mode 4: index 2, size 8, old size 4; leaf, root, old root, the real inclusion proof.
    let mut proofs = Vec::new();
    for v in [2u64, 8, 4] {
        proofs.extend_from_slice(&v.to_be_bytes());
    }
    let mut hs = vec![leaves[2], mth(&leaves), mth(&leaves[..4])];
    hs.extend(inclusion_proof(&leaves, 2, 8).expect("proof"));
    for h in &hs {
        proofs.extend_from_slice(h.as_bytes());
    }
    out.put("ledger", "proofs", Some(4), &proofs);
    out.put("ledger", "real-tree", Some(5), &[13, 6, 5, 17, 3]);
}

fn key_bundle(out: &Out) {
    let bundle = KeyBundle::from_secrets(&BUNDLE_ED25519_SEED, &BUNDLE_X25519_SECRET);
    let public = bundle.public();
    let sealed = bundle
        .seal(
            &BUNDLE_EXPORT_KEY,
            BUNDLE_BINDING,
            &DeterministicRandom::new(BUNDLE_NONCE_SEED),
        )
        .expect("seal");
    out.put("key_bundle", "public", Some(0), public.to_json().as_bytes());
    out.put(
        "key_bundle",
        "public-spaced",
        Some(0),
        format!(
            " {{ \"x25519\" : {}, \"ed25519\":{} }}",
            json!(public.to_json().split('"').nth(7)),
            json!(public.to_json().split('"').nth(3))
        )
        .as_bytes(),
    );
    out.put("key_bundle", "sealed", Some(1), &sealed);
    out.put(
        "key_bundle",
        "sealed-all-parts",
        Some(2),
        &joined(&[
            &sealed,
            &BUNDLE_EXPORT_KEY,
            BUNDLE_BINDING,
            public.to_json().as_bytes(),
        ]),
    );
}

fn main() {
    let root = std::env::args().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    let out = Out { root };
    fhir_validate(&out);
    fhir_search(&out);
    bundle(&out);
    jose(&out);
    share_text(&out);
    ledger(&out);
    key_bundle(&out);
    posting(&out);
}

fn posting(out: &Out) {
    use medvault_store::posting::{encode, encode_batch, LogBatch};
    let seqs = [7i64, 8, 9, 300, 1 << 20];
    let (first, rest) = encode(&seqs).expect("non-empty");
    let mut body = first.to_be_bytes().to_vec();
    body.extend_from_slice(&rest);
    out.put("posting", "posting", Some(0), &body);
    let mut batch = LogBatch::new();
    batch.insert([1; 16], vec![40, 41, 45]);
    batch.insert([2; 16], vec![42]);
    batch.insert([0xfe; 16], vec![40, 44, 1000]);
    out.put("posting", "log-row", Some(1), &encode_batch(&batch));
}
