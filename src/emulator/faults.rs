//! Fault injection: the [`Fault`] modes the emulator can misbehave in, and the switch that
//! holds the current mode and how many API calls it still applies to.
//!
//! Adding a mode means adding a variant here (name, description, `ALL`) and giving it an
//! effect in `routes::fault_gate`, the single place where API calls consult the switch.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// How the emulator should (mis)behave on API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave like the real service.
    Ok,
}

impl Fault {
    /// Every mode, in the order they are listed to users.
    pub const ALL: &'static [Fault] = &[Fault::Ok];

    /// The name used on the command line and in `PUT /emulator/v1/fault`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Ok => "ok",
        }
    }

    /// One line for help texts.
    pub fn description(self) -> &'static str {
        match self {
            Fault::Ok => "behave like the real metadata service",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that names no mode; its message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault mode {given:?}; valid modes: {}", valid_names())]
pub struct UnknownFault {
    pub given: String,
}

fn valid_names() -> String {
    Fault::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFault {
                given: s.to_string(),
            })
    }
}

/// The current fault and how many more API calls it applies to (`None`: until changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultState {
    pub mode: Fault,
    pub remaining: Option<u32>,
}

/// Shared, lockable fault state.
#[derive(Debug)]
pub(crate) struct FaultSwitch {
    state: Mutex<FaultState>,
}

impl FaultSwitch {
    pub fn new(mode: Fault) -> Self {
        FaultSwitch {
            state: Mutex::new(FaultState {
                mode,
                remaining: None,
            }),
        }
    }

    /// Sets the mode for the next `count` API calls (`None`: until changed again).
    pub fn set(&self, mode: Fault, count: Option<u32>) {
        // A fault for zero calls is no fault at all; normalising here keeps `take` simple.
        let state = match count {
            Some(0) => FaultState {
                mode: Fault::Ok,
                remaining: None,
            },
            _ => FaultState {
                mode,
                remaining: count,
            },
        };
        *self.lock() = state;
    }

    /// The current state, without consuming anything (for the control endpoint).
    pub fn peek(&self) -> FaultState {
        *self.lock()
    }

    /// The fault that applies to the API call being served; counts it against a limited fault.
    pub fn take(&self) -> Fault {
        let mut state = self.lock();
        let mode = state.mode;
        if let Some(left) = state.remaining {
            if left <= 1 {
                *state = FaultState {
                    mode: Fault::Ok,
                    remaining: None,
                };
            } else {
                state.remaining = Some(left - 1);
            }
        }
        mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // The guarded value is a plain Copy struct that is never left half-written,
        // so a panic elsewhere while holding the lock cannot have corrupted it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_valid_modes() {
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(*f));
            assert!(!f.description().is_empty());
        }
        assert_eq!(" OK ".parse::<Fault>(), Ok(Fault::Ok));
        let err = "explode".parse::<Fault>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown fault mode \"explode\"; valid modes: ok"
        );
    }

    #[test]
    fn counted_fault_reverts_to_ok() {
        let switch = FaultSwitch::new(Fault::Ok);
        switch.set(Fault::Ok, Some(2));
        assert_eq!(
            switch.peek(),
            FaultState {
                mode: Fault::Ok,
                remaining: Some(2)
            }
        );
        assert_eq!(switch.take(), Fault::Ok);
        assert_eq!(switch.peek().remaining, Some(1));
        assert_eq!(switch.take(), Fault::Ok);
        assert_eq!(switch.peek().remaining, None);
        switch.set(Fault::Ok, Some(0));
        assert_eq!(switch.peek().remaining, None);
    }
}
