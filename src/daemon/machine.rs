//! The daemon's decisions, without I/O: given what it knows (when the installed set is due,
//! the last attempt's outcome, hooks still owed, signals and file events not yet acted on) and
//! the time, what to do next. The loop in [`super`] reads the clock, the disk and the signals,
//! feeds them in, and carries out the [`Step`] it gets back; everything here is tested with a
//! made-up clock.
//!
//! Two clocks, because deadlines are of two kinds:
//! - a renewal computed from the certificate's notBefore/notAfter is a *wall-clock* instant (it
//!   is due when the certificate says, whatever happened to this process meanwhile: a suspend,
//!   the clock being set forward);
//! - a retry after a failure, a hook retry and the debounce of file events are *durations* from
//!   the moment they were decided, on the monotonic clock, so that the wall clock being set back
//!   a day does not postpone a retry by a day.

use std::time::Duration;

use time::OffsetDateTime;

use crate::renew::schedule::{Backoff, FailureClass, Policy};

/// The longest single wait. The wall-clock timer already wakes on time after a suspend and
/// early when the clock is set; this only bounds the damage of anything unforeseen.
pub const MAX_SLEEP: Duration = Duration::from_secs(30 * 60);
/// File-system events are collected for this long before acting on them: one install or one
/// editor's save is a burst of events.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// `t + d`, or the latest time there is: a clock (or a date from disk) near the end of year
/// 9999 must not make the daemon panic.
pub fn later(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// The time, as the loop read it; tests make it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The wall clock (can jump both ways when someone sets it).
    pub wall: OffsetDateTime,
    /// The monotonic clock, as the time since an origin the loop chose (never goes back).
    pub mono: Duration,
}

/// When something is due, on the clock that fits it (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At this wall-clock instant.
    Wall(OffsetDateTime),
    /// When the monotonic clock reads this.
    Mono(Duration),
}

impl Due {
    fn reached(self, now: Now) -> bool {
        match self {
            Due::Wall(at) => now.wall >= at,
            Due::Mono(at) => now.mono >= at,
        }
    }

    /// The wall-clock instant this is expected at, for people and state.json.
    pub fn to_wall(self, now: Now) -> OffsetDateTime {
        match self {
            Due::Wall(at) => at,
            Due::Mono(at) => later(now.wall, at.saturating_sub(now.mono)),
        }
    }
}

/// Something that happened outside the loop's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// SIGTERM, SIGINT, or the caller's shutdown.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGUSR1: renew now.
    RenewNow,
    /// File-system activity, already sorted by the loop: the config file or a trust anchor
    /// changed (`config`), something in the output directory that is part of the set changed
    /// (`output`).
    Files { config: bool, output: bool },
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stop: a stop was asked for. Nothing else is ever returned after this.
    Stop,
    /// Load the configuration file again, then report with [`Machine::reloaded`].
    Reload(ReloadCause),
    /// Read the installed set and report with [`Machine::set_checked`].
    CheckInstalled,
    /// Run one renewal attempt, then report with [`Machine::renewed`] or
    /// [`Machine::renewal_failed`].
    Renew,
    /// Run the hooks still owed for the installed set, then report with [`Machine::hooks_ran`].
    RunOwedHooks,
    /// Nothing to do: wait for an [`Input`], or until the wall clock reaches `wall` or the
    /// monotonic clock reaches `mono`, whichever comes first.
    Wait {
        wall: OffsetDateTime,
        mono: Option<Duration>,
    },
}

/// Why the configuration is reloaded, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    Signal,
    FileChanged,
}

/// The installed set, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetView {
    /// Usable now, with these validity bounds.
    Valid {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    /// Ours and whole (the key matches), but expired.
    Expired,
    /// Missing, unreadable, damaged, not matching its key, or not ours.
    Unusable,
}

/// When the next renewal was scheduled, and whether `certificate.min_interval` held it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub at: OffsetDateTime,
    pub held: bool,
}

/// What the loop is doing, as far as the machine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting, or between steps.
    Idle,
    /// A renewal attempt is running.
    Renewing,
    /// Owed hooks are running.
    RunningHooks,
    /// A stop was asked for.
    Stopped,
}

