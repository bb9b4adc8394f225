//! The consumers' own formats: what eit-certd writes for strongSwan ([`swanctl`]: its
//! directories, linked to the installed set) and prints for stunnel ([`stunnel`]: the section
//! to paste into its configuration).

pub mod stunnel;
pub mod swanctl;
