//! In what order the files of a run are read, and by whom.
//!
//! Correlation decides it. A run's files fall into series: one server's files of one kind, each
//! series read file after file in time order (an SMTP session may continue into the next file).
//! A message crosses servers and is written once every series of tracking events is an hour
//! past it, so all series should move through log time together: the workers share one
//! [`Board`], and each takes, a batch at a time, the free series furthest behind. One series
//! read to its end before another starts (what reading files one after the other does) held
//! every message of the first open until the second caught up, or cut them apart at a cap.
//!
//! Time order is the file's first row's time (its `#Date` if it has no row yet). Names are not
//! enough: Exchange numbers the files of one day or hour `-1`, `-2`, … `-10`, and `-10` sorts
//! before `-2` as text. Ties fall back to the path in natural order (digit runs as numbers).

use std::cmp::Ordering;
use std::path::Path;

use mailflow_parser::directive::{Directive, parse_directive};
use mailflow_parser::fields::datetime::parse_datetime_ms;

/// The time a log file starts at, from its first bytes: the first data row's `date-time` (the
/// first field of every Exchange transport log), else the `#Date` header.
pub fn start_time(head: &[u8]) -> Option<i64> {
    let head = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(head);
    let mut date = None;
    // Only complete lines: the last one may be cut at the end of the head.
    let complete = head
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&[][..], |i| &head[..i]);
    for line in complete.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'#') {
            if let Ok((_, Directive::Date(d))) = parse_directive(line) {
                date = parse_datetime_ms(d.trim_ascii());
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let first = line.split(|&b| b == b',').next().unwrap_or_default();
        if let Some(t) = parse_datetime_ms(first) {
            return Some(t);
        }
    }
    date
}

/// Text order with runs of digits compared as numbers: `-2` before `-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let (da, db) = (&a[..na], &b[..nb]);
                // Without leading zeros, a longer run is a larger number.
                let strip = |d: &[u8]| {
                    let z = d.iter().take_while(|&&c| c == b'0').count();
                    d.len() - z
                };
                let order = strip(da)
                    .cmp(&strip(db))
                    .then_with(|| da[da.len() - strip(da)..].cmp(&db[db.len() - strip(db)..]))
                    .then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// Orders files by first-row time, then path in natural order.
pub fn time_order(a: (Option<i64>, &Path), b: (Option<i64>, &Path)) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| natural_cmp(&a.1.to_string_lossy(), &b.1.to_string_lossy()))
}

/// A series as the [`Board`] sees it.
pub trait Lane {
    /// The log time it has reached.
    fn mark(&self) -> i64;
    /// Whether it has a file open (holding a decoder and a batch in progress).
    fn is_open(&self) -> bool;
    /// Whether it has nothing left to read.
    fn is_done(&self) -> bool;
    /// Series of one group (a server's) are best moved by one worker: it then writes to fewer
    /// partitions at once.
    fn group(&self) -> &str;
    /// Lanes of one kin are runs of one series read side by side (a series cut so that more
    /// workers can read it): they cover different stretches of time, and the lead does not
    /// hold one back for another.
    fn kin(&self) -> usize;
}

enum Slot<L> {
    /// Free to take; by its owner only while it has a file open (see [`Board`]).
    Free(L, Option<usize>),
    Held,
    Done,
}

struct State<L> {
    slots: Vec<Slot<L>>,
    /// Each series' mark when last seen (a held series keeps the one it was taken with).
    marks: Vec<i64>,
    /// Each series' group, numbered.
    group: Vec<usize>,
    kin: Vec<usize>,
    /// The worker that last moved a series of each group.
    last: Vec<Option<usize>>,
}

/// The series of a run, shared by its workers: [`Board::take`] hands out the free series
/// furthest behind in log time (preferring those it moved before), [`Board::put`] returns it. At most `max_open` series have a
/// file open at once, which bounds the decoders in memory whatever the number of series; no
/// series is taken more than `lead` ahead of the one furthest behind, so a fast worker waits
/// for a slow one rather than leave it hours behind (the messages in between would stay open).
///
/// A series with a file open stays with the worker that opened it until the file is closed:
/// each worker writes through its own sink, and a file's rows must reach one sink in order
/// (the lake records how far into a file it has committed; rows of one file committed by two
/// writers would let a later commit claim rows an earlier one has not made durable).
pub struct Board<L> {
    state: std::sync::Mutex<State<L>>,
    returned: std::sync::Condvar,
    max_open: usize,
    lead: i64,
}

impl<L> std::fmt::Debug for Board<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("max_open", &self.max_open)
            .field("lead", &self.lead)
            .finish_non_exhaustive()
    }
}

