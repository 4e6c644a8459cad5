//! Fuzzes transaction and batch Bundles: arbitrary bytes → JSON (as the server parses the
//! body of `POST /fhir`) → everything the server does with a Bundle before it touches the
//! repository (`medvault_server::fuzzing::bundle`: entries, methods, URLs, `If-Match`,
//! searches of GET entries, `fullUrl` → `urn:uuid` rewriting, compartments, validation).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let declared = bundle.get("entry").and_then(Value::as_array).map(Vec::len);
    if let Ok(n) = medvault_server::fuzzing::bundle(bundle) {
        // Every entry is kept (or the Bundle is refused): none is dropped silently.
        assert_eq!(n, declared.unwrap_or(0));
    }
});
