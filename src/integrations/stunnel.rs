//! The stunnel client section printed by `eit-certd stunnel-config`: what goes into it is
//! checked first, so that no argument can smuggle a directive (`x\nexec = /bin/sh`) into a
//! file that a root stunnel then reads.

use std::path::{Path, PathBuf};

use crate::store;

/// What the section is made of (the command's arguments, checked by [`Section::render`]).
#[derive(Debug, Clone)]
pub struct Section<'a> {
    /// The section name, `[NAME]`.
    pub name: &'a str,
    /// Where stunnel listens for the local NFS client, `ADDR:PORT`.
    pub accept: &'a str,
    /// The mount target, `HOST:PORT`.
    pub connect: &'a str,
    /// CA bundle that verifies the file server.
    pub ca_file: &'a Path,
    /// The name the server's certificate must carry, if checked.
    pub check_host: Option<&'a str>,
    /// eit-certd's `output.dir`.
    pub output_dir: &'a Path,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SectionError {
    #[error("--{flag} {value:?} is not HOST:PORT (a host name, an IPv4 address or a [bracketed] IPv6 address, and a port from 1 to 65535)")]
    HostPort { flag: &'static str, value: String },
    #[error("--{flag} {value:?} is not a host name (letters, digits, '-' and '.')")]
    Host { flag: &'static str, value: String },
    #[error("--name {0:?} is not a section name: use letters, digits, '-', '_' and '.'")]
    Name(String),
    #[error("{what} {} must be an absolute path without control characters", path.display())]
    Path { what: &'static str, path: PathBuf },
}

/// Debian's system CA bundle, `--ca-file`'s default: it trusts every public CA, so the section
/// says so where it names it.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Section<'_> {
    /// The section as text, or what is wrong with an argument.
    pub fn render(&self) -> Result<String, SectionError> {
        let (connect_host, _) = host_port("connect", self.connect)?;
        let (_, accept_port) = host_port("accept", self.accept)?;
        if !is_section_name(self.name) {
            return Err(SectionError::Name(self.name.to_string()));
        }
        if let Some(h) = self.check_host {
            if !is_host_name(h) {
                return Err(SectionError::Host {
                    flag: "check-host",
                    value: h.to_string(),
                });
            }
        }
        let current = self.output_dir.join(store::CURRENT);
        for (what, path) in [("--ca-file", self.ca_file), ("output.dir", self.output_dir)] {
            if !is_clean_path(path) {
                return Err(SectionError::Path {
                    what,
                    path: path.to_path_buf(),
                });
            }
        }
        // Without a name or address check, any certificate from a CA in CAfile would pass as
        // the file server: one of the two is always there.
        let check = match (self.check_host, connect_host) {
            (Some(name), _) => format!("checkHost = {name}\n"),
            (None, Host::Ip(ip)) => format!("checkIP = {ip}\n"),
            (None, Host::Name(name)) => format!("checkHost = {name}\n"),
        };
        let ca_note = if self.ca_file == Path::new(SYSTEM_CA_BUNDLE) {
            "; CAfile is the system bundle, which trusts every public CA: prefer the CA that\n\
             ; signs the File Storage mount targets' certificates (--ca-file).\n"
        } else {
            ""
        };
        Ok(format!(
            "; eit-certd: stunnel client for an NFS share with encryption in transit; one file per\n\
             ; share under /etc/stunnel/ (the global options below are per stunnel process).\n\
             ; Mount with: mount -t nfs4 -o port={accept_port} 127.0.0.1:/<share path> /mnt/share\n\
             ; hooks/stunnel-reload finds stunnel by this pid file (its default STUNNEL_PID_GLOB is\n\
             ; \"/run/stunnel*/*.pid /var/run/stunnel4/*.pid\").\n\
             pid = /run/stunnel4/{name}.pid\n\
             ; Drop root after start-up. A reload (SIGHUP) then re-reads cert and key as stunnel4:\n\
             ; set group = \"stunnel4\" under [output] in eit-certd's config (key.pem 0640).\n\
             setuid = stunnel4\n\
             setgid = stunnel4\n\
             ; No `output =`: stunnel-reload reads stunnel's journal, and the daemon's sandbox\n\
             ; could not read stunnel's own log file.\n\
             [{name}]\n\
             client = yes\n\
             accept = {accept}\n\
             connect = {connect}\n\
             ; Renewed by eit-certd; `stunnel-reload` (SIGHUP) makes new connections use the new pair.\n\
             cert = {cert}\n\
             key = {key}\n\
             ; Verify the file server: its chain up to CAfile, and its name or address.\n\
             {ca_note}\
             CAfile = {ca}\n\
             verifyChain = yes\n\
             {check}",
            name = self.name,
            accept = self.accept,
            connect = self.connect,
            cert = current.join(store::FULLCHAIN_FILE).display(),
            key = current.join(store::KEY_FILE).display(),
            ca = self.ca_file.display(),
        ))
    }
}

/// The host part of `HOST:PORT`.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    Ip(std::net::IpAddr),
    Name(&'a str),
}

/// `HOST:PORT` with HOST a name, an IPv4 address or a bracketed IPv6 address.
fn host_port<'a>(flag: &'static str, value: &'a str) -> Result<(Host<'a>, u16), SectionError> {
    let bad = || SectionError::HostPort {
        flag,
        value: value.to_string(),
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Host::Ip(std::net::IpAddr::V6(v6.parse().map_err(|_| bad())?)),
        None if !is_host_name(host) => return Err(bad()),
        None => match host.parse::<std::net::Ipv4Addr>() {
            Ok(v4) => Host::Ip(v4.into()),
            Err(_) => Host::Name(host),
        },
    };
    Ok((host, port))
}

