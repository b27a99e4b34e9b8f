//! The agent's sink side: lanes, message correlation, and the keeper of checkpoints.
//!
//! - A **lane** is a thread that owns one instance of every configured sink (a [`FanOut`]) and
//!   takes writes from a bounded queue. Every series writes through one lane, always the same,
//!   so a source's batches reach each sink in order; several lanes let encoding use every core.
//!   A full queue makes the series wait: a slow sink slows reading, it never grows memory.
//! - The **messages** thread correlates the tracking rows of every server into `messages`,
//!   with sinks of its own.
//! - The **keeper** receives, for every write a sink acknowledged, the checkpoints that write
//!   made safe, and holds for each source the lowest offset both the series (its lines and
//!   sessions) and message correlation (its messages) allow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use mailflow_enrich::messages::{self, MessageCorrelator};
use mailflow_sinks::lake::Source;
use mailflow_sinks::sink::{Closed, Sink};
use tokio::sync::mpsc;

use super::Homes;
use super::metrics::Metrics;
use super::series::{Candidate, Tracked, Write};
use super::store::Entry;

/// What a lane is told.
#[derive(Debug)]
pub(crate) enum ToLane {
    Write(Write),
    /// Time passes: commit what has waited long enough.
    Tick,
}

/// Which side of a source's checkpoint a candidate moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Series,
    Messages,
}

/// Per source: how far each side allows a replay to start, and what the store records.
#[derive(Debug, Clone, Default)]
struct Held {
    entry: Entry,
    series: u64,
    /// `None` for files that are not message tracking logs.
    messages: Option<u64>,
    series_complete: bool,
}

/// The checkpoints as the sinks have acknowledged them.
#[derive(Debug, Default)]
pub(crate) struct Keeper {
    sources: BTreeMap<String, Held>,
    /// Changed since the last save.
    pub dirty: bool,
}

impl Keeper {
    /// A source the agent reads from `start_at` (what the store or the lake says).
    pub(crate) fn track(&mut self, fingerprint: &str, entry: Entry, tracking: bool) {
        let at = entry.offset;
        let held = self
            .sources
            .entry(fingerprint.to_string())
            .or_insert_with(|| Held {
                entry: entry.clone(),
                series: at,
                messages: None,
                series_complete: false,
            });
        held.entry.file = entry.file;
        if tracking && held.messages.is_none() {
            held.messages = Some(at);
        }
        self.dirty = true;
    }

    /// A source whose entry the store keeps as it was (finished before this start).
    pub(crate) fn keep(&mut self, fingerprint: &str, entry: Entry) {
        self.sources
            .entry(fingerprint.to_string())
            .or_insert_with(|| Held {
                series: entry.offset,
                messages: None,
                series_complete: entry.complete,
                entry,
            });
    }

    /// Forgets a source (its file is gone and was finished).
    pub(crate) fn forget(&mut self, fingerprint: &str) {
        if self.sources.remove(fingerprint).is_some() {
            self.dirty = true;
        }
    }

    fn apply(&mut self, side: Side, c: &Candidate) {
        let Some(h) = self.sources.get_mut(&c.fingerprint) else {
            return;
        };
        match side {
            Side::Series => {
                h.series = h.series.max(c.offset);
                h.series_complete |= c.complete;
                if let Some(d) = c.durable {
                    h.entry.durable = h.entry.durable.max(d);
                }
            }
            Side::Messages => {
                let m = h.messages.get_or_insert(c.offset);
                *m = (*m).max(c.offset);
            }
        }
        if c.log_time.is_some() {
            h.entry.log_time = h.entry.log_time.max(c.log_time);
        }
        let offset = h.messages.map_or(h.series, |m| m.min(h.series));
        h.entry.offset = h.entry.offset.max(offset);
        // Complete once its own side finished it and nothing holds it back.
        h.entry.complete = h.series_complete && offset >= h.series;
        self.dirty = true;
    }

