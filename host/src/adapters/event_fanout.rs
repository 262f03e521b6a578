//! In-process fan-out of a command's events to every local subscriber of its stream, shared
//! by both storage adapters.
//!
//! Each watched stream has one bounded broadcast channel carrying the stored events
//! themselves (`Arc`'d, so a thousand subscribers share one copy). The table is read only
//! to replay on subscribe, to catch up after a subscriber lagged past the channel, and once
//! per stream (not per subscriber) when another replica announced an event: the writer
//! never waits for a reader, and a subscriber never depends on a notice arriving, because
//! it notices gaps by sequence number and fills them from the table.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};

use crate::domain::CommandId;
use crate::ports::{DeliveredEvent, EventLog, EventSubscription, StoreError, StoredEvent};

/// Events buffered per watched stream. A subscriber further behind than this is told it
/// lagged and re-reads from the table, so the writer never waits.
pub const EVENT_FANOUT_CAPACITY: usize = 1024;

/// Events read from the table per query, for a subscriber's replay and a shared fetch.
pub const SUBSCRIPTION_PAGE: u32 = 256;

/// Reads up to [`SUBSCRIPTION_PAGE`] events of a stream after a sequence number. Built by
/// an adapter over its pool (not the store itself, which owns the hub: no reference cycle).
pub(crate) type FetchEvents = Arc<
    dyn Fn(CommandId, i64) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>>
        + Send
        + Sync,
>;

/// The watched streams of one store and the shared fetch for events from other replicas.
pub(crate) struct EventHub {
    streams: Mutex<HashMap<CommandId, Arc<Channel>>>,
    fetch: FetchEvents,
}

/// What a stream's channel carries.
#[derive(Clone)]
enum Message {
    Event(Arc<DeliveredEvent>),
    /// Events may have been missed: read the table from your last sequence number.
    Resync,
}

struct Channel {
    sender: broadcast::Sender<Message>,
    state: Mutex<ChannelState>,
}

#[derive(Default)]
struct ChannelState {
    /// Highest sequence number sent on the channel or deliberately skipped by the hub.
    cursor: i64,
    /// Highest sequence number another replica (or a resync) said exists.
    announced: i64,
    /// Appends of this stream by this process that have started and not yet published:
    /// a notice about them (the database echoes our own NOTIFY) needs no fetch.
    local_in_flight: usize,
    fetching: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections only update counters; a panic there leaves them usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventHub {
    /// `fetch` reads the table for the shared fetch of what other replicas appended.
    pub fn new(fetch: FetchEvents) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(HashMap::new()),
            fetch,
        })
    }

    fn channel(&self, stream: &CommandId) -> Option<Arc<Channel>> {
        lock(&self.streams).get(stream).cloned()
    }

    /// Called before an append's write, so that the database's echo of it is not fetched.
    pub fn begin_append(self: &Arc<Self>, stream: &CommandId) -> AppendGuard {
        let channel = self.channel(stream);
        if let Some(channel) = &channel {
            lock(&channel.state).local_in_flight += 1;
        }
        AppendGuard {
            hub: self.clone(),
            stream: stream.clone(),
            channel,
            published: false,
        }
    }

    /// Another replica (via NOTIFY) appended `seq`. Starts one fetch for all local
    /// subscribers of the stream; nothing when none watch it or it is already sent.
    pub fn remote_append(self: &Arc<Self>, stream: &CommandId, seq: i64) {
        let Some(channel) = self.channel(stream) else {
            return;
        };
        let mut state = lock(&channel.state);
        if state.cursor == 0 && state.local_in_flight == 0 {
            // Subscribers replay history themselves; the hub only needs what is new.
            state.cursor = seq - 1;
        }
        state.announced = state.announced.max(seq);
        self.maybe_fetch(&channel, stream, &mut state);
    }

    /// Notices may have been lost (a listener reconnected): every subscriber re-reads the
    /// table from where it is, since the hub cannot know what each one has seen.
    pub fn resync_all(&self) {
        let channels: Vec<_> = lock(&self.streams).values().cloned().collect();
        for channel in channels {
            let _ = channel.sender.send(Message::Resync);
        }
    }

    fn maybe_fetch(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        stream: &CommandId,
        state: &mut ChannelState,
    ) {
        if state.fetching || state.local_in_flight > 0 || state.announced <= state.cursor {
            return;
        }
        state.fetching = true;
        tokio::spawn(fetch_for_channel(
            self.fetch.clone(),
            channel.clone(),
            stream.clone(),
        ));
    }

    /// Registers a subscriber before it reads the table, so that no event falls between
    /// its replay and its first broadcast.
    fn tap(self: &Arc<Self>, stream: &CommandId) -> Tap {
        let mut streams = lock(&self.streams);
        let channel = match streams.entry(stream.clone()) {
            Entry::Occupied(entry) => entry.get().clone(),
            Entry::Vacant(entry) => entry
                .insert(Arc::new(Channel {
                    sender: broadcast::channel(EVENT_FANOUT_CAPACITY).0,
                    state: Mutex::new(ChannelState::default()),
                }))
                .clone(),
        };
        let receiver = channel.sender.subscribe();
        Tap {
            hub: self.clone(),
            stream: stream.clone(),
            channel,
            receiver,
        }
    }
}

