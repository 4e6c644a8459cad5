//! The error type of the JOSE module; messages name the failed check, never token or key contents.

/// Everything that can go wrong while parsing or checking JWS, JWK, access tokens,
/// DPoP proofs and client assertions.
///
/// Variants carry only static strings (a part or claim *name*, never its value),
/// so errors are safe to log and to map onto OAuth error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// An input exceeded its size limit (checked before any parsing).
    #[error("input exceeds the size limit")]
    TooLarge,
    /// The compact serialization is not `header.payload.signature`.
    #[error("malformed compact JWS: {0}")]
    Malformed(&'static str),
    /// A part was not canonical unpadded base64url (padding, bad characters, stray bits).
    #[error("invalid base64url in {0}")]
    Base64(&'static str),
    /// A part was not valid JSON (or had trailing data).
    #[error("invalid JSON in {0}")]
    Json(&'static str),
    /// A JSON document nested deeper than allowed.
    #[error("JSON nested too deeply in {0}")]
    JsonTooDeep(&'static str),
    /// A JSON object repeated a member name (RFC 7515 §5.2 allows rejecting these).
    #[error("duplicate JSON member in {0}")]
    JsonDuplicateMember(&'static str),
    /// A JSON document was not of the expected shape (e.g. not an object).
    #[error("unexpected JSON shape in {0}")]
    JsonShape(&'static str),
    /// A JOSE header parameter was missing or malformed.
    #[error("invalid JOSE header: {0}")]
    InvalidHeader(&'static str),
    /// `alg` is not one this module implements (`none`, `HS*`, `RS256`, `PS*`, ...).
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is implemented but not allowed by the caller.
    #[error("signature algorithm not allowed here")]
    AlgorithmNotAllowed,
    /// `alg` does not fit the key type (e.g. ES256 with an Ed25519 key).
    #[error("signature algorithm does not match the key type")]
    AlgorithmKeyMismatch,
    /// The header lists critical extensions (`crit`); none are supported.
    #[error("unsupported critical header parameter")]
    UnsupportedCritical,
    /// A JWK was malformed or out of range (e.g. an RSA modulus under 2048
    /// bits or with a leading zero byte); the string names the member.
    #[error("invalid JWK: {0}")]
    InvalidKey(&'static str),
    /// A JWK has a key type or curve this module does not implement.
    #[error("unsupported JWK key type or curve")]
    UnsupportedKey,
    /// A public JWK contained private key members (`d`, ...).
    #[error("JWK contains private key material")]
    PrivateKeyMaterial,
    /// A JWK thumbprint was not 32 bytes of canonical base64url.
    #[error("invalid JWK thumbprint")]
    InvalidThumbprint,
    /// The header `kid` does not name the verifying key.
    #[error("key id does not match the verifying key")]
    KeyIdMismatch,
    /// The signature did not verify (wrong key, tampering, or an invalid public key).
    #[error("signature verification failed")]
    BadSignature,
    /// The header `typ` is missing or not the expected token type.
    #[error("unexpected token type")]
    WrongType,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type, is empty, or is too long.
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `sub` differs from `iss` where they must be equal (client assertions).
    #[error("subject does not match issuer")]
    SubjectMismatch,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is further in the future than clock skew allows.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// A DPoP proof's `iat` is older than the accepted window.
    #[error("proof too old")]
    ProofTooOld,
    /// `exp` is further away than allowed (client assertions: 5 minutes).
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// DPoP `htm` differs from the request method.
    #[error("HTTP method mismatch")]
    MethodMismatch,
    /// DPoP `htu` differs from the request URI.
    #[error("HTTP URI mismatch")]
    UriMismatch,
    /// A URL could not be parsed or is not an absolute http(s) URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(&'static str),
    /// An HTTP method was empty, too long or not an RFC 9110 token.
    #[error("invalid HTTP method")]
    InvalidMethod,
    /// A DPoP proof for a request carrying an access token lacks `ath`.
    #[error("missing access token hash")]
    MissingAth,
    /// DPoP `ath` is not the hash of the presented access token.
    #[error("access token hash mismatch")]
    AthMismatch,
    /// The proof key's thumbprint is not the one the token is bound to.
    #[error("key thumbprint mismatch")]
    ThumbprintMismatch,
    /// The server requires a DPoP nonce and the proof has none.
    #[error("DPoP nonce required")]
    MissingNonce,
    /// The proof's DPoP nonce is not the expected one.
    #[error("DPoP nonce mismatch")]
    NonceMismatch,
    /// A value supplied by the caller (not the token) was unusable.
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
}