impl<L: Lane> Board<L> {
    /// A board of `lanes`; `lead` in log milliseconds.
    pub fn new(lanes: Vec<L>, max_open: usize, lead: i64) -> Self {
        let marks = lanes.iter().map(Lane::mark).collect();
        let mut names: Vec<&str> = Vec::new();
        let group: Vec<usize> = lanes
            .iter()
            .map(|l| match names.iter().position(|n| *n == l.group()) {
                Some(g) => g,
                None => {
                    names.push(l.group());
                    names.len() - 1
                }
            })
            .collect();
        let last = vec![None; names.len()];
        let kin = lanes.iter().map(Lane::kin).collect();
        let slots = lanes.into_iter().map(|l| Slot::Free(l, None)).collect();
        Board {
            state: std::sync::Mutex::new(State {
                slots,
                marks,
                group,
                kin,
                last,
            }),
            returned: std::sync::Condvar::new(),
            max_open: max_open.max(1),
            lead: lead.max(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<L>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For `worker`, the free series furthest behind, with its index; waits while what is
    /// left is held by, or open with, other workers, or too far ahead; `None` once every
    /// series is done.
    pub fn take(&self, worker: usize) -> Option<(usize, L)> {
        let mut st = self.lock();
        loop {
            let State {
                slots,
                marks,
                group,
                kin,
                last,
            } = &mut *st;
            // The series furthest behind, among all not done (held ones at their last mark).
            let behind = (0..slots.len())
                .filter(|&i| !matches!(slots[i], Slot::Done))
                .min_by_key(|&i| marks[i])?;
            let held = slots.iter().filter(|s| matches!(s, Slot::Held)).count();
            let open = held
                + slots
                    .iter()
                    .filter(|s| matches!(s, Slot::Free(l, _) if l.is_open()))
                    .count();
            let can_open = open < self.max_open;
            // When the series furthest behind waits for a file to close, open series may run
            // ahead until one does: the lead must not stop the files that free the slot.
            let behind_waits =
                matches!(&slots[behind], Slot::Free(l, _) if !l.is_open()) && !can_open;
            // How far lane i may run: the lead past the furthest behind of the other kins. That
            // is the series furthest behind, unless it is lane i's kin; then the furthest behind
            // of any other kin (one pass finds both, so a take stays linear in the series).
            let other = (0..slots.len())
                .filter(|&j| kin[j] != kin[behind] && !matches!(slots[j], Slot::Done))
                .map(|j| marks[j])
                .min();
            let horizon = |i: usize| {
                let m = if kin[i] == kin[behind] {
                    other
                } else {
                    Some(marks[behind])
                };
                m.map_or(i64::MAX, |m| m.saturating_add(self.lead))
            };
            let pick = (0..slots.len())
                .filter(|&i| match &slots[i] {
                    Slot::Free(l, owner) => {
                        owner.is_none_or(|o| o == worker)
                            && (l.is_open() || can_open)
                            && (marks[i] <= horizon(i) || (behind_waits && l.is_open()))
                    }
                    _ => false,
                })
                // Within the lead, a worker keeps to the groups (servers) it has been moving:
                // each then writes fewer partitions at once (each buffers a row group).
                .min_by_key(|&i| (last[group[i]].is_some_and(|w| w != worker), marks[i]));
            if let Some(i) = pick
                && let Slot::Free(l, _) = std::mem::replace(&mut slots[i], Slot::Held)
            {
                return Some((i, l));
            }
            st = self.returned.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// `worker` gives series `i` back (done, if it has nothing left).
    pub fn put(&self, i: usize, lane: L, worker: usize) {
        let mut st = self.lock();
        if i < st.slots.len() {
            st.marks[i] = lane.mark();
            let g = st.group[i];
            st.last[g] = Some(worker);
            st.slots[i] = if lane.is_done() {
                Slot::Done
            } else {
                let owner = lane.is_open().then_some(worker);
                Slot::Free(lane, owner)
            };
        }
        drop(st);
        self.returned.notify_all();
    }

    /// A worker failed (an error, or a panic while it held a series), and the run with it:
    /// every series is given up, so no worker waits for one that will never come back.
    pub fn fail(&self) {
        let mut st = self.lock();
        st.slots.iter_mut().for_each(|s| *s = Slot::Done);
        drop(st);
        self.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct L {
        mark: i64,
        open: bool,
        left: u32,
    }

    impl Lane for L {
        fn mark(&self) -> i64 {
            self.mark
        }
        fn is_open(&self) -> bool {
            self.open
        }
        fn is_done(&self) -> bool {
            self.left == 0
        }
        fn kin(&self) -> usize {
            self.mark as usize
        }
        fn group(&self) -> &str {
            // Every test series its own group.
            match self.mark {
                0 => "a",
                5 => "b",
                _ => "c",
            }
        }
    }

    #[test]
    fn the_series_furthest_behind_goes_first_and_open_files_are_capped() {
        let lanes = vec![
            L {
                mark: 30,
                open: false,
                left: 1,
            },
            L {
                mark: 10,
                open: false,
                left: 1,
            },
            L {
                mark: 20,
                open: true,
                left: 1,
            },
        ];
        let board = Board::new(lanes, 1, i64::MAX);
        // One file may be open, and series 2 has it: only series 2 can be taken.
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 2);
        l.open = false;
        l.mark = 40;
        board.put(i, l, 0);
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 1, "now the one furthest behind");
        l.left = 0;
        board.put(i, l, 0);
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 0);
        l.left = 0;
        board.put(i, l, 0);
        let (i, _) = board.take(0).unwrap();
        assert_eq!(i, 2);
        board.fail();
        assert!(board.take(0).is_none(), "every series given up");
    }

    #[test]
    fn a_series_with_a_file_open_stays_with_its_worker() {
        let board = Board::new(
            vec![
                L {
                    mark: 0,
                    open: false,
                    left: 2,
                },
                L {
                    mark: 5,
                    open: false,
                    left: 1,
                },
            ],
            4,
            i64::MAX,
        );
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 0);
        l.open = true;
        board.put(i, l, 0);
        // Worker 1 may not take series 0 while worker 0 has its file open.
        let (j, mut l1) = board.take(1).unwrap();
        assert_eq!(j, 1);
        l1.mark = 6;
        board.put(j, l1, 1);
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 0);
        l.open = false;
        board.put(i, l, 0);
        // Closed, it is anyone's again; worker 1 still keeps to the series it has been moving.
        let (j, mut l1) = board.take(1).unwrap();
        assert_eq!(j, 1);
        l1.left = 0;
        board.put(j, l1, 1);
        assert_eq!(board.take(1).unwrap().0, 0);
    }

    #[test]
    fn a_worker_waits_for_a_held_series_and_not_after_a_failure() {
        let board = std::sync::Arc::new(Board::new(
            vec![L {
                mark: 0,
                open: false,
                left: 1,
            }],
            4,
            i64::MAX,
        ));
        let (i, l) = board.take(0).unwrap();
        let other = {
            let board = std::sync::Arc::clone(&board);
            std::thread::spawn(move || board.take(1).map(|(i, _)| i))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!other.is_finished(), "waits while the series is held");
        board.put(i, l, 0);
        let j = other.join().unwrap();
        assert_eq!(j, Some(0));
        board.fail();
        assert!(board.take(0).is_none());
    }

    #[test]
    fn no_series_runs_more_than_the_lead_ahead_of_the_one_behind() {
        let lanes = vec![
            L {
                mark: 0,
                open: true,
                left: 1,
            },
            L {
                mark: 100,
                open: false,
                left: 1,
            },
        ];
        let board = std::sync::Arc::new(Board::new(lanes, 4, 50));
        // Worker 0 has series 0 open; worker 1 may not start series 1, 100 ahead of it.
        let (i, mut l) = board.take(0).unwrap();
        assert_eq!(i, 0);
        let other = {
            let board = std::sync::Arc::clone(&board);
            std::thread::spawn(move || board.take(1).map(|(i, _)| i))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !other.is_finished(),
            "worker 1 waits for series 0 to move on"
        );
        l.mark = 60;
        board.put(i, l, 0);
        assert_eq!(other.join().unwrap(), Some(1), "within the lead now");
    }

    #[test]
    fn a_failure_releases_a_worker_waiting_for_a_held_series() {
        let lane = L {
            mark: 0,
            open: false,
            left: 1,
        };
        let board = std::sync::Arc::new(Board::new(vec![lane], 4, i64::MAX));
        // Worker 0 holds the only series and fails without giving it back.
        let (_i, _held) = board.take(0).unwrap();
        let waiting = {
            let board = std::sync::Arc::clone(&board);
            std::thread::spawn(move || board.take(1).map(|(i, _)| i))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished());
        board.fail();
        assert_eq!(waiting.join().unwrap(), None);
    }

    #[test]
    fn exchange_file_numbers_sort_as_numbers() {
        let mut v = vec![
            "MSGTRK20250114-10.LOG",
            "MSGTRK20250114-2.LOG",
            "MSGTRK20250114-1.LOG",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "MSGTRK20250114-1.LOG",
                "MSGTRK20250114-2.LOG",
                "MSGTRK20250114-10.LOG"
            ]
        );
        assert_eq!(natural_cmp("a007", "a7"), Ordering::Greater);
        assert_eq!(natural_cmp("EX01/x", "EX01/x"), Ordering::Equal);
        assert_eq!(natural_cmp("b", "a9"), Ordering::Greater);
    }

    #[test]
    fn a_file_starts_at_its_first_row_or_else_its_date() {
        let head = b"\xEF\xBB\xBF#Software: Microsoft Exchange Server\r\n#Date: 2025-01-14T00:00:00.000Z\r\n#Fields: date-time,x\r\n2025-01-15T10:00:00.000Z,a\r\n2025-01-15T11";
        assert_eq!(start_time(head), Some(1_736_935_200_000));
        let only_headers = b"#Date: 2025-01-14T00:00:00.000Z\r\n#Fields: date-time,x\r\n";
        assert_eq!(start_time(only_headers), Some(1_736_812_800_000));
        assert_eq!(start_time(b"not a log"), None);
    }
}
