//! Lock histories and the checker of their safety rules.
//!
//! Each client records, for every lock it took, the fencing token and the wall-clock interval of
//! its critical section as the client saw it: from the moment `lock()` returned to the moment
//! it called `unlock()` (or was killed). The checker then tests the rules a lock must keep:
//!
//! 1. **Tokens rise in acquisition order**: whenever a holder acquired after another (by
//!    wall clock) and at least one of them is exclusive, its token is larger. Tokens are never
//!    repeated.
//! 2. **No overlap**: the critical sections of an exclusive holder and any other holder never
//!    intersect. (Shared holders may overlap each other.)
//! 3. **No loss without a fault**: with no fault injected, no holder loses its lock.
//!
//! With faults injected ([`Faults::Injected`]) a holder can lose its lock while it still
//! believes it holds it (its process paused past its lease, its network cut): then the next
//! holder legitimately starts before the first one's interval ends. Such an overlap, or
//! inversion of acquisition order, is *excused* only when the holder with the **lower** token —
//! the one the store ordered first — is marked lost ([`History::lost`]). If the newer holder
//! is the one marked lost, or neither is, it is a violation: two holders at once. Whether the
//! excused overlaps did harm is for fencing to decide; [`Report::excused`] counts them so a
//! test can show that they happened.
//!
//! ```
//! use std::time::Duration;
//! use coord_chaos::history::{check, Access, Entry, Faults};
//!
//! let ms = Duration::from_millis;
//! let ok = [
//!     Entry::exclusive("a", 10, ms(0), Some(ms(5))),
//!     Entry::exclusive("b", 12, ms(6), Some(ms(9))),
//! ];
//! assert!(check(&ok, Faults::None).is_ok());
//!
//! let overlapping = [
//!     Entry::exclusive("a", 10, ms(0), Some(ms(7))),
//!     Entry::exclusive("b", 12, ms(6), Some(ms(9))),
//! ];
//! let report = check(&overlapping, Faults::None);
//! assert_eq!(report.violations.len(), 1);
//! assert!(report.to_string().contains("overlap"));
//! # let _ = Access::Shared;
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time as a duration since the Unix epoch (comparable across processes of one
/// machine).
pub type Timestamp = Duration;

/// The current wall-clock time.
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// What kind of hold an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A mutex or a write lock: excludes everyone.
    Exclusive,
    /// A read lock: excludes only exclusive holders.
    Shared,
}

/// One critical section, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Who held it (for the report).
    pub client: String,
    /// The fencing token (the lock key's create revision).
    pub token: i64,
    /// Exclusive or shared.
    pub access: Access,
    /// When `lock()` returned.
    pub acquired: Timestamp,
    /// When `unlock()` was called (or the holder was killed); `None`: still held.
    pub released: Option<Timestamp>,
    /// Set when the holder lost the lock before `released` (lease expired or revoked while
    /// paused, process killed, unlock said "not held"), with why.
    pub lost: Option<String>,
}

impl Entry {
    /// An exclusive entry (for hand-made histories).
    pub fn exclusive(
        client: impl Into<String>,
        token: i64,
        acquired: Timestamp,
        released: Option<Timestamp>,
    ) -> Entry {
        Entry {
            client: client.into(),
            token,
            access: Access::Exclusive,
            acquired,
            released,
            lost: None,
        }
    }

    /// A shared entry (for hand-made histories).
    pub fn shared(
        client: impl Into<String>,
        token: i64,
        acquired: Timestamp,
        released: Option<Timestamp>,
    ) -> Entry {
        Entry {
            access: Access::Shared,
            ..Entry::exclusive(client, token, acquired, released)
        }
    }

    /// The same entry, marked lost.
    pub fn with_lost(mut self, reason: impl Into<String>) -> Entry {
        self.lost = Some(reason.into());
        self
    }

    fn end(&self) -> Option<Timestamp> {
        self.released
    }
}

/// Whether faults were injected while the history was recorded: decides which rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// No fault: every rule is strict, and a lost lock is itself a violation.
    None,
    /// Faults were injected: overlaps and order inversions are excused where the holder with
    /// the lower token lost its lock (see the module docs).
    Injected,
}

