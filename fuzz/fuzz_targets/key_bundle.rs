//! Fuzzes the user's key bundle as the client and server read it: the public keys' JSON
//! (`KeyBundlePublic::from_json`, stored and handed out by the server) and the sealed bytes
//! (`KeyBundle::open`, handed back at login).
//!
//! Input: mode byte (`m % 3`), then
//! - 0: public keys JSON;
//! - 1: sealed bytes, opened with a fixed export key, binding and public keys (those of a
//!   bundle the harness sealed once);
//! - 2: sealed bytes, NUL, export key, NUL, binding, NUL, public keys JSON (all from the
//!   input; the fixed public keys if that JSON does not parse).
//!
//! Checks beyond "no panic": public keys round-trip through their JSON; under the fixed
//! key only the exact bytes the harness sealed open (AES-GCM leaves no other way), and
//! they open to the keys sealed.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_crypto::{DeterministicRandom, KeyBundle, KeyBundlePublic};
use medvault_fuzz::{
    mode_and_rest, parts, BUNDLE_BINDING as BINDING, BUNDLE_ED25519_SEED,
    BUNDLE_EXPORT_KEY as EXPORT_KEY, BUNDLE_NONCE_SEED, BUNDLE_X25519_SECRET,
};

struct Fixed {
    public: KeyBundlePublic,
    sealed: Vec<u8>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let bundle = KeyBundle::from_secrets(&BUNDLE_ED25519_SEED, &BUNDLE_X25519_SECRET);
        let sealed = bundle
            .seal(
                &EXPORT_KEY,
                BINDING,
                &DeterministicRandom::new(BUNDLE_NONCE_SEED),
            )
            .expect("fixed bundle seals");
        Fixed {
            public: bundle.public(),
            sealed,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    let f = fixed();
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(public) = KeyBundlePublic::from_json(text) {
                let again = KeyBundlePublic::from_json(&public.to_json())
                    .expect("public keys' own JSON parses");
                assert_eq!(again, public);
                assert_eq!(again.thumbprint(), public.thumbprint());
            }
        }
        1 => {
            let opened = KeyBundle::open(rest, &EXPORT_KEY, BINDING, &f.public);
            assert_eq!(
                opened.is_ok(),
                rest == f.sealed.as_slice(),
                "sealed bytes other than the sealed ones opened (or those did not)"
            );
            if let Ok(bundle) = opened {
                assert_eq!(bundle.public(), f.public);
            }
        }
        _ => {
            let [sealed, export_key, binding, public] = parts::<4>(rest);
            let public = std::str::from_utf8(public)
                .ok()
                .and_then(|t| KeyBundlePublic::from_json(t).ok())
                .unwrap_or(f.public);
            if let Ok(bundle) = KeyBundle::open(sealed, export_key, binding, &public) {
                assert_eq!(bundle.public(), public);
            }
        }
    }
});
