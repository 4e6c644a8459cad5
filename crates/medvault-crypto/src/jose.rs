//! JOSE for sender-constrained tokens: compact JWS, JWK thumbprints, access tokens, DPoP proofs, client assertions.
//!
//! Everything here is pure: no I/O and no clock. The current time is always a
//! `now` parameter in Unix seconds, and state such as replay caches or nonce
//! issuance belongs to the server; validators return what it needs (`jti`,
//! `exp`, `iat`, key thumbprints) to keep that state.
//!
//! Only asymmetric algorithms are implemented ([`Alg::ALL`], the same list
//! for DPoP proofs and client assertions): `ES256` and `ES384` (ECDSA
//! P-256/SHA-256 and P-384/SHA-384 with the fixed-length `r || s`
//! signature, RFC 7518 §3.4), `EdDSA` with Ed25519 (RFC 8037) and `RS384`
//! (RSASSA-PKCS1-v1_5 with SHA-384, 2048- to 8192-bit keys, RFC 7518 §3.3).
//! `ES384` and `RS384` are the ones SMART Backend Services requires servers
//! to support. `none`, `HS*`, other RSA hashes, PSS and every other `alg` are
//! refused, and `alg` must always match the type of the verifying key (one
//! algorithm per key type).
//!
//! Untrusted input is bounded before it is parsed: compact tokens are at most
//! [`MAX_TOKEN_LEN`] bytes, JSON is nested at most [`MAX_JSON_DEPTH`] levels,
//! duplicate JSON members are rejected and base64url must be canonical
//! (no padding, no stray bits).
//!
//! - [`jwk`]: [`PublicJwk`] and RFC 7638 [`JwkThumbprint`]s.
//! - [`jws`]: [`verify_jws`] for compact JWS.
//! - [`token`]: the server's own EdDSA access tokens ([`TokenSigner`], [`TokenVerifier`]).
//! - [`dpop`]: DPoP proof validation (RFC 9449, [`validate_dpop`]).
//! - [`assertion`]: `private_key_jwt` client assertions (RFC 7523, [`validate_client_assertion`]).

pub mod assertion;
mod b64;
mod claims;
pub mod dpop;
mod error;
mod json;
pub mod jwk;
pub mod jws;
pub mod token;
mod url;

pub use assertion::{
    unverified_client_id, validate_client_assertion, AssertionExpectation, ClientAssertion,
};
pub use dpop::{access_token_hash, validate_dpop, DpopExpectation, DpopProof};
pub use error::JoseError;
pub use jwk::{JwkThumbprint, PublicJwk};
pub use jws::{verify_jws, Alg, Header};
pub use token::{random_jti, AccessClaims, TokenSigner, TokenVerifier};

/// Largest compact token (access token, DPoP proof, client assertion) accepted, in bytes.
///
/// Enough for an RS384 DPoP proof with an 8192-bit key, which carries both the
/// modulus (in the header `jwk`) and a signature of the same size: about 3.4 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest standalone JWK JSON document accepted, in bytes.
///
/// An 8192-bit RSA key alone takes about 1.4 KiB; 4 KiB leaves room for
/// optional members (`kid`, `x5t#S256`, ...) and pretty-printing.
pub const MAX_JWK_LEN: usize = 4 * 1024;
/// Deepest JSON nesting accepted (a top-level object is depth 1).
pub const MAX_JSON_DEPTH: usize = 5;
/// Clock-skew allowance applied to `exp`, `nbf` and `iat` of tokens and assertions, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Upper bound for a configurable leeway, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Longest accepted string claim (`sub`, `client_id`, `role`, `jti`, `iss`, ...), in bytes.
pub const MAX_CLAIM_LEN: usize = 256;