/// A broken rule, with the entries involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An entry released before it was acquired (a recording bug).
    Malformed {
        /// The entry.
        entry: Entry,
    },
    /// Two entries with one token.
    DuplicateToken {
        /// The first entry.
        a: Entry,
        /// The second entry.
        b: Entry,
    },
    /// `later` acquired after `earlier` but has a token that is not larger.
    TokenOrder {
        /// The entry acquired first.
        earlier: Entry,
        /// The entry acquired later, with the smaller or equal token.
        later: Entry,
    },
    /// Two critical sections intersect, at least one exclusive.
    Overlap {
        /// The entry with the lower token.
        first: Entry,
        /// The entry with the higher token.
        second: Entry,
        /// How long both held at once.
        overlap: Duration,
    },
    /// A holder lost its lock although no fault was injected.
    LostWithoutFault {
        /// The entry.
        entry: Entry,
    },
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Entries checked.
    pub entries: usize,
    /// Entries marked lost.
    pub lost: usize,
    /// Overlaps or order inversions excused because the older holder had lost its lock.
    pub excused: usize,
    /// Every broken rule.
    pub violations: Vec<Violation>,
    /// The earliest timestamp, from which the report's times are counted.
    pub origin: Timestamp,
}

impl Report {
    /// Whether no rule was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Collects entries from many tasks (or from worker processes' reports).
#[derive(Debug, Default)]
pub struct History {
    entries: Mutex<Vec<Entry>>,
}

/// The index of an entry in a [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryId(usize);

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an acquisition that returned now.
    pub fn acquired(&self, client: impl Into<String>, token: i64, access: Access) -> EntryId {
        self.acquired_at(client, token, access, now())
    }

    /// Records an acquisition that returned at `at`.
    pub fn acquired_at(
        &self,
        client: impl Into<String>,
        token: i64,
        access: Access,
        at: Timestamp,
    ) -> EntryId {
        self.push(Entry {
            client: client.into(),
            token,
            access,
            acquired: at,
            released: None,
            lost: None,
        })
    }

    /// Adds a whole entry.
    pub fn push(&self, entry: Entry) -> EntryId {
        let mut entries = self.lock();
        entries.push(entry);
        EntryId(entries.len() - 1)
    }

    /// Records that the holder called `unlock()` now: call it *before* awaiting the unlock.
    pub fn releasing(&self, id: EntryId) {
        self.released_at(id, now());
    }

    /// Records the end of the critical section at `at`.
    pub fn released_at(&self, id: EntryId, at: Timestamp) {
        self.lock()[id.0].released = Some(at);
    }

    /// Marks the entry lost (the holder learned it had lost the lock, or was killed).
    pub fn lost(&self, id: EntryId, reason: impl Into<String>) {
        self.lock()[id.0].lost = Some(reason.into());
    }

    /// A copy of the entries.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the rules (see the module docs).
    pub fn check(&self, faults: Faults) -> Report {
        check(&self.entries(), faults)
    }
}

/// Checks `entries` against the rules of the module docs.
pub fn check(entries: &[Entry], faults: Faults) -> Report {
    let mut report = Report {
        entries: entries.len(),
        lost: entries.iter().filter(|e| e.lost.is_some()).count(),
        origin: entries.iter().map(|e| e.acquired).min().unwrap_or_default(),
        ..Report::default()
    };
    for e in entries {
        if e.released.is_some_and(|r| r < e.acquired) {
            report
                .violations
                .push(Violation::Malformed { entry: e.clone() });
        }
        if faults == Faults::None && e.lost.is_some() {
            report
                .violations
                .push(Violation::LostWithoutFault { entry: e.clone() });
        }
    }

    let mut by_token: Vec<&Entry> = entries.iter().collect();
    by_token.sort_by_key(|e| e.token);
    for pair in by_token.windows(2) {
        if pair[0].token == pair[1].token {
            report.violations.push(Violation::DuplicateToken {
                a: pair[0].clone(),
                b: pair[1].clone(),
            });
        }
    }

    // Every pair that involves an exclusive holder. Histories are a few thousand entries at
    // most, so the quadratic scan is cheap and reports every broken pair.
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            if a.access == Access::Shared && b.access == Access::Shared {
                continue;
            }
            if a.token == b.token {
                continue; // reported as a duplicate
            }
            let (first, second) = if a.token < b.token { (a, b) } else { (b, a) };
            // The store granted `first` before `second`. Excused under faults when `first`
            // lost the lock: `second` got it because `first`'s key was gone.
            let excusable = faults == Faults::Injected && first.lost.is_some();

            // Rule 1: acquisition order must match token order.
            if second.acquired < first.acquired {
                if excusable {
                    report.excused += 1;
                } else {
                    report.violations.push(Violation::TokenOrder {
                        earlier: second.clone(),
                        later: first.clone(),
                    });
                }
                continue; // the overlap of this pair is the same story
            }

            // Rule 2: no overlap.
            let start = second.acquired;
            let end = match (first.end(), second.end()) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (Some(x), None) | (None, Some(x)) => Some(x),
                (None, None) => None,
            };
            let overlap = match end {
                Some(end) if end > start => Some(end - start),
                Some(_) => None,
                None => Some(Duration::MAX),
            };
            if let Some(overlap) = overlap {
                if excusable {
                    report.excused += 1;
                } else {
                    report.violations.push(Violation::Overlap {
                        first: first.clone(),
                        second: second.clone(),
                        overlap,
                    });
                }
            }
        }
    }
    report
}

