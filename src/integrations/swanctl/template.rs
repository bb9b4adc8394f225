//! The connection `swanctl-config` prints: IBM's swanctl.conf section for a File Storage mount
//! target (its name, and the options that put the certificate eit-certd keeps current into
//! an IKEv2 connection), with comments that say where it goes.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `swanctl-config`: a connection name and the options a File Storage mount target needs.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The mount target's IP address.
    pub remote: IpAddr,
    /// The connection (and CHILD_SA) name.
    pub name: String,
    /// The certificate path `local.certs` names.
    pub cert: PathBuf,
}

/// IBM's name for a mount target's connection: `ibmshare-ipsec-to-10-240-64-5` (IPv6: each
/// `:` becomes `-` as well).
pub fn default_connection_name(remote: IpAddr) -> String {
    format!(
        "ibmshare-ipsec-to-{}",
        remote.to_string().replace(['.', ':'], "-")
    )
}

/// A connection name swanctl.conf takes as a section name as is.
pub fn validate_connection_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid connection name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', \
             starting with a letter or digit"
        ))
    }
}

impl Connection {
    /// The swanctl.conf text: IBM's connection for a mount target (IKEv2 with the instance
    /// identity certificate, AES-GCM ESP in transport mode, trapped so that the first packet
    /// to the target brings it up), with `#` comments that say where it goes.
    pub fn render(&self, dir: &Path) -> String {
        let any = match self.remote {
            IpAddr::V4(_) => "0.0.0.0/0",
            IpAddr::V6(_) => "::/0",
        };
        let mut out = String::new();
        let _ = write!(
            out,
            "# eit-certd: swanctl connection to the File Storage mount target {remote}, for a share\n\
             # mounted with encryption in transit (IPsec). Save it as\n\
             #   {conf_d}/{name}.conf\n\
             # (replacing IBM's conf.d/type_ibmshare_{remote}.conf, if there is one), then run\n\
             #   swanctl --load-conns\n\
             # local.certs is the certificate eit-certd keeps current ([output.swanctl]); the\n\
             # swanctl-reload hook loads each new one into charon.\n\
             connections {{\n\
             \x20   {name} {{\n\
             \x20       version = 2\n\
             \x20       remote_addrs = {remote}\n\
             \x20       proposals = aes256-sha384-ecp384\n\
             \x20       encap = yes\n\
             \x20       rekey_time = 3600\n\
             \x20       keyingtries = 3\n\
             \x20       unique = replace\n\
             \x20       dpd_delay = 30s\n\
             \x20       local {{\n\
             \x20           certs = {cert}\n\
             \x20       }}\n\
             \x20       remote {{\n\
             \x20           id = %any\n\
             \x20       }}\n\
             \x20       children {{\n\
             \x20           {name} {{\n\
             \x20               esp_proposals = aes256gcm16\n\
             \x20               mode = transport\n\
             \x20               start_action = trap\n\
             \x20               remote_ts = {remote}[any/any]\n\
             \x20               local_ts = {any}[any/any]\n\
             \x20               rekey_time = 3600\n\
             \x20           }}\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            remote = self.remote,
            name = self.name,
            cert = self.cert.display(),
            conf_d = dir.join("conf.d").display(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_and_rendering() {
        let v4: IpAddr = "10.240.64.5".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        assert_eq!(default_connection_name(v4), "ibmshare-ipsec-to-10-240-64-5");
        assert_eq!(default_connection_name(v6), "ibmshare-ipsec-to-2001-db8--5");
        for ok in ["a", "share-1", "x.y_z", &"a".repeat(64)] {
            assert!(validate_connection_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a b", "a{", "a/b", "ä", &"a".repeat(65)] {
            assert!(validate_connection_name(bad).is_err(), "{bad}");
        }
        let c = Connection {
            remote: v6,
            name: default_connection_name(v6),
            cert: PathBuf::from("/etc/swanctl/x509/type_ibmshare.pem"),
        };
        let text = c.render(Path::new("/etc/swanctl"));
        assert!(text.contains("remote_addrs = 2001:db8::5\n"), "{text}");
        assert!(text.contains("local_ts = ::/0[any/any]\n"), "{text}");
        assert!(
            text.contains("certs = /etc/swanctl/x509/type_ibmshare.pem\n"),
            "{text}"
        );
        assert!(text.contains("#   /etc/swanctl/conf.d/ibmshare-ipsec-to-2001-db8--5.conf\n"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(text.lines().all(|l| l.starts_with('#') || !l.contains('#')));
    }
}
