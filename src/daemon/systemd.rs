//! systemd service notifications (`Type=notify`): READY once a valid set is in place, STATUS
//! lines a person sees in `systemctl status`, WATCHDOG pings, STOPPING. All no-ops when
//! `NOTIFY_SOCKET` is not set, i.e. outside systemd.

use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            // Ping at half the interval, as sd_watchdog_enabled(3) recommends.
            .then(|| Duration::from_micros(usec) / 2);
        Notifier { enabled, watchdog }
    }

    /// How often to ping the watchdog, if systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, state: &[NotifyState]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, state) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// One line: the protocol is newline-separated, so a newline in `text` (from an error
    /// message) would otherwise add fields such as READY=1.
    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(&crate::text::one_line(text))]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