/// Fetches what other replicas appended and sends it on the channel, until the announced
/// sequence number is reached or the table has nothing more.
async fn fetch_for_channel(fetch: FetchEvents, channel: Arc<Channel>, stream: CommandId) {
    loop {
        let after = lock(&channel.state).cursor;
        let page = fetch(stream.clone(), after).await;
        let mut state = lock(&channel.state);
        let events = match page {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%stream, %error, "fetching announced events failed");
                state.fetching = false;
                let _ = channel.sender.send(Message::Resync);
                return;
            }
        };
        let exhausted = events.len() < SUBSCRIPTION_PAGE as usize;
        for event in events {
            if event.seq > state.cursor {
                state.cursor = event.seq;
                let _ = channel
                    .sender
                    .send(Message::Event(DeliveredEvent::new(event)));
            }
        }
        if exhausted {
            state.announced = state.cursor;
        }
        if state.announced <= state.cursor || state.local_in_flight > 0 {
            state.fetching = false;
            return;
        }
    }
}

/// An append in progress; [`AppendGuard::publish`] hands the stored event to subscribers.
pub(crate) struct AppendGuard {
    hub: Arc<EventHub>,
    stream: CommandId,
    channel: Option<Arc<Channel>>,
    published: bool,
}

impl AppendGuard {
    /// Sends the committed event to every local subscriber. Never blocks: a full channel
    /// overwrites its oldest entry and the subscribers that missed it re-read the table.
    pub fn publish(mut self, event: &StoredEvent) {
        self.published = true;
        // A subscriber may have arrived during the write: look the stream up again.
        let Some(channel) = self.hub.channel(&self.stream) else {
            self.finish_in_flight();
            return;
        };
        {
            let mut state = lock(&channel.state);
            if event.seq > state.cursor {
                state.cursor = event.seq;
            }
            let _ = channel
                .sender
                .send(Message::Event(DeliveredEvent::new(event.clone())));
        }
        self.finish_in_flight();
    }

    fn finish_in_flight(&mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        let mut state = lock(&channel.state);
        state.local_in_flight = state.local_in_flight.saturating_sub(1);
        self.hub.maybe_fetch(&channel, &self.stream, &mut state);
    }
}

impl Drop for AppendGuard {
    fn drop(&mut self) {
        if !self.published {
            self.finish_in_flight();
        }
    }
}

/// A subscriber's receiver; the last one of a stream removes the stream's channel.
struct Tap {
    hub: Arc<EventHub>,
    stream: CommandId,
    channel: Arc<Channel>,
    receiver: broadcast::Receiver<Message>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut streams = lock(&self.hub.streams);
        // New taps subscribe under this lock, so the count cannot grow meanwhile; ours is
        // still counted until this value is dropped.
        if self.channel.sender.receiver_count() <= 1
            && streams
                .get(&self.stream)
                .is_some_and(|current| Arc::ptr_eq(current, &self.channel))
        {
            streams.remove(&self.stream);
        }
    }
}

struct Follow<L> {
    log: L,
    tap: Tap,
    last: i64,
    /// The table may hold events after `last` that the channel will not deliver.
    behind: bool,
    buffer: std::collections::VecDeque<Arc<DeliveredEvent>>,
    done: bool,
    poll: Duration,
    /// One timer per subscriber, re-armed only when it fires: arming one per received
    /// event would cost a timer-wheel update per event per subscriber.
    idle: Pin<Box<Sleep>>,
    heard: Instant,
}

/// The subscription both adapters return: replay from the table after `after`, then take
/// events from the stream's channel, in order and exactly once (by sequence number), going
/// back to the table after a gap, a lag or a resync; ends after the terminal event. After
/// `poll` without any message the subscriber checks the table too, in case one was lost.
pub(crate) fn follow<L>(
    log: L,
    hub: &Arc<EventHub>,
    stream: &CommandId,
    after: i64,
    poll: Duration,
) -> EventSubscription
where
    L: EventLog + 'static,
{
    // Timer arithmetic must not overflow; a safety re-read once a day is as good as never.
    let poll = poll.min(Duration::from_secs(24 * 3600));
    let state = Follow {
        log,
        tap: hub.tap(stream),
        last: after,
        behind: true,
        buffer: std::collections::VecDeque::new(),
        done: false,
        poll,
        idle: Box::pin(tokio::time::sleep(poll)),
        heard: Instant::now(),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(event) = s.buffer.pop_front() {
                if event.seq <= s.last {
                    continue;
                }
                s.last = event.seq;
                s.done = event.event.is_terminal();
                return Some((Ok(event), s));
            }
            if s.behind {
                match s.log.read(&s.tap.stream, s.last, SUBSCRIPTION_PAGE).await {
                    Err(error) => {
                        s.done = true;
                        return Some((Err(error), s));
                    }
                    Ok(events) => {
                        s.behind = events.len() >= SUBSCRIPTION_PAGE as usize;
                        s.buffer.extend(events.into_iter().map(DeliveredEvent::new));
                        continue;
                    }
                }
            }
            let received = tokio::select! {
                biased;
                message = s.tap.receiver.recv() => Some(message),
                () = s.idle.as_mut() => None,
            };
            let Some(message) = received else {
                let due = s.heard + s.poll;
                let now = Instant::now();
                if now >= due {
                    s.behind = true;
                    s.heard = now;
                    s.idle.as_mut().reset(now + s.poll);
                } else {
                    s.idle.as_mut().reset(due);
                }
                continue;
            };
            s.heard = Instant::now();
            match message {
                Ok(Message::Event(event)) if event.seq <= s.last => {}
                Ok(Message::Event(event)) if event.seq == s.last + 1 => {
                    s.buffer.push_back(event);
                }
                // A gap (appends published out of order), a lag or a resync: the table has
                // it all. `Closed` cannot happen while this tap holds the channel.
                Ok(_) | Err(_) => s.behind = true,
            }
        }
    })
    .boxed()
}
