//! The correlation window both correlators ([`crate::sessions`], [`crate::messages`]) are built
//! on: items open by key, each stream's progress in log time (its watermark), idle close, a cap
//! with eviction of the items idle longest, and the one question a checkpointing runtime asks of
//! any correlator: which source lines do open items still need?
//!
//! A stream is a sequence of batches read in log-time order (a server's protocol logs of one
//! direction; a reader's run of a server's tracking files). An item is idle once the clock has
//! moved `idle` past its last event. The clock is either the item's own stream's watermark
//! ([`Clock::Own`]: an SMTP session lives on one server) or the slowest live stream's
//! ([`Clock::Slowest`]: a message crosses servers, so any stream still behind may add to it; a
//! stream that has ended holds nothing back). Sweeps run only when a clock has moved a step (a
//! minute, or the idle time if shorter) or the cap is passed, so their cost is spread over many
//! batches; past the cap a tenth of it is closed at once, idle-longest first.

use std::hash::Hash;

use hashbrown::{Equivalent, HashMap};

/// How an item's idle time is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Against its own stream's watermark.
    Own,
    /// Against the slowest live stream's watermark.
    Slowest,
}

/// What the window needs to know of an open item.
pub(crate) trait Item {
    /// The stream (by [`Names`] id) whose progress times the item out.
    fn stream(&self) -> u32;
    /// Log time of the item's latest event.
    fn last(&self) -> i64;
    /// Every source file (by [`Names`] id) the item has lines in, with the offset of its first
    /// line there: what a checkpoint must not pass while the item is open.
    fn lines(&self) -> &Lines;
}

/// The files an item has lines in, each with its first line's offset; usually one or two.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lines(Vec<(u32, i64)>);

impl Lines {
    pub(crate) fn new(file: u32, offset: i64) -> Self {
        Lines(vec![(file, offset)])
    }

