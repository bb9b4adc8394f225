//! Key material, CSRs, trust anchors and validation of what the service returns.
//!
//! `key` and `csr` call into OpenSSL; `anchors` reads the configured CA certificates;
//! `validate` is pure (bytes and a clock in, a verdict out), with its rules on algorithms in
//! `policy` and on issuer/subject links in `link`.

pub mod anchors;
pub mod ca_expiry;
pub mod csr;
pub mod key;
pub mod link;
pub mod policy;
pub mod validate;

pub use anchors::{AnchorError, TrustAnchors};
pub use key::{KeyError, PrivateKey};
pub use validate::{Rejection, Verified};

#[cfg(test)]
pub(crate) mod testca;

/// PEM armour with 64-column base64, the layout every TLS tool reads.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = openssl::base64::encode_block(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
