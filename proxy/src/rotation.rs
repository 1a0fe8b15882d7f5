//! Whether an endpoint is in rotation: the state machine of its active health checks
//! and of passive ejection, on a [`Clock`] passed in (a fake one in tests).
//!
//! - **Active checks** ([`Rotation::checked`]): an endpoint that fails
//!   `unhealthy_after` checks in a row leaves rotation; once out, `healthy_after`
//!   passes in a row bring it back. A pass resets the count of failures and a failure
//!   the count of passes. [`Rotation::due`] schedules the checks.
//! - **Passive ejection** ([`Rotation::observe`]): `consecutive_failures` requests in
//!   a row that got no answer or a 5xx eject the endpoint for `duration`; an answer
//!   that is not a failure resets the count. It comes back by itself when the time is
//!   up, with its count at zero.
//!
//! An endpoint is in rotation when it is up by its checks and not ejected. State is
//! in relaxed atomics: the request path reads it and counts outcomes without a lock,
//! and reads the clock only while the endpoint is ejected.
//!
//! What to do when no endpoint of a version is in rotation (fail over) is the plan's
//! choice (`crate::plan`); the connections themselves are `crate::upstream`'s.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use http::uri::Authority;
use serin_config::{Eject, HealthCheck};

/// Milliseconds (and microseconds) on a monotonic clock.
pub trait Clock {
    fn now_ms(&self) -> u64;
    /// Microseconds on the same clock (for latencies).
    fn now_us(&self) -> u64 {
        self.now_ms() * 1_000
    }
}

/// The process's monotonic clock ([`clock_ms`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic;

impl Clock for Monotonic {
    #[inline]
    fn now_ms(&self) -> u64 {
        clock_ms()
    }

