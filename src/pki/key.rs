//! The instance's RSA private key: generated fresh for each certificate, held in memory only
//! in buffers that are wiped on drop, and redacted from `Debug`.

use std::fmt;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation ({bits} bits) failed: {cause}")]
    Generate {
        bits: u32,
        cause: openssl::error::ErrorStack,
    },
    #[error("cannot encode the private key: {0}")]
    Encode(openssl::error::ErrorStack),
    #[error("the private key is not a readable PEM key: {0}")]
    Decode(openssl::error::ErrorStack),
    #[error("key generation was interrupted: {0}")]
    Join(String),
}

/// An RSA private key with its PKCS#8 PEM encoding.
///
/// OpenSSL clears the key's bignums when the `PKey` is freed; the PEM copy we hold lives in a
/// `Zeroizing` buffer, so no plain copy of the secret outlives this value.
pub struct PrivateKey {
    pkey: PKey<Private>,
    pem: Zeroizing<Vec<u8>>,
    bits: u32,
}

impl PrivateKey {
    /// Generates a key. Slow for 4096 bits (1–10 s): call `generate_blocking` from async code.
    pub fn generate(bits: u32) -> Result<PrivateKey, KeyError> {
        let rsa = Rsa::generate(bits).map_err(|cause| KeyError::Generate { bits, cause })?;
        let pkey = PKey::from_rsa(rsa).map_err(|cause| KeyError::Generate { bits, cause })?;
        PrivateKey::from_pkey(pkey)
    }

    /// Generates a key on tokio's blocking pool so the runtime keeps serving timers and signals.
    pub async fn generate_blocking(bits: u32) -> Result<PrivateKey, KeyError> {
        tokio::task::spawn_blocking(move || PrivateKey::generate(bits))
            .await
            .map_err(|e| KeyError::Join(e.to_string()))?
    }

    /// Generates a key at normal priority on one thread per available core and returns the
    /// first that finishes: RSA prime search time is heavy-tailed, and the fastest of n runs
    /// cuts the tail. The others are dropped (and wiped) when they finish; OpenSSL offers no
    /// way to stop them earlier.
    pub async fn generate_racing(bits: u32) -> Result<PrivateKey, KeyError> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut started = 0;
        for _ in 0..n {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("eit-keygen-race".into())
                .spawn(move || {
                    let _ = tx.send(PrivateKey::generate(bits));
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        drop(tx);
        if started == 0 {
            return PrivateKey::generate_blocking(bits).await;
        }
        let mut last = None;
        while let Some(result) = rx.recv().await {
            match result {
                Ok(key) => return Ok(key),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| KeyError::Join("no key generation finished".into())))
    }

    /// Reads a PEM private key (PKCS#8 or PKCS#1), e.g. an installed `key.pem`. An encrypted
    /// key is refused: without a callback OpenSSL would ask for its pass phrase on the
    /// terminal and block (eit-certd never writes one; one that is there was planted).
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        let pkey = PKey::private_key_from_pem_callback(pem, |_| Ok(0)).map_err(KeyError::Decode)?;
        PrivateKey::from_pkey(pkey)
    }

    fn from_pkey(pkey: PKey<Private>) -> Result<PrivateKey, KeyError> {
        let pem = Zeroizing::new(pkey.private_key_to_pem_pkcs8().map_err(KeyError::Encode)?);
        let bits = pkey.bits();
        Ok(PrivateKey { pkey, pem, bits })
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the form stunnel and GnuTLS both read.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The public half as DER SubjectPublicKeyInfo, for comparison with a certificate's key.
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        self.pkey.public_key_to_der().map_err(KeyError::Encode)
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    pub(crate) fn pkey(&self) -> &PKey<Private> {
        &self.pkey
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("bits", &self.bits)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem() {
        let k = PrivateKey::generate(2048).unwrap();
        assert_eq!(k.bits(), 2048);
        assert!(k.pem().starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let again = PrivateKey::from_pem(k.pem()).unwrap();
        assert_eq!(again.public_key_der().unwrap(), k.public_key_der().unwrap());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = PrivateKey::generate(2048).unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("redacted"));
        let body = std::str::from_utf8(k.pem())
            .unwrap()
            .lines()
            .nth(1)
            .unwrap();
        assert!(!shown.contains(body));
    }

    #[test]
    fn an_encrypted_key_is_refused_without_asking_for_a_pass_phrase() {
        let k = PrivateKey::generate(2048).unwrap();
        let encrypted = k
            .pkey
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"secret")
            .unwrap();
        // With a terminal attached, the old call printed "Enter PEM pass phrase:" and waited.
        assert!(matches!(
            PrivateKey::from_pem(&encrypted),
            Err(KeyError::Decode(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            PrivateKey::from_pem(b"not a key"),
            Err(KeyError::Decode(_))
        ));
    }
}