/// The daemon's decision state.
#[derive(Debug)]
pub struct Machine {
    /// When to renew (from the certificate, a failure's backoff, a signal, or "now").
    renew: Due,
    /// When the hooks still owed for the installed set run next; `None` when none are owed.
    hooks: Option<Due>,
    /// Rounds of owed hooks run since the last install, for their backoff.
    hook_rounds: u32,
    /// A reload waits to be done (a SIGHUP, or a debounced change of the config file).
    reload: Option<ReloadCause>,
    /// The output directory changed: read the set again once the debounce has passed.
    check: bool,
    /// A renewal was asked for (SIGUSR1, or a damaged set to repair): it runs next, whatever
    /// a reload meanwhile makes of the schedule. Cleared when the renewal starts.
    renew_now: bool,
    /// The set was usable when last seen. A check that finds it unusable renews at once only
    /// when this was so (a repair); while there is no usable set, failed renewals keep their
    /// backoff, whatever our own writes into the output directory look like.
    usable: bool,
    /// File events are acted on once the monotonic clock reaches this.
    debounce: Option<Duration>,
    /// What the loop is doing.
    phase: Phase,
    /// The renewal policy, from `[certificate]` (replaced on reload).
    policy: Policy,
    /// The retry policy, from `[retry]` (replaced on reload).
    backoff: Backoff,
    /// Random draws in [0, 1) for jitter; tests pass a fixed sequence.
    draw: fn() -> f64,
}

