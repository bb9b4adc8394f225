//! Timestamps as the metadata service writes them: whole seconds, UTC, RFC 3339
//! (`2025-06-10T11:08:39Z`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, truncated to whole seconds: certificates cannot carry fractions, and the service's
/// `created_at`/`expires_at` should match the certificate's own validity exactly.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().truncate_to_second()
}

/// RFC 3339 in UTC; fractional seconds appear only if `t` has them.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        // Formatting only fails for years outside 0..=9999, which no clock here produces.
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_with_z() {
        let t = time::macros::datetime!(2025-06-10 11:08:39 UTC);
        assert_eq!(rfc3339(t), "2025-06-10T11:08:39Z");
        assert_eq!(now().nanosecond(), 0);
    }
}