    #[inline]
    fn now_us(&self) -> u64 {
        clock_us()
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds on a monotonic clock that starts with the process.
pub fn clock_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Microseconds on the clock of [`clock_ms`].
pub fn clock_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// An ejection: after `failures` in a row, out of rotation until `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejected {
    pub failures: u32,
    pub until_ms: u64,
}

/// One endpoint's place in rotation.
pub struct Rotation {
    /// Active health checks, if the endpoint's version has them.
    pub health: Option<HealthCheck>,
    /// Passive ejection, if the endpoint's version has it.
    pub eject: Option<Eject>,
    /// Who this is, for the log lines of its transitions.
    version: Box<str>,
    authority: Authority,
    /// False while active health checks say the endpoint is down.
    up: AtomicBool,
    /// Check results in a row (by the health checker only): passes, failures.
    passes: AtomicU32,
    fails: AtomicU32,
    /// When the next check is due (ms on the clock); 0 = at once.
    next_check_ms: AtomicU64,
    /// Request failures in a row, for passive ejection.
    failures: AtomicU32,
    /// Ejected until this time (ms on the clock); 0 = not ejected.
    ejected_until_ms: AtomicU64,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("authority", &self.authority)
            .field("up", &self.up.load(Ordering::Relaxed))
            .field(
                "ejected_until_ms",
                &self.ejected_until_ms.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Rotation {
    /// In rotation, with no check done and no failure counted.
    pub fn new(
        version: &str,
        authority: Authority,
        health: Option<HealthCheck>,
        eject: Option<Eject>,
    ) -> Self {
        Self {
            health,
            eject,
            version: version.into(),
            authority,
            up: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            next_check_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// Whether the endpoint is in rotation: not down by health checks, not ejected.
    #[inline]
    pub fn available(&self, clock: &impl Clock) -> bool {
        if !self.up.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || clock.now_ms() >= until
    }

    /// Whether the active checks have it up (ejection aside).
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts a request's outcome for passive ejection (`failed`: no answer or a 5xx);
    /// logs an ejection.
    #[inline]
    pub fn observe(&self, failed: bool, clock: &impl Clock) {
        if let Some(ejected) = self.count(failed, clock) {
            tracing::warn!(
                version = %self.version,
                endpoint = %self.authority,
                failures = ejected.failures,
                for_ms = ejected.until_ms.saturating_sub(clock.now_ms()),
                "endpoint ejected after failing requests in a row"
            );
        }
    }

    /// [`Self::observe`] without the log line: the ejection it caused, if any.
    #[inline]
    pub fn count(&self, failed: bool, clock: &impl Clock) -> Option<Ejected> {
        let eject = self.eject?;
        if !failed {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < eject.consecutive_failures {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        // At least 1: 0 means not ejected.
        let until_ms = (clock.now_ms() + eject.duration.as_millis() as u64).max(1);
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
        Some(Ejected {
            failures: n,
            until_ms,
        })
    }

    /// Whether a health check is due at `now_ms`; if so, the next one is scheduled an
    /// `interval` later (a check in flight counts as done).
    pub fn due(&self, check: &HealthCheck, now_ms: u64) -> bool {
        if now_ms < self.next_check_ms.load(Ordering::Relaxed) {
            return false;
        }
        self.next_check_ms.store(
            now_ms + check.interval.as_millis() as u64,
            Ordering::Relaxed,
        );
        true
    }

    /// Counts an active check's result; flips the endpoint's state when its threshold
    /// is crossed. Returns the new state when it changed (true: back in rotation).
    pub fn checked(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        let up = self.up.load(Ordering::Relaxed);
        if passed {
            self.fails.store(0, Ordering::Relaxed);
            let n = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            if !up && n >= check.healthy_after {
                self.up.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if up && n >= check.unhealthy_after {
                self.up.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Whether this state machine runs the rules `health` and `eject` (so a reload may
    /// keep it, with its state).
    pub fn same_rules(&self, health: Option<&HealthCheck>, eject: Option<&Eject>) -> bool {
        self.health.as_ref() == health && self.eject.as_ref() == eject
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct Fake(Cell<u64>);

    impl Fake {
        fn at(ms: u64) -> Self {
            Self(Cell::new(ms))
        }
        fn advance(&self, ms: u64) {
            self.0.set(self.0.get() + ms);
        }
    }

    impl Clock for Fake {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    fn authority() -> Authority {
        Authority::from_static("127.0.0.1:9001")
    }

    fn ejecting(after: u32, for_ms: u64) -> Rotation {
        Rotation::new(
            "canary",
            authority(),
            None,
            Some(Eject {
                consecutive_failures: after,
                duration: Duration::from_millis(for_ms),
            }),
        )
    }

    fn checked(unhealthy_after: u32, healthy_after: u32) -> (Rotation, HealthCheck) {
        let check = HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(100),
            unhealthy_after,
            healthy_after,
        };
        let rotation = Rotation::new("stable", authority(), Some(check.clone()), None);
        (rotation, check)
    }

    #[test]
    fn consecutive_failures_eject_for_the_configured_time_then_it_comes_back() {
        let clock = Fake::at(1_000);
        let r = ejecting(3, 30_000);
        assert_eq!(r.count(true, &clock), None);
        assert_eq!(r.count(true, &clock), None);
        assert!(r.available(&clock));
        assert_eq!(
            r.count(true, &clock),
            Some(Ejected {
                failures: 3,
                until_ms: 31_000
            })
        );
        assert!(!r.available(&clock));
        clock.advance(29_999);
        assert!(!r.available(&clock));
        clock.advance(1);
        assert!(r.available(&clock), "re-admitted when the time is up");
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let clock = Fake::at(0);
        let r = ejecting(3, 1_000);
        r.count(true, &clock);
        r.count(true, &clock);
        r.count(false, &clock);
        r.count(true, &clock);
        r.count(true, &clock);
        assert!(r.available(&clock), "two failures since the success");
        assert!(r.count(true, &clock).is_some());
        assert!(!r.available(&clock));
    }

    #[test]
    fn a_readmitted_endpoint_needs_as_many_failures_again_to_leave() {
        let clock = Fake::at(0);
        let r = ejecting(2, 1_000);
        r.count(true, &clock);
        assert!(r.count(true, &clock).is_some());
        clock.advance(1_000);
        assert!(r.available(&clock));
        assert_eq!(
            r.count(true, &clock),
            None,
            "the count started again at zero"
        );
        assert!(r.available(&clock));
        assert!(r.count(true, &clock).is_some());
        assert!(!r.available(&clock));
    }

    #[test]
    fn an_ejection_at_time_zero_still_ejects() {
        // 0 means "not ejected": an ejection that would end at 0 must not read as none.
        let clock = Fake::at(0);
        let r = ejecting(1, 0);
        assert_eq!(
            r.count(true, &clock),
            Some(Ejected {
                failures: 1,
                until_ms: 1
            })
        );
        assert!(!r.available(&clock));
        clock.advance(1);
        assert!(r.available(&clock));
    }

    #[test]
    fn without_ejection_failures_change_nothing() {
        let clock = Fake::at(0);
        let r = Rotation::new("stable", authority(), None, None);
        for _ in 0..100 {
            assert_eq!(r.count(true, &clock), None);
        }
        assert!(r.available(&clock));
    }

    #[test]
    fn failed_checks_in_a_row_take_it_out_and_passes_in_a_row_bring_it_back() {
        let clock = Fake::at(0);
        let (r, check) = checked(3, 2);
        assert_eq!(r.checked(false, &check), None);
        assert_eq!(r.checked(false, &check), None);
        assert!(r.available(&clock));
        assert_eq!(r.checked(false, &check), Some(false));
        assert!(!r.available(&clock));
        assert_eq!(r.checked(false, &check), None, "already down");
        assert_eq!(r.checked(true, &check), None);
        assert!(!r.available(&clock));
        assert_eq!(r.checked(true, &check), Some(true));
        assert!(r.available(&clock));
    }

    #[test]
    fn a_pass_between_failed_checks_starts_the_count_again() {
        let (r, check) = checked(2, 2);
        assert_eq!(r.checked(false, &check), None);
        assert_eq!(r.checked(true, &check), None);
        assert_eq!(r.checked(false, &check), None);
        assert_eq!(r.checked(false, &check), Some(false));
        // And a failure between passes while down.
        assert_eq!(r.checked(true, &check), None);
        assert_eq!(r.checked(false, &check), None);
        assert_eq!(r.checked(true, &check), None);
        assert_eq!(r.checked(true, &check), Some(true));
    }

    #[test]
    fn down_by_checks_is_out_of_rotation_whatever_the_ejection() {
        let clock = Fake::at(0);
        let check = HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(100),
            unhealthy_after: 1,
            healthy_after: 1,
        };
        let r = Rotation::new(
            "stable",
            authority(),
            Some(check.clone()),
            Some(Eject {
                consecutive_failures: 1,
                duration: Duration::from_millis(100),
            }),
        );
        r.checked(false, &check);
        clock.advance(1_000);
        assert!(!r.available(&clock));
        r.checked(true, &check);
        assert!(r.available(&clock));
        // Ejected while up by its checks: out until the ejection ends.
        r.count(true, &clock);
        assert!(!r.available(&clock));
        assert!(r.up());
    }

    #[test]
    fn checks_are_due_once_per_interval() {
        let (r, check) = checked(1, 1);
        assert!(r.due(&check, 0), "the first check is due at once");
        assert!(!r.due(&check, 499));
        assert!(r.due(&check, 500));
        assert!(!r.due(&check, 999));
        // Late: the next one is an interval after this one.
        assert!(r.due(&check, 2_000));
        assert!(!r.due(&check, 2_499));
        assert!(r.due(&check, 2_500));
    }
}
