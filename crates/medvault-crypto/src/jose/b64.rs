//! Strict base64url without padding (RFC 7515 §2): canonical encodings only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::JoseError;

/// Encode bytes as unpadded base64url.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode unpadded base64url, refusing padding, characters outside the URL-safe
/// alphabet (including whitespace) and non-zero trailing bits, so every byte
/// string has exactly one accepted text form. `what` names the part for errors.
pub(crate) fn decode(text: &str, what: &'static str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JoseError::Base64(what))
}

/// [`decode`] into exactly `N` bytes; a well-formed encoding of another length gives `wrong_len`.
pub(crate) fn decode_array<const N: usize>(
    text: &str,
    what: &'static str,
    wrong_len: JoseError,
) -> Result<[u8; N], JoseError> {
    let bytes = decode(text, what)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| wrong_len)
}
