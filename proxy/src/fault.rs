//! Rollback drills in the data plane: the faults a drill injects into the requests the
//! split sends to a rollout's canary, as Envoy's fault filter does — a share of them
//! answered 503 by serin itself (saying it is a drill), the others delayed before they
//! are forwarded — counted as they are injected.
//!
//! A [`Drill`] rides in the [`crate::View`] of its service (`View::drill`), so a
//! request with no drill pays one check of an `Option`, and a reload (which builds a new
//! view) ends every drill by itself. Which request gets which fault is [`choose`], a
//! plain function of the drill's counter: exact shares per 10 000 requests, as the
//! unkeyed split, with no random draw.
//!
//! The faults are recorded in the canary's stats as what they are: the 503 as an
//! answer with that status (an error every rule sees), the delay as latency of the
//! request it held (`crate::execute` counts it from before the delay).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::record::Outcome;
use crate::table::VersionRuntime;

/// The same stride as the unkeyed split (`crate::split`): coprime with 10 000, so the
/// counter walks every point once per 10 000 requests and short runs stay close to
/// the share.
const STRIDE: u64 = 6181;
/// Shares are in basis points: 10 000 = every request.
pub const ALL: u32 = 10_000;

/// The header serin's drill 503 carries, so nobody reads it as the app's own.
pub const X_SERIN_FAULT: &str = "x-serin-fault";

/// What a drill does to one request sent to the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Nothing: forwarded as without a drill.
    None,
    /// Answered 503 by serin, never forwarded.
    Abort,
    /// Forwarded after this delay.
    Delay(Duration),
}

/// The fault one request gets: the `n`th request of the drill is answered 503 when its
/// point (`n` × the stride, mod 10 000) falls within `errors` (basis points); every
/// other one is delayed by `latency` (none when zero).
pub fn choose(errors: u32, latency: Duration, n: u64) -> Injection {
    let point = (n.wrapping_mul(STRIDE) % u64::from(ALL)) as u32;
    if point < errors {
        Injection::Abort
    } else if latency.is_zero() {
        Injection::None
    } else {
        Injection::Delay(latency)
    }
}

/// What a drill injects, as given (checked by whoever takes it from a person).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Share of the canary's requests answered 503, in basis points (0..=10 000).
    pub errors: u32,
    /// Added before each of the canary's other requests is forwarded.
    pub latency: Duration,
}

/// A drill running on one service: its fault, until when, and what it injected.
#[derive(Debug)]
pub struct Drill {
    pub fault: Fault,
    /// After this instant the drill injects nothing, even before the control loop
    /// takes it out of the view.
    pub until: Instant,
    /// The version the faults go to (the rollout's canary).
    canary: usize,
    next: AtomicU64,
    aborted: AtomicU64,
    delayed: AtomicU64,
}

impl Drill {
    pub fn new(fault: Fault, until: Instant, canary: usize) -> Self {
        Self {
            fault,
            until,
            canary,
            next: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
        }
    }

    /// The fault a request planned for `version` gets now, counted.
    #[inline]
    pub fn inject(&self, version: usize) -> Injection {
        if version != self.canary || Instant::now() >= self.until {
            return Injection::None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let injection = choose(self.fault.errors, self.fault.latency, n);
        match injection {
            Injection::Abort => self.aborted.fetch_add(1, Ordering::Relaxed),
            Injection::Delay(_) => self.delayed.fetch_add(1, Ordering::Relaxed),
            Injection::None => 0,
        };
        injection
    }

    /// Requests answered 503 by the drill so far.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Requests the drill delayed so far.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }
}

/// The fault `drill` injects into a request planned as `plan` to `version` (the
/// planned one); a 503 is recorded against the version here, as its answer.
#[inline]
pub(crate) fn injected(drill: &Drill, plan: &Plan, version: &VersionRuntime) -> Injection {
    let injection = drill.inject(plan.version);
    if injection == Injection::Abort {
        version
            .stats
            .record_matching(Outcome::Response(503), Duration::ZERO, plan.success_rules);
    }
    injection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_of_errors_is_exact_over_ten_thousand_requests() {
        for errors in [0, 1, 1_000, 3_333, 9_999, ALL] {
            let aborted = (0..u64::from(ALL))
                .filter(|n| choose(errors, Duration::ZERO, *n) == Injection::Abort)
                .count();
            assert_eq!(aborted, errors as usize, "errors {errors}");
        }
    }

    #[test]
    fn a_short_run_stays_close_to_the_share() {
        let aborted = (0..100)
            .filter(|n| choose(1_000, Duration::ZERO, *n) == Injection::Abort)
            .count();
        assert!((8..=12).contains(&aborted), "{aborted} of 100 at 10 %");
    }

    #[test]
    fn every_request_not_answered_503_is_delayed() {
        let latency = Duration::from_millis(300);
        let injections: Vec<_> = (0..1000).map(|n| choose(2_500, latency, n)).collect();
        assert!(injections
            .iter()
            .all(|i| *i == Injection::Abort || *i == Injection::Delay(latency)));
        assert!(injections.contains(&Injection::Delay(latency)));
        assert_eq!(choose(0, Duration::ZERO, 7), Injection::None);
    }

    #[test]
    fn only_the_canary_gets_faults_and_they_are_counted() {
        let fault = Fault {
            errors: ALL,
            latency: Duration::ZERO,
        };
        let drill = Drill::new(fault, Instant::now() + Duration::from_secs(60), 1);
        assert_eq!(drill.inject(0), Injection::None);
        assert_eq!(drill.inject(1), Injection::Abort);
        assert_eq!(drill.inject(1), Injection::Abort);
        assert_eq!((drill.aborted(), drill.delayed()), (2, 0));
    }

    #[test]
    fn a_drill_past_its_end_injects_nothing() {
        let fault = Fault {
            errors: ALL,
            latency: Duration::from_secs(1),
        };
        let drill = Drill::new(fault, Instant::now(), 1);
        assert_eq!(drill.inject(1), Injection::None);
        assert_eq!((drill.aborted(), drill.delayed()), (0, 0));
    }
}
