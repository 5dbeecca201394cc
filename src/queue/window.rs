//! What of a queue's backlog is in memory and what stays in storage (issue 18: backlogs larger
//! than memory).
//!
//! A queue's actor holds in memory every message it must track at once: in flight, delayed,
//! kept for rewind, tombstones, and a **window** of its visible messages, the next ones in
//! delivery order (id order). Visible messages past the window are **spilled**: stored, not in
//! memory, counted here (how many, their bytes) so the queue's counters and byte quota stay
//! exact. Once the window runs low, the next slice of stored messages is read in id order, off
//! the async workers, and taken in.
//!
//! The rule that keeps delivery in order: `end` is the id where the window ends. Every live
//! stored message with an id at or below it is in memory; every live stored message above it
//! that memory does not hold is spilled, and visible. A receive takes only visible messages at
//! or below `end` while anything is spilled (one above may be in memory, a delayed message
//! that came due: the spilled ones before it are older, and come first).
//!
//! What memory holds above `end` (delayed sends, in-flight messages from recovery, adopted
//! ones) is remembered in `known`, so a slice read skips those rows whatever they became since
//! (deleted, moved) until `end` passes them. Sends that land while a slice is being read are
//! remembered too (`arrivals`): the slice's snapshot may predate their commit, and once `end`
//! moves past them they must be in memory.
//!
//! Two bounds: the window of one queue (`--queue-window`), and all queues' windows together
//! (`--total-window`), shared through a [`WindowBudget`]. A queue whose window is full sends
//! new visible messages to storage only.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::clock::Millis;
use crate::storage::{Storage, StorageError, StoredMessage, StoredState};

use super::messages::MessageTable;

/// The default of `--queue-window`: visible messages one queue keeps in memory.
pub const DEFAULT_QUEUE_WINDOW: usize = 10_000;
/// The default of `--total-window`: visible messages all queues keep in memory together.
pub const DEFAULT_TOTAL_WINDOW: usize = 1_000_000;
/// A queue with nothing to deliver reads at least this many (or its window, if smaller) even
/// when the total budget is spent, so that no queue starves: the total may be exceeded by this
/// much per queue reading.
const MIN_SLICE: usize = 64;
/// After a failed slice read, the next one waits this long.
const RETRY_MS: Millis = 1_000;

/// The visible messages every queue's window holds together, against `--total-window`.
#[derive(Debug)]
pub struct WindowBudget {
    limit: usize,
    used: AtomicUsize,
}

impl WindowBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The bounds a queue's window works under.
#[derive(Debug, Clone)]
pub struct WindowLimits {
    /// Visible messages this queue keeps in memory, at most (at least 1).
    pub per_queue: usize,
    pub budget: Arc<WindowBudget>,
}

impl WindowLimits {
    pub fn new(per_queue: usize, budget: Arc<WindowBudget>) -> Self {
        Self {
            per_queue: per_queue.max(1),
            budget,
        }
    }

    /// No window: every message in memory (tests of other things, cluster takeovers).
    pub fn unbounded() -> Self {
        Self::new(usize::MAX, Arc::new(WindowBudget::unbounded()))
    }

    /// The window runs low below this: a slice read starts.
    fn low_water(&self) -> usize {
        (self.per_queue / 2).max(1)
    }
}

impl Default for WindowLimits {
    fn default() -> Self {
        Self::unbounded()
    }
}

/// A slice to read: the live messages after `after_id`, `limit + 1` of them (the one past the
/// limit only tells the oldest spilled message's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceRequest {
    pub after_id: u64,
    pub limit: usize,
}

/// A visible message sent to storage only while a slice read was under way.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    id: u64,
    enqueue_ms: Millis,
    size: u32,
}

