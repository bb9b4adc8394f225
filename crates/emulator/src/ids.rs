//! Random identifiers: token values, certificate ids and serial numbers, all from
//! OpenSSL's CSPRNG.

use openssl::error::ErrorStack;

/// `{"alg":"RS256","typ":"JWT"}`, so instance identity tokens look like the real ones.
const IDENTITY_TOKEN_HEADER: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";
/// `{"alg":"HS256","typ":"JWT"}`, as in the documented IAM token sample.
const IAM_TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ErrorStack> {
    let mut buf = [0u8; N];
    openssl::rand::rand_bytes(&mut buf)?;
    Ok(buf)
}

/// Unpadded base64url, the alphabet of JWT segments.
fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// An opaque instance identity token: JWT-shaped, but its body is 32 random bytes.
pub(crate) fn identity_token() -> Result<String, ErrorStack> {
    Ok(format!(
        "{IDENTITY_TOKEN_HEADER}.{}",
        base64url(&random_bytes::<32>()?)
    ))
}

/// An opaque IAM access token, shaped like the documented sample.
pub(crate) fn iam_token() -> Result<String, ErrorStack> {
    Ok(format!(
        "{IAM_TOKEN_HEADER}.{}",
        base64url(&random_bytes::<32>()?)
    ))
}

/// A random (version 4) UUID in its usual 8-4-4-4-12 form.
pub(crate) fn uuid() -> Result<String, ErrorStack> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// A 16-byte certificate serial that is positive and encodes to exactly 16 bytes in DER:
/// the top bit is cleared (a set top bit would make it negative) and the next one set
/// (so no leading zero byte is dropped).
pub(crate) fn serial() -> Result<[u8; 16], ErrorStack> {
    let mut b = random_bytes::<16>()?;
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = uuid().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_eq!(id.matches('-').count(), 4);

        let t = identity_token().unwrap();
        let (head, body) = t.split_once('.').unwrap();
        assert_eq!(head, IDENTITY_TOKEN_HEADER);
        assert_eq!(body.len(), 43);
        assert!(body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(identity_token().unwrap(), t);
        assert!(iam_token().unwrap().starts_with(IAM_TOKEN_HEADER));

        let s = serial().unwrap();
        assert_eq!(s[0] & 0xc0, 0x40);
    }
}