    /// Notes a line; lines of a file come in offset order, so the common case is one compare.
    pub(crate) fn note(&mut self, file: u32, offset: i64) {
        if let Some(last) = self.0.last_mut()
            && last.0 == file
        {
            last.1 = last.1.min(offset);
            return;
        }
        match self.0.iter_mut().find(|(f, _)| *f == file) {
            Some(e) => e.1 = e.1.min(offset),
            None => self.0.push((file, offset)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: i64,
    /// `at` when the last sweep ran.
    swept: i64,
    live: bool,
    /// The stream has no events after this time (a run of files that another run continues).
    until: i64,
}

/// Open items by key, their streams' watermarks, and the items closed but not yet taken.
#[derive(Debug)]
pub(crate) struct Window<K, I> {
    /// Boxed: a session or message is hundreds of bytes, and the map's growth, its removals and
    /// the sort of what closed would otherwise move them whole (memmove was 14% of a session
    /// correlation profile).
    open: HashMap<K, Box<I>>,
    /// By stream id; `None` until the stream's first event.
    marks: Vec<Option<Mark>>,
    clock: Clock,
    idle_ms: i64,
    step_ms: i64,
    cap: usize,
    /// [`Clock::Own`]: some stream moved a step since the last sweep.
    due: bool,
    /// [`Clock::Slowest`]: the clock at the last sweep.
    swept: i64,
    done: Vec<(K, Box<I>)>,
}

impl<K: Hash + Eq, I: Item> Window<K, I> {
    pub(crate) fn new(clock: Clock, idle_ms: i64, cap: usize) -> Self {
        Window {
            open: HashMap::new(),
            marks: Vec::new(),
            clock,
            idle_ms,
            step_ms: idle_ms.clamp(1, 60_000),
            cap: cap.max(1),
            due: false,
            swept: i64::MIN,
            done: Vec::new(),
        }
    }

    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    pub(crate) fn open_len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub(crate) fn done_len(&self) -> usize {
        self.done.len()
    }

    /// The open item under `key`, made by `make` if there is none.
    pub(crate) fn entry<Q>(&mut self, key: &Q, make: impl FnOnce() -> I) -> &mut I
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        self.open.entry_ref(key).or_insert_with(|| Box::new(make()))
    }

    /// The open item under `key` for an event at `t`: a new one, made by `make`, if there is
    /// none or if the one there has been idle longer than the timeout by `t` (it is closed
    /// first). So whether a late event extends an item or starts another depends on the
    /// events' times alone, not on whether a sweep happened to run between them, which with
    /// streams read by several threads depends on their timing.
    pub(crate) fn entry_at<Q>(&mut self, key: &Q, t: i64, make: impl FnOnce() -> I) -> &mut I
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        let idle = self.idle_ms;
        if self
            .open
            .get(key)
            .is_some_and(|item| t.saturating_sub(item.last()) > idle)
        {
            self.close(key);
        }
        self.entry(key, make)
    }

    /// Closes the item under `key` now (its session ended).
    pub(crate) fn close<Q>(&mut self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if let Some(entry) = self.open.remove_entry(key) {
            self.done.push(entry);
        }
    }

    /// A stream has reached log time `t`.
    pub(crate) fn advance(&mut self, stream: u32, t: i64) {
        let i = stream as usize;
        if self.marks.len() <= i {
            self.marks.resize(i + 1, None);
        }
        let mark = self.marks[i].get_or_insert(Mark {
            at: t,
            swept: t,
            live: true,
            until: i64::MAX,
        });
        mark.live = true;
        if t > mark.at {
            mark.at = t;
            if t.saturating_sub(mark.swept) >= self.step_ms {
                self.due = true;
            }
        }
    }

    /// A stream has no events after `until`: under [`Clock::Slowest`] it holds back only the
    /// items it could still add to (those idle less than `idle` at `until`).
    pub(crate) fn set_until(&mut self, stream: u32, until: i64) {
        let i = stream as usize;
        if self.marks.len() <= i {
            self.marks.resize(i + 1, None);
        }
        // A stream not yet seen holds nothing back until its first event (as any other).
        let mark = self.marks[i].get_or_insert(Mark {
            at: i64::MIN,
            swept: i64::MIN,
            live: false,
            until,
        });
        mark.until = until;
    }

    /// A stream will add nothing more: under [`Clock::Slowest`] it no longer holds others back.
    pub(crate) fn end_stream(&mut self, stream: u32) {
        if let Some(Some(mark)) = self.marks.get_mut(stream as usize) {
            mark.live = false;
        }
    }

    /// The slowest live stream's watermark (the fastest's if none is live).
    fn slowest(&self) -> i64 {
        let marks = self.marks.iter().flatten();
        let live = marks.clone().filter(|m| m.live).map(|m| m.at).min();
        live.or_else(|| marks.map(|m| m.at).max())
            .unwrap_or(i64::MIN)
    }

    /// Closes what is idle, and past the cap what has been idle longest; call after each batch.
    pub(crate) fn sweep(&mut self) {
        let over_cap = self.open.len() > self.cap;
        let idle = self.idle_ms;
        match self.clock {
            Clock::Own => {
                if !self.due && !over_cap {
                    return;
                }
                self.due = false;
                let marks = &mut self.marks;
                self.done.extend(self.open.extract_if(|_, item| {
                    let at = marks
                        .get(item.stream() as usize)
                        .copied()
                        .flatten()
                        .map_or(i64::MIN, |m| m.at);
                    at.saturating_sub(item.last()) > idle
                }));
                for mark in marks.iter_mut().flatten() {
                    mark.swept = mark.at;
                }
            }
            Clock::Slowest
                if self
                    .marks
                    .iter()
                    .flatten()
                    .any(|m| m.live && m.until < i64::MAX) =>
            {
                // Some live streams end early: an item waits only for the live streams that
                // could still add to it, each at its own time.
                if !self.due && !over_cap {
                    return;
                }
                self.due = false;
                let live: Vec<Mark> = self
                    .marks
                    .iter()
                    .flatten()
                    .filter(|m| m.live)
                    .copied()
                    .collect();
                let all_at = self
                    .marks
                    .iter()
                    .flatten()
                    .map(|m| m.at)
                    .max()
                    .unwrap_or(i64::MIN);
                self.done.extend(self.open.extract_if(|_, item| {
                    let last = item.last();
                    let clock = live
                        .iter()
                        .filter(|m| m.until.saturating_add(idle) >= last)
                        .map(|m| m.at)
                        .min()
                        .unwrap_or(all_at);
                    clock.saturating_sub(last) > idle
                }));
                for mark in self.marks.iter_mut().flatten() {
                    mark.swept = mark.at;
                }
            }
            Clock::Slowest => {
                let clock = self.slowest();
                if !over_cap && clock.saturating_sub(self.swept) < self.step_ms {
                    return;
                }
                self.swept = clock;
                self.done.extend(
                    self.open
                        .extract_if(|_, item| clock.saturating_sub(item.last()) > idle),
                );
            }
        }
        self.evict();
    }

    /// Past the cap, closes the items idle longest down to nine tenths of it.
    fn evict(&mut self) {
        let keep = self.cap - self.cap / 10;
        let left = self.open.len();
        if left <= self.cap {
            return;
        }
        let mut by_age: Vec<i64> = self.open.values().map(|i| i.last()).collect();
        let excess = left - keep;
        // The excess-th oldest time: everything at or before it goes (ties may free a few more
        // than the excess, never fewer).
        let (_, &mut cut, _) = by_age.select_nth_unstable(excess - 1);
        self.done
            .extend(self.open.extract_if(|_, item| item.last() <= cut));
    }

    /// Closes every open item (end of input).
    pub(crate) fn close_all(&mut self) {
        self.done.extend(self.open.drain());
    }

    /// The items closed so far with their keys, once there are at least `min` of them.
    pub(crate) fn take(&mut self, min: usize) -> Option<Vec<(K, Box<I>)>> {
        (!self.done.is_empty() && self.done.len() >= min).then(|| std::mem::take(&mut self.done))
    }

    /// Per source file (by [`Names`] id), the offset of the first line an open or not yet
    /// taken item still needs: a checkpoint of that source must not move past it, or a replay
    /// after a crash would rebuild the item without its first lines.
    pub(crate) fn oldest_needed(&self) -> std::collections::BTreeMap<u32, i64> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.open.values().chain(self.done.iter().map(|(_, i)| i)) {
            let item: &I = item;
            for &(file, offset) in &item.lines().0 {
                out.entry(file)
                    .and_modify(|o: &mut i64| *o = (*o).min(offset))
                    .or_insert(offset);
            }
        }
        out
    }
}

