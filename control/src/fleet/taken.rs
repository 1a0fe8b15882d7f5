//! The fleet commands a leader has taken lately, so that none is applied twice.
//!
//! A command is deleted from etcd in the fenced txn that writes what it did, so a new
//! leader never sees one whose effect was written. The leader that took it can still see
//! it again: in the prefix's snapshot after etcd compacted the watch's history while the
//! txn was pending (etcd away) or in flight, or when the instance that gave it wrote it
//! again because etcd's answer to its first write was lost. The ids taken lately — a
//! bounded number, oldest forgotten first — tell those apart from new commands.

use std::collections::{HashSet, VecDeque};

/// Ids remembered; far more than the commands given between two snapshots.
pub const REMEMBERED: usize = 1024;

/// The ids of the commands taken lately, at most [`REMEMBERED`].
#[derive(Debug, Default)]
pub struct Taken {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Taken {
    /// True the first time `id` is seen (remembering it); false when it was taken lately.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_seen_again_is_not_taken_twice() {
        let mut taken = Taken::default();
        assert!(taken.first_time("web-2-7-1"));
        assert!(taken.first_time("web-2-7-2"));
        // The snapshot after compaction still holds both (their delete is pending).
        assert!(!taken.first_time("web-2-7-1"));
        assert!(!taken.first_time("web-2-7-2"));
        assert!(taken.first_time("web-3-9-1"));
    }

    #[test]
    fn it_remembers_a_bounded_number_oldest_forgotten_first() {
        let mut taken = Taken::default();
        for i in 0..REMEMBERED {
            assert!(taken.first_time(&format!("id-{i}")));
        }
        assert!(!taken.first_time("id-0"));
        assert!(taken.first_time("one-more"));
        // The oldest went to make room; the newest are still known.
        assert!(taken.first_time("id-0"));
        assert!(!taken.first_time(&format!("id-{}", REMEMBERED - 1)));
        assert_eq!(taken.order.len(), REMEMBERED);
        assert_eq!(taken.ids.len(), REMEMBERED);
    }
}
