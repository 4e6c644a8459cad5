//! JOSE for sender-constrained tokens: compact JWS, JWK thumbprints, access tokens, DPoP proofs, client assertions.
//!
//! Everything here is pure: no I/O and no clock. The current time is always a
//! `now` parameter in Unix seconds, and state such as replay caches or nonce
//! issuance belongs to the server; validators return what it needs (`jti`,
//! `exp`, `iat`, key thumbprints) to keep that state.
//!
//! Only asymmetric algorithms are implemented: `ES256` (ECDSA P-256 with the
//! fixed 64-byte `r || s` signature, RFC 7518 §3.4) and `EdDSA` with Ed25519
//! (RFC 8037). `none`, `HS*` and every other `alg` are refused, and `alg`
//! must always match the type of the verifying key.
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
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest standalone JWK JSON document accepted, in bytes.
pub const MAX_JWK_LEN: usize = 2 * 1024;
/// Deepest JSON nesting accepted (a top-level object is depth 1).
pub const MAX_JSON_DEPTH: usize = 5;
/// Clock-skew allowance applied to `exp`, `nbf` and `iat` of tokens and assertions, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Upper bound for a configurable leeway, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Longest accepted string claim (`sub`, `client_id`, `role`, `jti`, `iss`, ...), in bytes.
pub const MAX_CLAIM_LEN: usize = 256;