/// Strings seen often (servers, files, connectors, event names), numbered; what an open item
/// holds instead of the strings.
#[derive(Debug, Default)]
pub(crate) struct Names {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Names {
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of a name seen before.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct T {
        stream: u32,
        last: i64,
        lines: Lines,
    }

    impl PartialEq for Lines {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    impl Item for T {
        fn stream(&self) -> u32 {
            self.stream
        }
        fn last(&self) -> i64 {
            self.last
        }
        fn lines(&self) -> &Lines {
            &self.lines
        }
    }

    fn add(w: &mut Window<u64, T>, key: u64, stream: u32, t: i64) {
        let item = w.entry(&key, || T {
            stream,
            last: t,
            lines: Lines::new(stream, key as i64),
        });
        item.last = item.last.max(t);
        w.advance(stream, t);
        w.sweep();
    }

    fn taken(w: &mut Window<u64, T>) -> Vec<i64> {
        let mut v: Vec<i64> = w
            .take(1)
            .unwrap_or_default()
            .iter()
            .map(|(_, t)| t.lines.0[0].1)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn own_clock_closes_what_its_own_stream_has_passed() {
        let mut w = Window::new(Clock::Own, 60_000, 100);
        add(&mut w, 1, 0, 0);
        add(&mut w, 2, 1, 0);
        // Stream 0 moves two minutes on; stream 1 does not.
        add(&mut w, 3, 0, 120_000);
        assert_eq!(taken(&mut w), [1]);
        assert_eq!(w.open_len(), 2);
        add(&mut w, 4, 1, 120_000);
        assert_eq!(taken(&mut w), [2]);
    }

    #[test]
    fn slowest_clock_waits_for_every_live_stream_and_not_for_ended_ones() {
        let mut w = Window::new(Clock::Slowest, 60_000, 100);
        add(&mut w, 1, 0, 0);
        add(&mut w, 2, 1, 0);
        add(&mut w, 3, 0, 600_000);
        // Stream 1 is still at 0: a message of stream 0 may yet get events from it.
        assert_eq!(taken(&mut w), Vec::<i64>::new());
        w.end_stream(1);
        add(&mut w, 4, 0, 650_000);
        assert_eq!(taken(&mut w), [1, 2]);
        assert_eq!(w.oldest_needed().into_iter().collect::<Vec<_>>(), [(0, 3)]);
    }

    #[test]
    fn a_stream_that_ends_early_holds_back_only_what_it_could_add_to() {
        let mut w = Window::new(Clock::Slowest, 60_000, 100);
        // Stream 0 reads the first stretch (until 1,000,000), stream 1 the next.
        w.set_until(0, 1_000_000);
        add(&mut w, 1, 0, 0);
        add(&mut w, 2, 1, 2_000_000);
        add(&mut w, 3, 1, 2_500_000);
        // Item 2 is idle on stream 1's clock; stream 0 (at 0) cannot add to it. Item 1 waits
        // for stream 0.
        assert_eq!(taken(&mut w), [2]);
        add(&mut w, 4, 0, 900_000);
        assert_eq!(taken(&mut w), [1]);
    }

    #[test]
    fn past_the_cap_the_idle_longest_close_first() {
        let mut w = Window::new(Clock::Slowest, 3_600_000, 10);
        for k in 0..25u64 {
            add(&mut w, k, 0, k as i64 * 1000);
            assert!(w.open_len() <= 10);
        }
        let early = taken(&mut w);
        assert!(!early.is_empty());
        // Closed early means oldest first: a prefix of the arrival order.
        assert_eq!(early, (0..early.len() as i64).collect::<Vec<_>>());
        w.close_all();
        assert_eq!(taken(&mut w).len() + early.len(), 25);
    }

    #[test]
    fn closed_items_leave_at_once_and_names_number_strings() {
        let mut w = Window::new(Clock::Own, 60_000, 100);
        add(&mut w, 7, 0, 0);
        w.close(&7u64);
        assert_eq!(w.open_len(), 0);
        assert_eq!(w.done_len(), 1);
        assert!(w.take(2).is_none(), "fewer than asked");
        assert_eq!(taken(&mut w), [7]);
        let mut n = Names::default();
        let (a, b) = (n.id("EX01"), n.id("EX02"));
        assert_eq!((n.id("EX01"), n.name(b), n.get("EX03")), (a, "EX02", None));
    }
}
