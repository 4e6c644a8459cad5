//! The printable, checksummed text form of a share that is handed to administrators.
//!
//! Format:
//! `medvault-share:v1:<set id, 16 hex>:<threshold>:<x>:<y base64url, no padding>:<check, 8 hex>`
//! where `check` is the first 4 bytes of SHA-256 over everything before the last
//! `:`, so typos and corruption are caught before a share is ever combined.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;
use zeroize::Zeroizing;

use crate::keys::{constant_time_eq, sha256, to_hex};
use crate::{CryptoError, Share};

const PREFIX: &str = "medvault-share:";
const VERSION: &str = "v1";
const COMMITMENT_DOMAIN: &[u8] = b"medvault share commitment v1";

/// A share together with the metadata printed alongside it.
#[derive(Clone, Debug)]
pub struct ShareText {
    set_id: [u8; 8],
    threshold: u8,
    share: Share,
}

impl ShareText {
    /// Bundle a share with its set id (identifies one split) and threshold.
    pub fn new(set_id: [u8; 8], threshold: u8, share: Share) -> ShareText {
        ShareText {
            set_id,
            threshold,
            share,
        }
    }

    /// Parse the text form (surrounding whitespace is ignored).
    ///
    /// The checksum is verified before the fields are interpreted, so a typo
    /// anywhere in the body reports [`CryptoError::ShareChecksum`].
    pub fn parse(text: &str) -> Result<ShareText, CryptoError> {
        let text = text.trim();
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(CryptoError::ShareFormat("not a medvault share"))?;
        let fields: Vec<&str> = rest.split(':').collect();
        // Check the version before the field count so a future format with a
        // different layout is reported as a version problem.
        if fields.first() != Some(&VERSION) {
            return Err(CryptoError::ShareFormat("unsupported share version"));
        }
        let [_, set_id, threshold, x, y, check] = fields.as_slice() else {
            return Err(CryptoError::ShareFormat("wrong number of fields"));
        };

        let check = parse_hex::<4>(check).ok_or(CryptoError::ShareFormat("bad checksum"))?;
        // The body is everything before the last ':' (the checksum has no ':').
        let (body, _) = text
            .rsplit_once(':')
            .ok_or(CryptoError::ShareFormat("wrong number of fields"))?;
        if !constant_time_eq(&checksum(body), &check) {
            return Err(CryptoError::ShareChecksum);
        }

        let set_id = parse_hex::<8>(set_id).ok_or(CryptoError::ShareFormat("bad set id"))?;
        let threshold =
            parse_nonzero_u8(threshold).ok_or(CryptoError::ShareFormat("bad threshold"))?;
        let x = parse_nonzero_u8(x).ok_or(CryptoError::ShareFormat("bad x coordinate"))?;
        let y = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(y)
                .map_err(|_| CryptoError::ShareFormat("bad share value"))?,
        );
        if y.is_empty() {
            return Err(CryptoError::ShareFormat("bad share value"));
        }
        let share =
            Share::new(x, y.to_vec()).map_err(|_| CryptoError::ShareFormat("bad share value"))?;
        Ok(ShareText {
            set_id,
            threshold,
            share,
        })
    }

    /// Render the text form. Zeroizing because it contains the share value.
    pub fn encode(&self) -> Zeroizing<String> {
        let y = Zeroizing::new(URL_SAFE_NO_PAD.encode(self.share.y()));
        let mut text = Zeroizing::new(String::with_capacity(64 + y.len()));
        text.push_str(PREFIX);
        text.push_str(VERSION);
        text.push(':');
        text.push_str(&to_hex(&self.set_id));
        text.push(':');
        text.push_str(&self.threshold.to_string());
        text.push(':');
        text.push_str(&self.share.x().to_string());
        text.push(':');
        text.push_str(&y);
        let check = checksum(&text);
        text.push(':');
        text.push_str(&to_hex(&check));
        text
    }

    /// Identifier of the split this share belongs to.
    pub fn set_id(&self) -> [u8; 8] {
        self.set_id
    }

    /// Number of shares needed to reconstruct.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The share itself.
    pub fn share(&self) -> &Share {
        &self.share
    }

    /// Take the share out.
    pub fn into_share(self) -> Share {
        self.share
    }

    /// `SHA-256("medvault share commitment v1" || set_id || x || y)`.
    ///
    /// A server stores one commitment per share so it can reject a wrong or
    /// forged share individually instead of only noticing a bad combination.
    pub fn commitment(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(COMMITMENT_DOMAIN);
        ctx.update(&self.set_id);
        ctx.update(&[self.share.x()]);
        ctx.update(self.share.y());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

fn checksum(body: &str) -> [u8; 4] {
    let digest = sha256(body.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Exactly `2 * N` lowercase hex digits (uppercase is rejected so the text form is canonical).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Canonical decimal 1..=255: digits only, no sign, no leading zero.
fn parse_nonzero_u8(s: &str) -> Option<u8> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn sample() -> ShareText {
        ShareText::new(
            [1, 2, 3, 4, 5, 6, 7, 8],
            3,
            Share::new(2, vec![0xff, 0x00, 0x10]).unwrap(),
        )
    }

    #[test]
    fn encode_layout() {
        let text = sample().encode();
        let body = "medvault-share:v1:0102030405060708:3:2:_wAQ";
        assert!(text.starts_with(body), "{}", *text);
        assert_eq!(text[body.len()..], format!(":{}", to_hex(&checksum(body))));
    }

    /// Re-checksum a hand-edited body so the field checks, not the checksum, are exercised.
    fn with_check(body: &str) -> String {
        format!("{body}:{}", to_hex(&checksum(body)))
    }

    #[test]
    fn precise_format_errors() {
        let cases = [
            ("hello", "not a medvault share"),
            ("medvault-share:v2:x", "unsupported share version"),
            ("medvault-share:v1:a:b", "wrong number of fields"),
        ];
        for (text, reason) in cases {
            assert_eq!(
                ShareText::parse(text).unwrap_err(),
                CryptoError::ShareFormat(reason),
                "{text}"
            );
        }
        let checked = [
            ("medvault-share:v1:01020304050607:3:2:_wAQ", "bad set id"),
            ("medvault-share:v1:01020304050607AA:3:2:_wAQ", "bad set id"),
            (
                "medvault-share:v1:0102030405060708:0:2:_wAQ",
                "bad threshold",
            ),
            (
                "medvault-share:v1:0102030405060708:03:2:_wAQ",
                "bad threshold",
            ),
            (
                "medvault-share:v1:0102030405060708:256:2:_wAQ",
                "bad threshold",
            ),
            (
                "medvault-share:v1:0102030405060708:+3:2:_wAQ",
                "bad threshold",
            ),
            (
                "medvault-share:v1:0102030405060708:3:0:_wAQ",
                "bad x coordinate",
            ),
            (
                "medvault-share:v1:0102030405060708:3:x:_wAQ",
                "bad x coordinate",
            ),
            ("medvault-share:v1:0102030405060708:3:2:", "bad share value"),
            (
                "medvault-share:v1:0102030405060708:3:2:_wA=",
                "bad share value",
            ),
            (
                "medvault-share:v1:0102030405060708:3:2:_wB",
                "bad share value",
            ),
        ];
        for (body, reason) in checked {
            assert_eq!(
                ShareText::parse(&with_check(body)).unwrap_err(),
                CryptoError::ShareFormat(reason),
                "{body}"
            );
        }
        let good = sample().encode();
        let bad_case = format!(
            "{}{}",
            &good[..good.len() - 8],
            good[good.len() - 8..].to_uppercase()
        );
        if bad_case != *good {
            assert_eq!(
                ShareText::parse(&bad_case).unwrap_err(),
                CryptoError::ShareFormat("bad checksum")
            );
        }
    }

    #[test]
    fn whitespace_is_trimmed() {
        let text = format!("  \n{}\r\n", *sample().encode());
        let parsed = ShareText::parse(&text).unwrap();
        assert_eq!(parsed.encode(), sample().encode());
    }

    #[test]
    fn commitment_binds_fields() {
        let base = sample().commitment();
        let other_set = ShareText::new([9; 8], 3, sample().into_share()).commitment();
        let other_x = ShareText::new(
            sample().set_id(),
            3,
            Share::new(3, vec![0xff, 0, 0x10]).unwrap(),
        );
        let other_y = ShareText::new(
            sample().set_id(),
            3,
            Share::new(2, vec![0xff, 0, 0x11]).unwrap(),
        );
        assert_ne!(base, other_set);
        assert_ne!(base, other_x.commitment());
        assert_ne!(base, other_y.commitment());
        // Threshold is metadata, not part of the commitment.
        assert_eq!(
            base,
            ShareText::new(sample().set_id(), 4, sample().into_share()).commitment()
        );
    }
}
