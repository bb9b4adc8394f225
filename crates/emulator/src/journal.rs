//! The request log: what the emulated service saw, for tests and `GET /emulator/v1/requests`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::csr::CsrView;

/// How many records are kept; older ones are dropped first.
pub(crate) const JOURNAL_CAPACITY: usize = 1000;

/// One API call as the service saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The status code that was answered.
    pub status: u16,
    /// When the request arrived, RFC 3339 UTC.
    pub at: String,
    /// The CSR of a certificate call, when it could be parsed (also for rejected ones).
    pub csr: Option<CsrView>,
}

/// A bounded, lockable list of [`RequestRecord`]s, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    records: Mutex<VecDeque<RequestRecord>>,
}

impl Journal {
    pub fn push(&self, record: RequestRecord) {
        let mut records = self.lock();
        if records.len() == JOURNAL_CAPACITY {
            records.pop_front();
        }
        records.push_back(record);
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RequestRecord>> {
        // Each push is a single complete operation on the deque, so a panic elsewhere
        // while the lock was held cannot have left it inconsistent.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_records() {
        let journal = Journal::default();
        for i in 0..JOURNAL_CAPACITY + 5 {
            journal.push(RequestRecord {
                method: "GET".into(),
                path: format!("/{i}"),
                status: 200,
                at: String::new(),
                csr: None,
            });
        }
        let records = journal.snapshot();
        assert_eq!(records.len(), JOURNAL_CAPACITY);
        assert_eq!(records[0].path, "/5");
        assert_eq!(
            records.last().unwrap().path,
            format!("/{}", JOURNAL_CAPACITY + 4)
        );
    }
}