impl Machine {
    /// A machine that renews at once until told what is installed.
    pub fn new(policy: Policy, backoff: Backoff, draw: fn() -> f64) -> Machine {
        Machine {
            renew: Due::Mono(Duration::ZERO),
            hooks: None,
            hook_rounds: 0,
            reload: None,
            check: false,
            renew_now: false,
            usable: false,
            debounce: None,
            phase: Phase::Idle,
            policy,
            backoff,
            draw,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When the next renewal is expected, on the wall clock.
    pub fn next_renewal(&self, now: Now) -> OffsetDateTime {
        self.renew.to_wall(now)
    }

    /// The next step. Renew and RunOwedHooks put the machine in a busy phase until their
    /// outcome is reported; Reload and CheckInstalled are expected to be reported before the
    /// next call.
    pub fn next(&mut self, now: Now) -> Step {
        if self.phase == Phase::Stopped {
            return Step::Stop;
        }
        if self.reload == Some(ReloadCause::Signal) {
            // Before a due renewal: an operator who fixed the config and sent SIGHUP wants
            // the renewal made with the fixed one.
            self.reload = None;
            return Step::Reload(ReloadCause::Signal);
        }
        if self.debounce.is_some_and(|at| now.mono >= at) {
            self.debounce = None;
        }
        if self.debounce.is_none() {
            // A reload first, then the check (a reload that keeps the running config does not
            // read the set again).
            if let Some(cause) = self.reload.take() {
                return Step::Reload(cause);
            }
            if std::mem::take(&mut self.check) {
                return Step::CheckInstalled;
            }
        }
        if self.renew_now || self.renew.reached(now) {
            self.renew_now = false;
            self.phase = Phase::Renewing;
            return Step::Renew;
        }
        if self.hooks.is_some_and(|at| at.reached(now)) {
            self.hooks = None;
            self.phase = Phase::RunningHooks;
            return Step::RunOwedHooks;
        }
        let mut wall = later(now.wall, MAX_SLEEP);
        let mut mono: Option<Duration> = self.debounce;
        for due in [Some(self.renew), self.hooks].into_iter().flatten() {
            match due {
                Due::Wall(at) => wall = wall.min(at),
                Due::Mono(at) => mono = Some(mono.map_or(at, |m| m.min(at))),
            }
        }
        Step::Wait { wall, mono }
    }

    /// Something happened. Signals that arrive while a renewal or hooks run are kept for
    /// after it, except a stop, which ends everything at once.
    pub fn input(&mut self, now: Now, input: Input) {
        if self.phase == Phase::Stopped {
            return;
        }
        match input {
            Input::Stop => self.phase = Phase::Stopped,
            Input::Reload => self.reload = Some(ReloadCause::Signal),
            // The renewal under way answers it.
            Input::RenewNow if self.phase == Phase::Renewing => {}
            Input::RenewNow => self.renew_now = true,
            Input::Files { config, output } => {
                if config && self.reload.is_none() {
                    self.reload = Some(ReloadCause::FileChanged);
                }
                self.check |= output;
                if (config || output) && self.debounce.is_none() {
                    self.debounce = Some(now.mono + DEBOUNCE);
                }
            }
        }
    }

    /// What is installed, read at start or after a reload: schedules the next renewal from it.
    /// `last_success` is the last successful renewal (state.json), for `min_interval` (see
    /// [`Policy::trusted_last_success`]).
    pub fn set_read(
        &mut self,
        now: Now,
        set: SetView,
        last_success: Option<OffsetDateTime>,
    ) -> Scheduled {
        let last_success = Policy::trusted_last_success(last_success, now.wall);
        self.usable = matches!(set, SetView::Valid { .. });
        let (at, held) = match set {
            SetView::Valid {
                not_before,
                not_after,
            } => {
                let due = self
                    .policy
                    .next_renewal(not_before, not_after, (self.draw)());
                self.policy.rate_limited(due, last_success)
            }
            // An expired set that we installed ourselves moments ago is what a service
            // issuing near-expired certificates leaves: the rate floor still applies.
            SetView::Expired => self.policy.rate_limited(now.wall, last_success),
            SetView::Unusable => (now.wall, false),
        };
        self.renew = if at <= now.wall {
            Due::Mono(now.mono)
        } else {
            Due::Wall(at)
        };
        Scheduled { at, held }
    }

    /// The installed set, read after file-system activity in the output directory. Our own
    /// writes end here too and find the set intact: the schedule stands. Returns whether a set
    /// that was usable was found removed or damaged: it is repaired now. With no usable set
    /// before either, the schedule (with its backoff) already has the renewal in hand.
    pub fn set_checked(&mut self, set: SetView) -> bool {
        let was_usable = std::mem::replace(&mut self.usable, matches!(set, SetView::Valid { .. }));
        // Expired, yet ours and whole: the schedule (with its rate floor) has it in hand.
        let repair = was_usable && set == SetView::Unusable;
        self.renew_now |= repair;
        repair
    }

    /// Hooks are owed for the installed set (found in state.json at start): run them now.
    pub fn hooks_owed_at_start(&mut self, now: Now) {
        self.hooks = Some(Due::Mono(now.mono));
        self.hook_rounds = 0;
    }

    /// A renewal installed a set valid over these bounds. `hooks_owed`: some hooks failed and
    /// are to be retried. Returns the next renewal.
    pub fn renewed(
        &mut self,
        now: Now,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        hooks_owed: bool,
    ) -> Scheduled {
        self.leave(Phase::Renewing);
        let due = self
            .policy
            .next_renewal(not_before, not_after, (self.draw)());
        let (at, held) = self.policy.rate_limited(due, Some(now.wall));
        self.renew = Due::Wall(at);
        self.usable = true;
        // A new install supersedes hooks owed for the previous set.
        self.hook_rounds = 1;
        self.hooks = hooks_owed.then(|| Due::Mono(now.mono + self.hook_delay()));
        Scheduled { at, held }
    }

    /// A renewal failed, for the `consecutive`-th time in a row. Returns the delay before the
    /// next attempt.
    pub fn renewal_failed(
        &mut self,
        now: Now,
        failure: FailureClass,
        consecutive: u32,
    ) -> Duration {
        self.leave(Phase::Renewing);
        let delay = self.backoff.delay(consecutive, failure, (self.draw)());
        self.renew = Due::Mono(now.mono + delay);
        delay
    }

    /// A round of owed hooks ran; `still_owed`: some failed and are to be retried. Returns
    /// when they run next.
    pub fn hooks_ran(&mut self, now: Now, still_owed: bool) -> Option<Duration> {
        self.leave(Phase::RunningHooks);
        if !still_owed {
            self.hooks = None;
            return None;
        }
        self.hook_rounds = self.hook_rounds.saturating_add(1);
        let delay = self.hook_delay();
        self.hooks = Some(Due::Mono(now.mono + delay));
        Some(delay)
    }

    /// A reload took a new configuration: its policies apply from now on. The loop then reads
    /// the set again and reports it with [`Machine::set_read`].
    pub fn reloaded(&mut self, policy: Policy, backoff: Backoff) {
        self.policy = policy;
        self.backoff = backoff;
    }

    fn hook_delay(&self) -> Duration {
        self.backoff.delay(
            self.hook_rounds,
            FailureClass::Transient { retry_after: None },
            (self.draw)(),
        )
    }

    /// Back to idle after `phase`, unless a stop came meanwhile.
    fn leave(&mut self, phase: Phase) {
        if self.phase == phase {
            self.phase = Phase::Idle;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const POLICY: Policy = Policy {
        renew_at: 0.5,
        min_remaining: Duration::from_secs(600),
        jitter: Duration::ZERO,
        min_interval: Duration::from_secs(60),
    };
    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(5),
        cap: Duration::from_secs(300),
    };
    const HOUR: Duration = Duration::from_secs(3600);
    const T: FailureClass = FailureClass::Transient { retry_after: None };
    /// Something in the output directory changed.
    const OUTPUT: Input = Input::Files {
        config: false,
        output: true,
    };

    /// Draws the top of the jitter range: delays are at their ceiling, easy to reason about.
    fn top() -> f64 {
        0.999_999
    }

    fn at(secs: u64) -> Now {
        Now {
            wall: datetime!(2026-12-01 08:00 UTC) + Duration::from_secs(secs),
            mono: Duration::from_secs(secs),
        }
    }

    fn machine() -> Machine {
        Machine::new(POLICY, BACKOFF, top)
    }

    /// A machine over a set issued at `at(0)` for an hour: due at half-life.
    fn with_fresh_set() -> Machine {
        let mut m = machine();
        let s = m.set_read(at(0), valid(0, 3600), None);
        assert_eq!(s.at, at(1800).wall);
        m
    }

    fn valid(from: u64, to: u64) -> SetView {
        SetView::Valid {
            not_before: at(from).wall,
            not_after: at(to).wall,
        }
    }

    /// Waiting for nothing but the renewal at `at(secs)`.
    fn only_renewal_at(secs: u64) -> Step {
        Step::Wait {
            wall: at(secs).wall,
            mono: None,
        }
    }

    fn waits_until(step: Step) -> (OffsetDateTime, Option<Duration>) {
        match step {
            Step::Wait { wall, mono } => (wall, mono),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_new_machine_renews_at_once() {
        assert_eq!(machine().next(at(0)), Step::Renew);
    }

    #[test]
    fn a_valid_set_is_renewed_when_due_and_not_before() {
        let mut m = with_fresh_set();
        let (wall, mono) = waits_until(m.next(at(10)));
        assert_eq!(wall, at(1800).wall);
        assert_eq!(mono, None);
        assert_eq!(m.next(at(1799)), only_renewal_at(1800));
        assert_eq!(m.next(at(1800)), Step::Renew);
        assert_eq!(m.phase(), Phase::Renewing);
    }

    #[test]
    fn a_far_renewal_is_waited_for_in_bounded_sleeps() {
        let mut m = machine();
        m.set_read(at(0), valid(0, 30 * 86_400), None);
        let (wall, _) = waits_until(m.next(at(0)));
        assert_eq!(wall, at(0).wall + MAX_SLEEP);
    }

    #[test]
    fn an_unusable_or_expired_set_is_renewed_now() {
        let mut m = machine();
        m.set_read(at(100), SetView::Unusable, None);
        assert_eq!(m.next(at(100)), Step::Renew);
        let mut m = machine();
        m.set_read(at(100), SetView::Expired, None);
        assert_eq!(m.next(at(100)), Step::Renew);
    }

    #[test]
    fn an_expired_set_installed_moments_ago_waits_for_min_interval() {
        let mut m = machine();
        let s = m.set_read(at(100), SetView::Expired, Some(at(90).wall));
        assert!(s.held);
        assert_eq!(s.at, at(150).wall);
        assert!(matches!(m.next(at(100)), Step::Wait { .. }));
        assert_eq!(m.next(at(150)), Step::Renew);
    }

    #[test]
    fn a_last_success_in_the_future_holds_nothing_back() {
        // state.json written while the clock read 2099 (or planted), then the clock fixed.
        for last in [
            datetime!(2099-01-01 00:00 UTC),
            datetime!(9999-12-31 23:59:59.999 UTC),
        ] {
            let mut m = machine();
            let s = m.set_read(at(100), SetView::Expired, Some(last));
            assert_eq!((s.at, s.held), (at(100).wall, false), "{last}");
            assert_eq!(m.next(at(100)), Step::Renew);
            let mut m = machine();
            let s = m.set_read(at(0), valid(0, 3600), Some(last));
            assert_eq!((s.at, s.held), (at(1800).wall, false), "{last}");
        }
    }

    #[test]
    fn success_schedules_from_the_new_certificate_and_rate_limits_a_short_one() {
        let mut m = machine();
        assert_eq!(m.next(at(0)), Step::Renew);
        let s = m.renewed(at(5), at(0).wall, at(3600).wall, false);
        assert_eq!((s.at, s.held), (at(1800).wall, false));
        assert_eq!(m.phase(), Phase::Idle);
        // A certificate that is due at once (lives 10 s) is not renewed in a loop.
        assert_eq!(m.next(at(1800)), Step::Renew);
        let s = m.renewed(at(1801), at(1795).wall, at(1805).wall, false);
        assert!(s.held);
        assert_eq!(s.at, at(1861).wall);
        assert!(matches!(m.next(at(1802)), Step::Wait { .. }));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let mut m = with_fresh_set();
        let mut t = 1800;
        let mut delays = vec![];
        for n in 1..=8 {
            assert_eq!(m.next(at(t)), Step::Renew, "attempt {n}");
            let d = m.renewal_failed(at(t), T, n);
            delays.push(d.as_secs());
            // Not a moment before the delay has passed.
            let (_, mono) = waits_until(m.next(at(t)));
            assert_eq!(mono, Some(at(t).mono + d));
            t += d.as_secs() + 1;
        }
        assert_eq!(delays, [4, 9, 19, 39, 79, 159, 299, 299]);
    }

    #[test]
    fn a_permanent_failure_waits_for_the_cap_and_retry_after_is_honoured() {
        let mut m = machine();
        m.next(at(0));
        assert_eq!(
            m.renewal_failed(at(0), FailureClass::Permanent, 1),
            BACKOFF.cap
        );
        let mut m = machine();
        m.next(at(0));
        let ra = FailureClass::Transient {
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(m.renewal_failed(at(0), ra, 1), Duration::from_secs(120));
    }

    #[test]
    fn failed_hooks_are_retried_with_backoff_until_they_succeed() {
        let mut m = machine();
        m.next(at(0));
        m.renewed(at(1), at(0).wall, at(3600).wall, true);
        // Owed hooks wait for their backoff, then run.
        let (_, mono) = waits_until(m.next(at(1)));
        assert_eq!(mono, Some(at(1).mono + BACKOFF.delay(1, T, top())));
        assert_eq!(m.next(at(6)), Step::RunOwedHooks);
        assert_eq!(m.phase(), Phase::RunningHooks);
        // Still failing: the next round waits longer.
        let d = m.hooks_ran(at(7), true).unwrap();
        assert_eq!(d.as_secs(), 9);
        assert!(matches!(m.next(at(16)), Step::Wait { .. }));
        assert_eq!(m.next(at(17)), Step::RunOwedHooks);
        assert_eq!(m.hooks_ran(at(18), false), None);
        // Nothing owed any more: only the renewal is waited for.
        assert_eq!(m.next(at(19)), only_renewal_at(1800));
    }

    #[test]
    fn hooks_owed_at_start_run_before_waiting() {
        let mut m = with_fresh_set();
        m.hooks_owed_at_start(at(0));
        assert_eq!(m.next(at(0)), Step::RunOwedHooks);
    }

    #[test]
    fn a_new_install_supersedes_hooks_owed_for_the_previous_set() {
        let mut m = machine();
        m.next(at(0));
        m.renewed(at(1), at(0).wall, at(60).wall, true);
        // The next renewal (due at 30 s, floored to 61 s) is due with the owed hooks: it goes
        // first, and its install runs every hook anyway.
        assert_eq!(m.next(at(61)), Step::Renew);
        m.renewed(at(62), at(61).wall, at(3661).wall, false);
        assert_eq!(m.next(at(63)), only_renewal_at(1861));
    }

    #[test]
    fn sighup_reloads_before_a_due_renewal_and_the_new_policy_applies() {
        let mut m = with_fresh_set();
        m.input(at(1800), Input::Reload);
        assert_eq!(m.next(at(1800)), Step::Reload(ReloadCause::Signal));
        let policy = Policy {
            renew_at: 0.75,
            ..POLICY
        };
        m.reloaded(policy, BACKOFF);
        let s = m.set_read(at(1800), valid(0, 3600), None);
        assert_eq!(s.at, at(2700).wall);
        assert!(matches!(m.next(at(1800)), Step::Wait { .. }));
    }

    #[test]
    fn a_reload_asked_for_during_a_renewal_waits_for_it_to_end() {
        let mut m = machine();
        assert_eq!(m.next(at(0)), Step::Renew);
        m.input(at(1), Input::Reload);
        m.input(at(1), Input::RenewNow);
        m.renewed(at(2), at(0).wall, at(3600).wall, false);
        assert_eq!(m.next(at(2)), Step::Reload(ReloadCause::Signal));
        // The SIGUSR1 that came during the renewal was answered by it.
        assert_eq!(m.next(at(2)), only_renewal_at(1800));
    }

    #[test]
    fn sigusr1_renews_now() {
        let mut m = with_fresh_set();
        m.input(at(10), Input::RenewNow);
        assert_eq!(m.next(at(10)), Step::Renew);
    }

    #[test]
    fn file_events_are_debounced_and_then_the_config_and_the_output_are_looked_at() {
        let mut m = with_fresh_set();
        m.input(at(10), OUTPUT);
        m.input(
            at(10),
            Input::Files {
                config: true,
                output: false,
            },
        );
        let (_, mono) = waits_until(m.next(at(10)));
        assert_eq!(mono, Some(at(10).mono + DEBOUNCE));
        let settled = Now {
            wall: at(10).wall + DEBOUNCE,
            mono: at(10).mono + DEBOUNCE,
        };
        assert_eq!(m.next(settled), Step::Reload(ReloadCause::FileChanged));
        // A reload that keeps the running config reads nothing: the set is still checked.
        assert_eq!(m.next(settled), Step::CheckInstalled);
        assert!(!m.set_checked(valid(0, 3600)));
        assert_eq!(m.next(settled), only_renewal_at(1800));
    }

    #[test]
    fn a_damaged_set_is_repaired_now_and_our_own_writes_change_nothing() {
        let mut m = with_fresh_set();
        m.input(at(10), OUTPUT);
        assert_eq!(m.next(at(11)), Step::CheckInstalled);
        assert!(!m.set_checked(valid(0, 3600)));
        assert_eq!(m.next(at(11)), only_renewal_at(1800));
        m.input(at(20), OUTPUT);
        assert_eq!(m.next(at(21)), Step::CheckInstalled);
        assert!(m.set_checked(SetView::Unusable));
        assert_eq!(m.next(at(21)), Step::Renew);
    }

    #[test]
    fn sigusr1_during_owed_hooks_survives_a_reload_that_reschedules() {
        let mut m = with_fresh_set();
        m.hooks_owed_at_start(at(0));
        assert_eq!(m.next(at(0)), Step::RunOwedHooks);
        m.input(at(1), Input::RenewNow);
        m.input(at(1), Input::Reload);
        m.hooks_ran(at(2), false);
        assert_eq!(m.next(at(2)), Step::Reload(ReloadCause::Signal));
        // The reload took a new config and read the set again: its schedule is 30 min away.
        m.reloaded(POLICY, BACKOFF);
        m.set_read(at(2), valid(0, 3600), None);
        assert_eq!(m.next(at(2)), Step::Renew);
    }

    #[test]
    fn without_a_usable_set_our_own_writes_do_not_defeat_the_backoff() {
        // No set, the service down: each failure is followed by writes into the output
        // directory (state.json, a metrics file there), which a check finds still unusable.
        let mut m = machine();
        m.set_read(at(0), SetView::Unusable, None);
        assert_eq!(m.next(at(0)), Step::Renew);
        let delay = m.renewal_failed(at(0), FailureClass::Permanent, 1);
        m.input(at(0), OUTPUT);
        assert_eq!(m.next(at(1)), Step::CheckInstalled);
        assert!(!m.set_checked(SetView::Unusable));
        let (_, mono) = waits_until(m.next(at(1)));
        assert_eq!(mono, Some(delay));
        // A set that was usable and is found damaged is repaired at once, backoff or not.
        let mut m = with_fresh_set();
        assert_eq!(m.next(at(1800)), Step::Renew);
        m.renewal_failed(at(1800), T, 1);
        m.input(at(1801), OUTPUT);
        assert_eq!(m.next(at(1802)), Step::CheckInstalled);
        assert!(m.set_checked(SetView::Unusable));
        assert_eq!(m.next(at(1802)), Step::Renew);
    }

    #[test]
    fn a_clock_at_the_end_of_time_is_no_panic() {
        let end = Now {
            wall: datetime!(9999-12-31 23:59:59.999 UTC),
            mono: Duration::from_secs(10),
        };
        let mut m = machine();
        assert_eq!(m.next(end), Step::Renew);
        m.renewal_failed(end, T, 1);
        assert!(m.next_renewal(end) >= end.wall - HOUR);
        assert!(matches!(m.next(end), Step::Wait { .. }));
        m.input(
            end,
            Input::Files {
                config: true,
                output: true,
            },
        );
        assert!(matches!(m.next(end), Step::Wait { .. }));
        let hour_before = end.wall - HOUR;
        m.renewed(end, hour_before, end.wall, true);
        m.set_read(end, SetView::Expired, Some(end.wall));
        assert_eq!(m.next(end), Step::Renew);
    }

    #[test]
    fn stop_ends_every_phase_and_nothing_runs_after_it() {
        // While waiting.
        let mut m = with_fresh_set();
        m.input(at(1), Input::Stop);
        assert_eq!(m.next(at(1)), Step::Stop);
        // During a renewal: its late outcome does not revive the machine.
        let mut m = machine();
        assert_eq!(m.next(at(0)), Step::Renew);
        m.input(at(1), Input::Stop);
        m.renewal_failed(at(2), T, 1);
        assert_eq!(m.phase(), Phase::Stopped);
        assert_eq!(m.next(at(400)), Step::Stop);
        // During owed hooks.
        let mut m = with_fresh_set();
        m.hooks_owed_at_start(at(0));
        assert_eq!(m.next(at(0)), Step::RunOwedHooks);
        m.input(at(1), Input::Stop);
        m.hooks_ran(at(2), true);
        assert_eq!(m.next(at(3)), Step::Stop);
        // With a reload pending, and signals after the stop.
        let mut m = with_fresh_set();
        m.input(at(1), Input::Reload);
        m.input(at(1), Input::Stop);
        m.input(at(1), Input::RenewNow);
        assert_eq!(m.next(at(1)), Step::Stop);
    }

    #[test]
    fn the_clock_set_forward_past_the_renewal_renews_at_once() {
        let mut m = with_fresh_set();
        // Ten seconds of real time later, the wall clock reads two hours on.
        let jumped = Now {
            wall: at(0).wall + 2 * HOUR,
            mono: Duration::from_secs(10),
        };
        assert_eq!(m.next(jumped), Step::Renew);
    }

    #[test]
    fn the_clock_set_back_does_not_postpone_a_retry() {
        let mut m = with_fresh_set();
        assert_eq!(m.next(at(1800)), Step::Renew);
        let delay = m.renewal_failed(at(1800), T, 1);
        // Set back a day, a moment later: the retry is still due `delay` after the failure.
        let back = |secs: u64| Now {
            wall: at(1800).wall - 24 * HOUR + Duration::from_secs(secs),
            mono: at(1800).mono + Duration::from_secs(secs),
        };
        let (_, mono) = waits_until(m.next(back(1)));
        assert_eq!(mono, Some(at(1800).mono + delay));
        assert_eq!(m.next(back(delay.as_secs() + 1)), Step::Renew);
        // And state.json shows the retry on the new wall clock, not a day away.
        assert!(m.next_renewal(back(1)) < back(1).wall + delay);
    }

    #[test]
    fn the_clock_set_back_before_a_renewal_waits_for_the_certificates_time() {
        // A certificate's renewal time is the certificate's: a clock set back an hour (after
        // being wrong) postpones it with it, as the certificate's own validity does.
        let mut m = with_fresh_set();
        let back = |secs: u64| Now {
            wall: at(secs).wall - HOUR,
            mono: Duration::from_secs(secs),
        };
        assert!(matches!(m.next(back(1000)), Step::Wait { mono: None, .. }));
        assert!(matches!(m.next(back(1800)), Step::Wait { .. }));
        assert_eq!(m.next(back(1800 + 3600)), Step::Renew);
    }

    #[test]
    fn a_suspend_past_the_renewal_renews_on_resume() {
        // The monotonic clock stops during a suspend; the wall clock does not.
        let mut m = with_fresh_set();
        let resumed = Now {
            wall: at(0).wall + 3 * HOUR,
            mono: Duration::from_secs(60),
        };
        assert_eq!(m.next(resumed), Step::Renew);
    }
}