    /// The entries to save.
    pub(crate) fn entries(&self) -> BTreeMap<String, Entry> {
        self.sources
            .iter()
            .map(|(k, h)| (k.clone(), h.entry.clone()))
            .collect()
    }

    /// The entry of a source, if tracked.
    pub(crate) fn get(&self, fingerprint: &str) -> Option<&Entry> {
        self.sources.get(fingerprint).map(|h| &h.entry)
    }
}

/// Writes waiting for their acknowledgement, with what they make safe.
#[derive(Debug, Default)]
struct Pending {
    queue: std::collections::VecDeque<(u64, Side, Vec<Candidate>)>,
    writes: u64,
}

impl Pending {
    fn push(&mut self, wrote: bool, side: Side, candidates: Vec<Candidate>) {
        if wrote {
            self.writes += 1;
        }
        self.queue.push_back((self.writes, side, candidates));
    }

    /// Hands the keeper what the sink's acknowledgements made safe.
    fn release(&mut self, acked: u64, keeper: &Mutex<Keeper>) {
        if self.queue.front().is_none_or(|(t, ..)| *t > acked) {
            return;
        }
        let mut k = keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.queue.front().is_some_and(|(t, ..)| *t <= acked) {
            if let Some((_, side, candidates)) = self.queue.pop_front() {
                for c in &candidates {
                    k.apply(side, c);
                }
            }
        }
    }
}

/// A lane: writes from its queue into its sinks until the queue closes; returns the files
/// the sinks committed.
pub(crate) fn lane(
    mut rx: mpsc::Receiver<ToLane>,
    mut sink: Box<dyn Sink>,
    (keeper, metrics): (&Mutex<Keeper>, &Metrics),
    homes: &Homes,
) -> Result<Closed> {
    let mut pending = Pending::default();
    let result = (|| -> Result<()> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                ToLane::Write(w) => {
                    let refs: Vec<(&str, &arrow_array::RecordBatch)> =
                        w.parts.iter().map(|(t, b)| (*t, b)).collect();
                    let source = Source {
                        fingerprint: &w.fingerprint,
                        file: &w.file,
                        end_offset: w.end_offset,
                    };
                    sink.write(&source, &refs)?;
                    for (t, b) in &w.parts {
                        metrics.rows_out(t, b.num_rows() as u64);
                    }
                    pending.push(true, Side::Series, w.candidates);
                    homes.send(w.home, w.parts.into_iter().map(|(_, b)| b).collect());
                }
                ToLane::Tick => sink.tick()?,
            }
            pending.release(sink.acked(), keeper);
        }
        Ok(())
    })();
    close(result, sink, &mut pending, keeper)
}

/// The end of a sink thread: on success everything is flushed, what that made safe handed to
/// the keeper, and the sink closed; after an error nothing more is committed.
fn close(
    result: Result<()>,
    mut sink: Box<dyn Sink>,
    pending: &mut Pending,
    keeper: &Mutex<Keeper>,
) -> Result<Closed> {
    let flushed = result.and_then(|()| Ok(sink.flush()?));
    match flushed {
        Ok(()) => {
            pending.release(sink.acked(), keeper);
            Ok(sink.close()?)
        }
        Err(e) => {
            sink.abort();
            Err(e)
        }
    }
}

/// What the messages thread is told.
#[derive(Debug)]
pub(crate) enum ToMessages {
    Tracked(Tracked),
    /// A tracking series will add events from this log time on.
    Expect(Arc<str>, i64),
    Tick,
    /// The input ends (`--until-idle`): every open message is written.
    End,
}