/// A DNS name or an IPv4 address: letters, digits, '-' and '.', 1 to 253 characters.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_section_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_clean_path(p: &Path) -> bool {
    crate::config::absolute_path_problem(&p.to_string_lossy()).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section<'a>(connect: &'a str, name: &'a str) -> Section<'a> {
        Section {
            name,
            accept: "127.0.0.1:20049",
            connect,
            ca_file: Path::new(SYSTEM_CA_BUNDLE),
            check_host: None,
            output_dir: Path::new("/var/lib/eit-certd"),
        }
    }

    #[test]
    fn good_arguments_make_a_section() {
        let text = section("10.240.0.5:20049", "eit-nfs").render().unwrap();
        assert!(text.contains("connect = 10.240.0.5:20049\n"), "{text}");
        assert!(
            text.contains("key = /var/lib/eit-certd/current/key.pem\n"),
            "{text}"
        );
        assert!(section("[fd00::1]:20049", "x").render().is_ok());
        assert!(section("share.example.com:20049", "x").render().is_ok());
        assert!(text.contains("pid = /run/stunnel4/eit-nfs.pid\n"), "{text}");
        assert!(
            text.contains("setuid = stunnel4\nsetgid = stunnel4\n"),
            "{text}"
        );
        assert!(!text.contains("\noutput"), "{text}");
        // Globals come before the section: stunnel reads them only there.
        assert!(text.find("pid =").unwrap() < text.find("[eit-nfs]").unwrap());
    }

    #[test]
    fn the_file_server_is_always_checked_by_name_or_address() {
        let check = |connect: &str, host: Option<&str>| {
            let mut s = section(connect, "n");
            s.check_host = host;
            let text = s.render().unwrap();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("checkHost") || l.starts_with("checkIP"))
                .collect();
            assert!(text.contains("verifyChain = yes\n"), "{text}");
            lines.join("|")
        };
        assert_eq!(check("10.240.64.5:20049", None), "checkIP = 10.240.64.5");
        assert_eq!(check("[fd00::1]:20049", None), "checkIP = fd00::1");
        assert_eq!(
            check("share.example:20049", None),
            "checkHost = share.example"
        );
        assert_eq!(
            check("10.240.64.5:20049", Some("mt.example")),
            "checkHost = mt.example"
        );
        let default_ca = section("h:1", "n").render().unwrap();
        assert!(default_ca.contains("every public CA"), "{default_ca}");
        let mut own = section("h:1", "n");
        own.ca_file = Path::new("/etc/stunnel/file-storage-ca.pem");
        assert!(!own.render().unwrap().contains("every public CA"));
    }

    #[test]
    fn no_argument_can_add_a_directive() {
        for connect in [
            "x\nexec = /bin/sh:1",
            "host:0",
            "host:70000",
            "host",
            "[::1:2049",
            "a b:1",
        ] {
            assert!(
                matches!(
                    section(connect, "n").render(),
                    Err(SectionError::HostPort { .. })
                ),
                "{connect:?}"
            );
        }
        assert!(matches!(
            section("h:1", "n]\nexec = /bin/sh\n[x").render(),
            Err(SectionError::Name(_))
        ));
        let mut s = section("h:1", "n");
        s.check_host = Some("h\nexec = /bin/sh");
        assert!(matches!(s.render(), Err(SectionError::Host { .. })));
        let ca = PathBuf::from("/x\nexec = /bin/sh");
        let mut s = section("h:1", "n");
        s.ca_file = &ca;
        assert!(matches!(s.render(), Err(SectionError::Path { .. })));
    }
}