#[derive(Debug, Default)]
pub struct Window {
    limits: WindowLimits,
    /// Visible messages stored and not in memory, and their bytes.
    spilled: u64,
    spilled_bytes: u64,
    /// Where the window ends (see the module's docs); None while nothing is spilled.
    end: Option<u64>,
    /// Ids above `end` that memory holds or held: a slice skips them.
    known: BTreeSet<u64>,
    /// Enqueue time of the oldest spilled message, when known.
    first_spilled_ms: Option<Millis>,
    /// A slice read under way, with the spilled sends that landed since it started.
    reading: Option<Vec<Arrival>>,
    /// No read before this (a read failed).
    retry_at_ms: Millis,
    /// The visible messages in memory as the budget counts them.
    settled: usize,
    /// Rows slices brought in beyond what `spilled` counted, and their bytes: messages moved
    /// here (dead-lettered, redriven) whose row a slice's snapshot saw before their adoption
    /// reached the actor. Their adoptions settle them (see [`Window::adopted_after_load`]).
    owed: u64,
    owed_bytes: u64,
    /// 1 while `spilled` holds a count storage showed but the arithmetic had used up (see
    /// `finish_read`), until an adoption makes it true.
    mended: u64,
}

impl Window {
    pub fn new(limits: WindowLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// `--queue-window`.
    pub fn per_queue(&self) -> usize {
        self.limits.per_queue
    }

    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    pub fn end(&self) -> Option<u64> {
        self.end
    }

    pub fn first_spilled_ms(&self) -> Option<Millis> {
        self.first_spilled_ms.filter(|_| self.spilled > 0)
    }

    /// Whether a receive may take the visible message `id` now.
    pub fn claimable(&self, id: u64) -> bool {
        self.end.is_none_or(|end| id <= end)
    }

    /// Whether a new visible message `id` goes to storage only, with `in_memory` visible
    /// messages held.
    pub fn spills(&self, id: u64, in_memory: u64) -> bool {
        match self.end {
            Some(end) => id > end,
            None => in_memory >= self.limits.per_queue as u64 || self.limits.budget.room() == 0,
        }
    }

    /// Counts a visible message sent to storage only. `held_above` are the ids above `id - 1`
    /// memory holds, needed when this starts the spill (it sets `end`).
    pub fn spill(
        &mut self,
        id: u64,
        enqueue_ms: Millis,
        size: u32,
        held_above: impl Iterator<Item = u64>,
    ) {
        if self.end.is_none() {
            let end = id.saturating_sub(1);
            self.end = Some(end);
            self.known.extend(held_above.filter(|&held| held > end));
        }
        if self.spilled == 0 {
            self.first_spilled_ms = Some(enqueue_ms);
        }
        self.spilled += 1;
        self.spilled_bytes += u64::from(size);
        if let Some(arrivals) = &mut self.reading {
            arrivals.push(Arrival {
                id,
                enqueue_ms,
                size,
            });
        }
    }

    /// Memory now holds `id` (in any state).
    pub fn note(&mut self, id: u64) {
        if let Some(end) = self.end
            && id > end
        {
            self.known.insert(id);
        }
    }

    /// Whether receives must wait for a slice: something is spilled, nothing is claimable
    /// (`has_claimable`), and a read is under way or may start.
    pub fn must_wait(&self, has_claimable: bool, now: Millis) -> bool {
        self.spilled > 0 && !has_claimable && (self.reading.is_some() || now >= self.retry_at_ms)
    }

    /// The slice to read now, if the window runs low (`in_memory` visible messages, whether
    /// any is claimable); marks the read as under way.
    pub fn start_read(
        &mut self,
        in_memory: u64,
        has_claimable: bool,
        now: Millis,
    ) -> Option<SliceRequest> {
        if self.spilled == 0 || self.reading.is_some() || now < self.retry_at_ms {
            return None;
        }
        let in_memory = usize::try_from(in_memory).unwrap_or(usize::MAX);
        if has_claimable && in_memory >= self.limits.low_water() {
            return None;
        }
        let want = self.limits.per_queue.saturating_sub(in_memory).max(1);
        let floor = MIN_SLICE.min(self.limits.per_queue);
        let limit = want.min(self.limits.budget.room().max(floor)).max(1);
        let after_id = self.end?;
        self.reading = Some(Vec::new());
        Some(SliceRequest { after_id, limit })
    }

    /// The slice to read now whatever the window holds (a purge or a peek going through the
    /// backlog), unless nothing is spilled or a read is under way.
    pub fn start_read_now(&mut self, limit: usize) -> Option<SliceRequest> {
        if self.spilled == 0 || self.reading.is_some() {
            return None;
        }
        let after_id = self.end?;
        self.reading = Some(Vec::new());
        Some(SliceRequest {
            after_id,
            limit: limit.max(1),
        })
    }

    /// Whether memory holds or held `id`, above the window's end (a peek past the window skips
    /// it, as a slice would).
    pub fn is_known(&self, id: u64) -> bool {
        self.known.contains(&id)
    }

    /// A slice read failed: the next waits a moment.
    pub fn read_failed(&mut self, now: Millis) {
        self.reading = None;
        self.retry_at_ms = now + RETRY_MS;
    }

    /// Takes in a slice read for `request` (up to `limit + 1` live rows after its id): returns
    /// the messages memory is to hold now, in id order. `held` tells the ids memory has or is
    /// committing (whose rows the slice must not bring in again).
    pub fn finish_read(
        &mut self,
        request: SliceRequest,
        mut rows: Vec<StoredMessage>,
        held: impl Fn(u64) -> bool,
    ) -> Vec<StoredMessage> {
        let arrivals = self.reading.take().unwrap_or_default();
        let complete = rows.len() <= request.limit;
        let extra = if complete { None } else { rows.pop() };
        rows.truncate(request.limit);
        let new_end = if complete {
            None
        } else {
            rows.last().map(|row| row.id)
        };
        let seen: HashSet<u64> = rows.iter().map(|row| row.id).collect();
        let mut load: Vec<StoredMessage> = rows
            .into_iter()
            .filter(|row| {
                row.state == StoredState::Live && !self.known.contains(&row.id) && !held(row.id)
            })
            .collect();
        for arrival in arrivals {
            if new_end.is_none_or(|end| arrival.id <= end)
                && !seen.contains(&arrival.id)
                && !held(arrival.id)
            {
                load.push(StoredMessage {
                    id: arrival.id,
                    enqueue_ms: arrival.enqueue_ms,
                    visible_at_ms: arrival.enqueue_ms,
                    dequeue_count: 0,
                    first_dequeue_ms: 0,
                    receipt_nonce: 0,
                    state: StoredState::Live,
                    size: arrival.size,
                });
            }
        }
        load.sort_by_key(|row| row.id);
        let bytes: u64 = load.iter().map(|row| u64::from(row.size)).sum();
        let loaded = load.len() as u64;
        // More loaded than counted: rows moved here whose adoption is still on its way.
        self.owed += loaded.saturating_sub(self.spilled);
        self.owed_bytes += bytes.saturating_sub(self.spilled_bytes);
        self.spilled = self.spilled.saturating_sub(loaded);
        self.spilled_bytes = self.spilled_bytes.saturating_sub(bytes);
        match new_end {
            Some(end) => {
                if self.spilled == 0 {
                    // Storage has more past this slice (`extra`) than the count says: moves
                    // whose adoptions have not arrived. Keep reading, or those rows would be
                    // stranded past the end; the count is mended as the adoptions arrive.
                    self.spilled = 1;
                    self.mended = 1;
                }
                self.end = Some(end);
                self.known = self.known.split_off(&end.saturating_add(1));
                self.first_spilled_ms = extra.map(|row| row.enqueue_ms);
            }
            None => {
                if self.spilled > 0 || self.spilled_bytes > 0 {
                    // Storage has nothing more: the count was off. Memory is right from now on.
                    tracing::warn!(
                        spilled = self.spilled,
                        "a queue's window counted spilled messages its storage does not have"
                    );
                }
                self.spilled = 0;
                self.spilled_bytes = 0;
                self.mended = 0;
                self.end = None;
                self.known.clear();
                self.first_spilled_ms = None;
            }
        }
        load
    }

    /// A message moved here (`size` bytes) whose adoption found it in memory already: a slice
    /// read its row first, and took one off `spilled` that `spilled` never counted (a move is
    /// not a spill). Gives it back, unless the slice's arithmetic owed it already.
    pub fn adopted_after_load(&mut self, size: u32) {
        let size = u64::from(size);
        if self.mended > 0 {
            self.mended -= 1;
        } else if self.owed > 0 {
            self.owed -= 1;
        } else if self.end.is_some() {
            self.spilled += 1;
        }
        let from_owed = self.owed_bytes.min(size);
        self.owed_bytes -= from_owed;
        if self.end.is_some() {
            self.spilled_bytes += size - from_owed;
        }
    }

    /// How much the budget's count must change to match `in_memory` visible messages.
    pub fn settle(&mut self, in_memory: u64) {
        let in_memory = usize::try_from(in_memory).unwrap_or(usize::MAX);
        let budget = &self.limits.budget;
        if in_memory > self.settled {
            budget
                .used
                .fetch_add(in_memory - self.settled, Ordering::Relaxed);
        } else if in_memory < self.settled {
            budget
                .used
                .fetch_sub(self.settled - in_memory, Ordering::Relaxed);
        }
        self.settled = in_memory;
    }

    /// Gives the budget back (the queue is gone).
    pub fn release(&mut self) {
        self.settle(0);
    }

    /// Recovery found `spilled` visible messages past `end`.
    fn recovered(
        &mut self,
        end: u64,
        spilled: u64,
        spilled_bytes: u64,
        first_spilled_ms: Millis,
        held: impl Iterator<Item = u64>,
    ) {
        self.end = Some(end);
        self.spilled = spilled;
        self.spilled_bytes = spilled_bytes;
        self.first_spilled_ms = Some(first_spilled_ms);
        self.known.extend(held.filter(|&id| id > end));
    }
}

/// Rows read per query while recovery looks for a window's visible messages.
const RECOVERY_PAGE: usize = 4_096;

/// Recovers one queue's table: what memory holds whatever the backlog (in flight, delayed,
/// kept, tombstones), the window of its oldest visible messages, and the counts of the rest
/// from the index. Its time does not grow with the backlog. Blocking: call it off the async
/// workers.
pub fn recover(
    storage: &dyn Storage,
    queue_id: u64,
    now: Millis,
    limits: WindowLimits,
) -> Result<MessageTable, StorageError> {
    let totals = storage.count_live(queue_id)?;
    let held = storage.read_held(queue_id, now)?;
    let mut table = MessageTable::with_window(queue_id, limits.clone());
    let mut held_ids = HashSet::with_capacity(held.len());
    let (mut hidden, mut hidden_bytes) = (0u64, 0u64);
    for message in &held {
        held_ids.insert(message.id);
        if message.state == StoredState::Live {
            hidden += 1;
            hidden_bytes += u64::from(message.size);
        }
        table.recover(message, now);
    }
    let visible = totals.count.saturating_sub(hidden);
    let visible_bytes = totals.bytes.saturating_sub(hidden_bytes);
    let window = limits
        .per_queue
        .min(limits.budget.room().max(MIN_SLICE.min(limits.per_queue)))
        .max(1);
    let (mut loaded, mut loaded_bytes, mut last) = (0u64, 0u64, 0u64);
    let mut first_spilled = None;
    let mut after = 0;
    'pages: loop {
        let rows =
            storage.read_messages(queue_id, after, RECOVERY_PAGE.min(window.saturating_add(1)))?;
        let page_full = rows.len() == RECOVERY_PAGE.min(window.saturating_add(1));
        for row in rows {
            after = row.id;
            if held_ids.contains(&row.id) {
                continue;
            }
            if loaded as usize >= window {
                first_spilled = Some(row.enqueue_ms);
                break 'pages;
            }
            table.recover(&row, now);
            loaded += 1;
            loaded_bytes += u64::from(row.size);
            last = row.id;
        }
        if !page_full {
            break;
        }
    }
    if let Some(first_spilled_ms) = first_spilled {
        table.window_mut().recovered(
            last,
            visible.saturating_sub(loaded),
            visible_bytes.saturating_sub(loaded_bytes),
            first_spilled_ms,
            held_ids.into_iter(),
        );
    }
    table.settle_window();
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_queue: usize, total: usize) -> WindowLimits {
        WindowLimits::new(per_queue, Arc::new(WindowBudget::new(total)))
    }

    fn row(id: u64) -> StoredMessage {
        StoredMessage {
            id,
            enqueue_ms: id as Millis * 10,
            visible_at_ms: id as Millis * 10,
            dequeue_count: 0,
            first_dequeue_ms: 0,
            receipt_nonce: 0,
            state: StoredState::Live,
            size: 3,
        }
    }

    #[test]
    fn spills_past_the_window_and_counts_what_it_spilled() {
        let mut window = Window::new(limits(2, 100));
        assert!(!window.spills(1, 0));
        assert!(!window.spills(2, 1));
        assert!(window.spills(3, 2));
        window.spill(3, 30, 3, [5u64].into_iter());
        assert_eq!(window.end(), Some(2));
        assert_eq!((window.spilled(), window.spilled_bytes()), (1, 3));
        assert_eq!(window.first_spilled_ms(), Some(30));
        // Past the end, everything spills, even with room in memory.
        assert!(window.spills(4, 0));
        // Below it (a publish's copy with an older id landing late), memory takes it.
        assert!(!window.spills(2, 5));
        assert!(window.claimable(2));
        assert!(!window.claimable(3));
        // Id 5 was in memory above the new end: a slice skips it.
        let request = window.start_read(0, false, 0).expect("a read");
        assert_eq!(request.after_id, 2);
        let load = window.finish_read(request, vec![row(3), row(5)], |_| false);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(window.spilled(), 0);
        assert_eq!(window.end(), None);
    }

    #[test]
    fn a_read_waits_for_the_window_to_run_low() {
        let mut window = Window::new(limits(4, 100));
        window.spill(9, 90, 1, std::iter::empty());
        assert_eq!(window.start_read(3, true, 0), None);
        assert!(!window.must_wait(true, 0));
        assert!(window.must_wait(false, 0));
        let request = window.start_read(1, true, 0).expect("low water");
        assert_eq!(
            request,
            SliceRequest {
                after_id: 8,
                limit: 3
            }
        );
        assert_eq!(window.start_read(0, false, 0), None, "one read at a time");
        window.read_failed(5);
        assert!(!window.must_wait(false, 6), "not while failing");
        assert_eq!(window.start_read(0, false, 6), None);
        assert!(window.start_read(0, false, 5 + RETRY_MS).is_some());
    }

    #[test]
    fn a_full_slice_moves_the_end_and_keeps_the_rest_spilled() {
        let mut window = Window::new(limits(2, 100));
        for id in 3..=7 {
            window.spill(id, id as Millis * 10, 3, std::iter::empty());
        }
        let request = window.start_read(0, false, 0).expect("read");
        assert_eq!(request.limit, 2);
        let load = window.finish_read(request, vec![row(3), row(4), row(5)], |_| false);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(window.end(), Some(4));
        assert_eq!((window.spilled(), window.spilled_bytes()), (3, 9));
        assert_eq!(window.first_spilled_ms(), Some(50));
    }

    /// A send that lands while a slice is read, and that the slice's snapshot missed, is
    /// taken in once the end moves past it; one the slice saw is not taken twice.
    #[test]
    fn sends_landing_during_a_read_are_not_lost() {
        let mut window = Window::new(limits(2, 100));
        window.spill(3, 30, 3, std::iter::empty());
        let request = window.start_read(0, false, 0).expect("read");
        window.spill(4, 40, 3, std::iter::empty());
        window.spill(5, 50, 3, std::iter::empty());
        // The snapshot has 3 and 5 (5's commit came first) but not 4.
        let load = window.finish_read(request, vec![row(3), row(5)], |_| false);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(window.spilled(), 0);
        assert_eq!(window.end(), None);
    }

    /// A moved message (a dead-letter move, a redrive) whose row a slice reads before its
    /// adoption arrives: the rows past the slice are not stranded, and once the adoption comes
    /// the count is what storage holds.
    #[test]
    fn a_move_read_by_a_slice_before_its_adoption_strands_nothing() {
        let mut window = Window::new(limits(3, 100));
        for id in [3, 5, 6] {
            window.spill(id, id as Millis * 10, 3, std::iter::empty());
        }
        let request = window.start_read(0, false, 0).expect("read");
        assert_eq!(request.limit, 3);
        // Row 4 was moved here meanwhile: the snapshot has 3, 4, 5 and (past the limit) 6.
        let load = window.finish_read(request, vec![row(3), row(4), row(5), row(6)], |_| false);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(window.end(), Some(5));
        assert_eq!(window.spilled(), 1, "row 6 is still to read");
        window.adopted_after_load(3);
        assert_eq!(window.spilled(), 1, "only row 6 is spilled");
        let request = window.start_read(0, false, 0).expect("row 6 is read");
        let load = window.finish_read(request, vec![row(6)], |_| false);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![6]);
        assert_eq!((window.spilled(), window.end()), (0, None));

        // The same with more spilled than one slice: the adoption gives back what the slice
        // took off for the moved row.
        let mut window = Window::new(limits(2, 100));
        for id in [3, 5, 6, 7] {
            window.spill(id, id as Millis * 10, 3, std::iter::empty());
        }
        let request = window.start_read(0, false, 0).expect("read");
        let load = window.finish_read(request, vec![row(3), row(4), row(5)], |_| false);
        assert_eq!(load.len(), 2);
        assert_eq!(window.spilled(), 2);
        window.adopted_after_load(3);
        assert_eq!(
            (window.spilled(), window.spilled_bytes()),
            (3, 9),
            "5, 6 and 7"
        );

        // And when the slice takes everything: the count owes the moved row, and the adoption
        // settles that rather than counting a row that is in memory.
        let mut window = Window::new(limits(4, 100));
        window.spill(3, 30, 3, std::iter::empty());
        let request = window.start_read(0, false, 0).expect("read");
        let load = window.finish_read(request, vec![row(3), row(4)], |_| false);
        assert_eq!(load.len(), 2);
        window.spill(9, 90, 3, std::iter::empty());
        window.adopted_after_load(3);
        assert_eq!((window.spilled(), window.spilled_bytes()), (1, 3), "only 9");
    }

    /// A row whose send is still being committed is not taken from a slice: the send's
    /// completion puts it in memory (its id is below the end by then).
    #[test]
    fn rows_of_sends_being_committed_are_left_to_their_completion() {
        let mut window = Window::new(limits(2, 100));
        window.spill(4, 40, 3, std::iter::empty());
        window.spill(6, 60, 3, std::iter::empty());
        let request = window.start_read(0, false, 0).expect("read");
        assert_eq!(
            request,
            SliceRequest {
                after_id: 3,
                limit: 2
            }
        );
        // 5 is committed but its send has not heard so yet (it is not counted as spilled).
        let load = window.finish_read(request, vec![row(4), row(5), row(6)], |id| id == 5);
        assert_eq!(load.iter().map(|m| m.id).collect::<Vec<_>>(), vec![4]);
        assert_eq!(window.end(), Some(5));
        assert!(!window.spills(5, 9), "its completion puts it in memory");
        assert_eq!(window.spilled(), 1);
    }

    /// The table with a window of 2: the third visible message spills, counts stay exact,
    /// a receive stops at the window's end, and a slice brings the rest in order.
    #[test]
    fn a_table_spills_past_its_window_and_takes_slices_in_order() {
        let mut table = MessageTable::with_window(1, limits(2, 100));
        for id in 1..=5 {
            table.insert(id, id as Millis, id as Millis, 10, 3);
        }
        // A delayed one is held whatever the window.
        assert!(table.insert(6, 6, 1_000, 10, 3));
        let counts = table.counts();
        assert_eq!((counts.visible, counts.delayed, counts.bytes), (5, 1, 18));
        assert_eq!(table.visible_in_memory(), 2);
        assert_eq!(table.oldest_live_enqueue_ms(), Some(1));
        let mut nonce = 0;
        let claimed = table.claim(16, 10, 30_000, || {
            nonce += 1;
            nonce
        });
        assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!table.has_visible());
        assert!(table.must_wait_for_window(10));
        let request = table
            .window_mut()
            .start_read(0, false, 10)
            .expect("a slice");
        assert_eq!(request.after_id, 2);
        let load = table
            .window_mut()
            .finish_read(request, vec![row(3), row(4), row(5)], |_| false);
        table.take_slice(&load, 100);
        assert_eq!(table.visible_ids().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(table.counts().visible, 3);
        assert_eq!(table.window().spilled(), 1);
        // The delayed message (id 6) comes due past the window's end: it waits for 5.
        table.advance(1_000, 3_600_000);
        assert_eq!(table.visible_ids().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(table.counts().visible, 4);
    }

    #[test]
    fn the_budget_counts_every_window() {
        let budget = Arc::new(WindowBudget::new(3));
        let mut one = Window::new(WindowLimits::new(10, budget.clone()));
        let mut two = Window::new(WindowLimits::new(10, budget.clone()));
        one.settle(2);
        two.settle(1);
        assert_eq!(budget.used(), 3);
        assert!(one.spills(10, 2), "the total is reached");
        one.settle(0);
        assert!(!two.spills(10, 1));
        two.release();
        assert_eq!(budget.used(), 0);
    }
}