struct Describe<'a>(&'a Entry, Timestamp);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Describe(e, origin) = *self;
        let t = |ts: Timestamp| ts.saturating_sub(origin).as_secs_f64() * 1000.0;
        let kind = match e.access {
            Access::Exclusive => "exclusive",
            Access::Shared => "shared",
        };
        write!(
            f,
            "{} ({kind}, token {}, held {:.3} ms – ",
            e.client,
            e.token,
            t(e.acquired)
        )?;
        match e.released {
            Some(r) => write!(f, "{:.3} ms", t(r))?,
            None => f.write_str("still held")?,
        }
        if let Some(reason) = &e.lost {
            write!(f, ", lost: {reason}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} entries, {} lost, {} excused by loss, {} violations (times from the first acquisition)",
            self.entries,
            self.lost,
            self.excused,
            self.violations.len()
        )?;
        let o = self.origin;
        for v in self.violations.iter().take(50) {
            match v {
                Violation::Malformed { entry } => writeln!(
                    f,
                    "  malformed: released before acquired: {}",
                    Describe(entry, o)
                )?,
                Violation::DuplicateToken { a, b } => writeln!(
                    f,
                    "  duplicate token: {} and {}",
                    Describe(a, o),
                    Describe(b, o)
                )?,
                Violation::TokenOrder { earlier, later } => writeln!(
                    f,
                    "  token order: {} acquired before {} but its token is larger",
                    Describe(earlier, o),
                    Describe(later, o)
                )?,
                Violation::Overlap {
                    first,
                    second,
                    overlap,
                } => {
                    let by = if *overlap == Duration::MAX {
                        "with no end".to_string()
                    } else {
                        format!("by {:.3} ms", overlap.as_secs_f64() * 1000.0)
                    };
                    writeln!(
                        f,
                        "  overlap {by}: {} and {}",
                        Describe(first, o),
                        Describe(second, o)
                    )?
                }
                Violation::LostWithoutFault { entry } => writeln!(
                    f,
                    "  lost without an injected fault: {}",
                    Describe(entry, o)
                )?,
            }
        }
        if self.violations.len() > 50 {
            writeln!(f, "  … and {} more", self.violations.len() - 50)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn x(client: &str, token: i64, from: u64, to: u64) -> Entry {
        Entry::exclusive(client, token, ms(from), Some(ms(to)))
    }

    fn s(client: &str, token: i64, from: u64, to: u64) -> Entry {
        Entry::shared(client, token, ms(from), Some(ms(to)))
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert!(check(&[], Faults::None).is_ok());
        let h = [x("a", 5, 0, 10), x("b", 7, 10, 20), x("a", 9, 21, 30)];
        let r = check(&h, Faults::None);
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.entries, 3);
        // Touching intervals (release at 10, next acquire at 10) do not overlap.
        assert_eq!(r.excused, 0);
    }

    #[test]
    fn overlap_is_reported_with_who_and_how_long() {
        let h = [x("a", 5, 0, 10), x("b", 7, 8, 20)];
        let r = check(&h, Faults::None);
        assert_eq!(r.violations.len(), 1, "{r}");
        match &r.violations[0] {
            Violation::Overlap {
                first,
                second,
                overlap,
            } => {
                assert_eq!((first.token, second.token), (5, 7));
                assert_eq!(*overlap, ms(2));
            }
            v => panic!("wrong violation {v:?}"),
        }
        let text = r.to_string();
        assert!(text.contains("overlap by 2.000 ms"), "{text}");
        assert!(text.contains("a (exclusive, token 5"), "{text}");
        assert!(text.contains("b (exclusive, token 7"), "{text}");
    }

    #[test]
    fn a_holder_that_never_released_overlaps_everyone_after_it() {
        let h = [
            Entry::exclusive("a", 5, ms(0), None),
            x("b", 7, 8, 20),
            x("c", 9, 30, 40),
        ];
        let r = check(&h, Faults::None);
        assert_eq!(r.violations.len(), 2, "{r}");
        assert!(r.to_string().contains("still held"));
    }

    #[test]
    fn tokens_must_rise_in_acquisition_order() {
        // b acquired after a (no overlap) but with a smaller token.
        let h = [x("a", 9, 0, 10), x("b", 7, 11, 20)];
        let r = check(&h, Faults::None);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(matches!(
            &r.violations[0],
            Violation::TokenOrder { earlier, later } if earlier.token == 9 && later.token == 7
        ));
        assert!(r.to_string().contains("token order"));
    }

    #[test]
    fn duplicate_tokens_are_reported() {
        let h = [x("a", 7, 0, 10), x("b", 7, 11, 20)];
        let r = check(&h, Faults::None);
        assert!(r
            .violations
            .iter()
            .any(|v| matches!(v, Violation::DuplicateToken { .. })));
    }

    #[test]
    fn malformed_entries_are_reported() {
        let h = [x("a", 7, 10, 5)];
        let r = check(&h, Faults::None);
        assert!(matches!(r.violations[0], Violation::Malformed { .. }));
    }

    #[test]
    fn readers_may_share_but_not_with_writers() {
        let ok = [s("r1", 3, 0, 10), s("r2", 4, 2, 12), x("w", 6, 12, 20)];
        assert!(check(&ok, Faults::None).is_ok());
        // Reader token order does not matter among readers.
        let ok = [s("r1", 4, 0, 10), s("r2", 3, 2, 12)];
        assert!(check(&ok, Faults::None).is_ok());
        let bad = [s("r1", 3, 0, 10), x("w", 6, 5, 20)];
        let r = check(&bad, Faults::None);
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(r.to_string().contains("shared, token 3"));
        // A writer after a reader must have a larger token.
        let bad = [s("r", 8, 0, 10), x("w", 6, 11, 20)];
        assert!(!check(&bad, Faults::None).is_ok());
    }

    #[test]
    fn without_faults_a_lost_lock_is_a_violation() {
        let h = [x("a", 5, 0, 10).with_lost("SessionExpired")];
        let r = check(&h, Faults::None);
        assert!(matches!(
            r.violations[0],
            Violation::LostWithoutFault { .. }
        ));
        assert!(check(&h, Faults::Injected).is_ok());
    }

    #[test]
    fn under_faults_only_the_older_holders_loss_excuses_an_overlap() {
        // a paused past its lease: b took over while a still believed it held the lock.
        let paused = [
            x("a", 5, 0, 30).with_lost("lease expired"),
            x("b", 7, 20, 40),
        ];
        let r = check(&paused, Faults::Injected);
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.excused, 1);
        // The same without the loss mark: two holders at once.
        let r = check(&[x("a", 5, 0, 30), x("b", 7, 20, 40)], Faults::Injected);
        assert_eq!(r.violations.len(), 1, "{r}");
        // The *newer* holder being lost excuses nothing.
        let r = check(
            &[x("a", 5, 0, 30), x("b", 7, 20, 40).with_lost("x")],
            Faults::Injected,
        );
        assert_eq!(r.violations.len(), 1, "{r}");
        assert!(matches!(r.violations[0], Violation::Overlap { .. }));
    }

    #[test]
    fn under_faults_order_inversion_is_excused_only_by_the_lower_tokens_loss() {
        // a was granted first (token 5) but its lock() returned late, after b's: legitimate
        // only if a lost the lock (it did not really hold it when it returned).
        let inverted = [x("b", 7, 10, 20), x("a", 5, 15, 16).with_lost("expired")];
        let r = check(&inverted, Faults::Injected);
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.excused, 1);
        let inverted = [x("b", 7, 10, 20).with_lost("expired"), x("a", 5, 25, 30)];
        let r = check(&inverted, Faults::Injected);
        assert!(
            matches!(r.violations[0], Violation::TokenOrder { .. }),
            "{r}"
        );
    }

    #[test]
    fn live_recording_keeps_intervals() {
        let h = History::new();
        let a = h.acquired_at("a", 3, Access::Exclusive, ms(1));
        h.released_at(a, ms(4));
        let b = h.acquired("b", 4, Access::Exclusive);
        h.releasing(b);
        let c = h.acquired("c", 8, Access::Exclusive);
        h.lost(c, "revoked");
        assert_eq!(h.len(), 3);
        let entries = h.entries();
        assert_eq!(entries[0].released, Some(ms(4)));
        assert!(entries[1].released.unwrap() >= entries[1].acquired);
        assert_eq!(entries[2].lost.as_deref(), Some("revoked"));
        assert!(h.check(Faults::Injected).is_ok());
        // Without faults, c's loss is itself the one violation (nobody came after it).
        let r = h.check(Faults::None);
        assert_eq!(r.violations.len(), 1, "{r}");
    }

    #[test]
    fn a_long_history_reports_every_overlapping_pair() {
        // 100 sequential sections, then three that overlap each other.
        let mut h: Vec<Entry> = (0..100)
            .map(|i| x(&format!("c{i}"), 10 + i as i64, i * 10, i * 10 + 9))
            .collect();
        h.push(x("p", 500, 2000, 2100));
        h.push(x("q", 501, 2050, 2150));
        h.push(x("r", 502, 2060, 2070));
        let r = check(&h, Faults::None);
        assert_eq!(r.violations.len(), 3, "{r}");
    }
}