/// How often, between writes, message correlation tells the keeper how far its sources are safe.
const NEEDED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Correlates the tracking rows of every series into `messages`; returns the files committed.
pub(crate) fn messages_thread(
    mut rx: mpsc::Receiver<ToMessages>,
    mut sink: Box<dyn Sink>,
    (keeper, metrics): (&Mutex<Keeper>, &Metrics),
    homes: &Homes,
) -> Result<Closed> {
    let mut correlator = MessageCorrelator::new(crate::ingest::MESSAGE_IDLE);
    let mut pending = Pending::default();
    // Per tracking source: its file name, how far its rows have been added, and whether it is
    // finished.
    let mut reached: HashMap<String, (String, u64, bool)> = HashMap::new();
    let mut last: Option<(String, String)> = None;
    let mut last_needed = std::time::Instant::now();
    let result = (|| -> Result<()> {
        while let Some(msg) = rx.blocking_recv() {
            let mut ended = false;
            // Closed messages are written in batches of thousands while rows stream in (small
            // batches cost the lake memory and files), and every second whatever closed.
            let mut min = 4096;
            match msg {
                ToMessages::Tick => {
                    sink.tick()?;
                    min = 1;
                }
                ToMessages::Expect(stream, start) => {
                    correlator.expect_stream(&stream, start);
                    continue;
                }
                ToMessages::Tracked(t) => {
                    if let Some(b) = t.batch {
                        correlator.add_from(&t.stream, &b);
                        homes.send(t.home, vec![b]);
                    }
                    let e = reached
                        .entry(t.fingerprint.clone())
                        .or_insert_with(|| (t.file.clone(), 0, false));
                    e.1 = e.1.max(t.end_offset);
                    e.2 |= t.complete;
                    last = Some((t.fingerprint, t.file));
                }
                ToMessages::End => ended = true,
            }
            let batch = if ended {
                correlator.finish()?
            } else {
                correlator.take(min)?
            };
            let wrote = match (batch, &last) {
                (Some(b), Some((fingerprint, file))) => {
                    metrics.rows_out(messages::TABLE, b.num_rows() as u64);
                    // end_offset 0: these rows say nothing of which lines the lake holds.
                    let source = Source {
                        fingerprint,
                        file,
                        end_offset: 0,
                    };
                    sink.write(&source, &[(messages::TABLE, &b)])?;
                    true
                }
                _ => false,
            };
            metrics.set_open_messages(correlator.open_messages() as u64);
            // What open messages still need is a walk over all of them: taken with each write
            // and at most once a second besides, not after every batch (a backfill's tracking
            // batches come by the thousand, and the walk was 1.7% of its CPU).
            if !(ended || wrote || last_needed.elapsed() >= NEEDED_EVERY) {
                pending.release(sink.acked(), keeper);
                continue;
            }
            last_needed = std::time::Instant::now();
            let candidates = messages_safe(&correlator, &mut reached);
            pending.push(wrote, Side::Messages, candidates);
            pending.release(sink.acked(), keeper);
        }
        // Stopped without an end (a signal): what the last second added is safe too.
        let candidates = messages_safe(&correlator, &mut reached);
        pending.push(false, Side::Messages, candidates);
        Ok(())
    })();
    close(result, sink, &mut pending, keeper)
}

/// Per tracking source, how far a replay may start for message correlation: where its rows
/// have been added, or the first line an open message still needs. Finished sources nothing
/// needs any more are forgotten.
fn messages_safe(
    correlator: &MessageCorrelator,
    reached: &mut HashMap<String, (String, u64, bool)>,
) -> Vec<Candidate> {
    let needed = correlator.oldest_needed();
    let mut candidates = Vec::with_capacity(reached.len());
    reached.retain(|fingerprint, (name, end, complete)| {
        let offset = needed
            .get(name.as_str())
            .map_or(*end, |&o| (*end).min(u64::try_from(o).unwrap_or(0)));
        candidates.push(Candidate {
            fingerprint: fingerprint.clone(),
            offset,
            durable: None,
            log_time: None,
            complete: *complete,
        });
        // A finished file nothing needs any more has had its last say.
        !(*complete && offset >= *end)
    });
    candidates
}
