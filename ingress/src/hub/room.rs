//! One room's hub: the actor that orders live delivery to local sockets.

use super::{Ctl, HubContext, SubOp};
use crate::hops::Stamp;
use crate::outbound::{Out, Replay, SocketHandle, message_frame};
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use chat_core::live;
use chat_core::protocol::{ErrorCode, Message, ServerFrame, Since};
use chat_core::scripts::JoinRequest;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Most messages read from the stream per heal/resync step.
const HEAL_BATCH: u64 = 1000;

struct Sub {
    socket: SocketHandle,
    /// False once the socket's reader left the room.
    joined: Arc<AtomicBool>,
    /// Last offset written to this socket in the hub's epoch.
    cursor: u64,
}

pub(super) struct RoomHub {
    room: Arc<str>,
    id: u64,
    ctx: Arc<HubContext>,
    subscribed: bool,
    epoch: Option<String>,
    /// Last offset delivered in `epoch`.
    last: u64,
    subs: Vec<Sub>,
    resync_flag: Arc<AtomicBool>,
    /// A heal or resync failed (Redis unreachable): retry on a timer.
    resync_pending: bool,
    /// The room was deleted: its sockets leave once the notice is delivered.
    closing: Option<Closing>,
    /// Banned users: their sockets leave once the ban's notice is
    /// delivered (so they read why), or after `DELETE_WAIT` at the latest.
    evicting: Vec<Evicting>,
}

struct Evicting {
    user: String,
    upto: u64,
    epoch: String,
    by: tokio::time::Instant,
}

/// A deletion in progress on this node.
struct Closing {
    /// The deletion notice, in `epoch`.
    upto: u64,
    epoch: String,
    /// The sockets joined when the deletion arrived; later joins are to
    /// the room started afresh and stay.
    sockets: Vec<u64>,
}

/// How long a deleted room's hub waits for its last message.
const DELETE_WAIT: Duration = Duration::from_secs(5);

impl RoomHub {
    pub(super) fn new(
        room: Arc<str>,
        id: u64,
        ctx: Arc<HubContext>,
        resync_flag: Arc<AtomicBool>,
    ) -> Self {
        Self {
            room,
            id,
            ctx,
            subscribed: false,
            epoch: None,
            last: 0,
            subs: Vec::new(),
            resync_flag,
            resync_pending: false,
            closing: None,
            evicting: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        mut live: mpsc::Receiver<Bytes>,
    ) {
        self.subscribe().await;
        // One interval for the whole life of the hub: a sleep rebuilt on every
        // turn would never fire while typing or presence events keep arriving.
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A deleted room's wait for its notice: one timer for the hub's life,
        // armed by the deletion (not a new sleep per live message).
        let delete_wait = tokio::time::sleep(DELETE_WAIT);
        tokio::pin!(delete_wait);
        // Pending evictions' deadline check (only polled while there are some).
        let mut evict_tick = tokio::time::interval(Duration::from_millis(250));
        evict_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                c = ctl.recv() => match c {
                    Some(Ctl::Join { socket, joined, since, reference, reply }) => {
                        self.join(socket, joined, since, reference, reply).await;
                    }
                    Some(Ctl::Leave { socket_id }) => self.subs.retain(|s| s.socket.id != socket_id),
                    Some(Ctl::Resync) => {
                        self.resync_flag.store(false, Ordering::Release);
                        self.resync().await;
                    }
                    Some(Ctl::Delete { upto, epoch }) => {
                        self.closing = Some(Closing {
                            upto,
                            epoch,
                            sockets: self.subs.iter().map(|s| s.socket.id).collect(),
                        });
                        delete_wait.as_mut().reset(tokio::time::Instant::now() + DELETE_WAIT);
                        self.close_if_done();
                    }
                    Some(Ctl::Evict { user, upto, epoch }) => {
                        self.evicting.push(Evicting {
                            user,
                            upto,
                            epoch,
                            by: tokio::time::Instant::now() + DELETE_WAIT,
                        });
                        self.close_if_done();
                    }
                    Some(Ctl::Shutdown) | None => break,
                },
                Some(payload) = live.recv() => {
                    self.on_live(payload).await;
                    self.close_if_done();
                }
                _ = retry.tick(), if self.resync_pending => {
                    self.resync().await;
                    self.close_if_done();
                }
                _ = evict_tick.tick(), if !self.evicting.is_empty() => self.close_if_done(),
                _ = &mut delete_wait, if self.closing.is_some() => {
                    warn!(room = %self.room, "deleted room's notice not seen in time; removing its sockets");
                    self.remove_deleted();
                }
            }
        }
        if self.subscribed {
            let _ = self
                .ctx
                .subs
                .send(SubOp::Unsubscribe(self.ctx.keys.room_channel(&self.room)));
        }
        debug!(room = %self.room, hub = self.id, "hub stopped");
    }

    async fn subscribe(&mut self) {
        let (tx, rx) = oneshot::channel();
        let channel = self.ctx.keys.room_channel(&self.room);
        if self.ctx.subs.send(SubOp::Subscribe(channel, tx)).is_err() {
            return;
        }
        match rx.await {
            Ok(Ok(())) => self.subscribed = true,
            Ok(Err(e)) => warn!(room = %self.room, error = %e, "subscribe failed"),
            Err(_) => {}
        }
    }

    async fn join(
        &mut self,
        socket: SocketHandle,
        joined_flag: Arc<AtomicBool>,
        since: Option<Since>,
        reference: Option<Value>,
        reply: oneshot::Sender<Result<String, ErrorCode>>,
    ) {
        if !self.subscribed {
            // The subscription must be live before the join reads the room,
            // or messages appended in between could be missed.
            self.subscribe().await;
            if !self.subscribed {
                let _ = reply.send(Err(ErrorCode::Unavailable));
                return;
            }
        }
        let ttl = self.ctx.streams.retention(&self.room).ttl;
        let mut conn = self.ctx.redis.clone();
        let joined = match self
            .ctx
            .scripts
            .join(
                &mut conn,
                &self.ctx.keys,
                &JoinRequest {
                    room: &self.room,
                    since: since.as_ref(),
                    max_recover: self.ctx.max_recover,
                    ttl,
                    user: &socket.user,
                },
            )
            .await
        {
            Ok(j) => j,
            Err(e) => {
                warn!(room = %self.room, error = %e, "join failed");
                let _ = reply.send(Err(ErrorCode::from(&e)));
                return;
            }
        };
        // (Before an epoch switch: this socket gets its own `joined` below.)
        self.subs.retain(|s| s.socket.id != socket.id);
        match &self.epoch {
            None => {
                self.epoch = Some(joined.epoch.clone());
                self.last = joined.last;
            }
            Some(e) if *e != joined.epoch => {
                // The room was recreated: older sockets get the new epoch from offset 1.
                self.switch_epoch(joined.epoch.clone());
                self.resync_pending = true;
            }
            Some(_) => {}
        }
        let frame = ServerFrame::Joined {
            room: &self.room,
            epoch: &joined.epoch,
            offset: joined.last,
            recovered: joined.recovered,
            unread: Some(joined.unread),
        };
        let mut ok = socket.push(frame.to_json(reference.as_ref()).into());
        if let (Some(true), Some(s)) = (joined.recovered, &since)
            && s.offset < joined.last
        {
            ok = ok
                && socket.push_out(Out::Replay(Box::new(Replay {
                    room: self.room.clone(),
                    epoch: joined.epoch.clone(),
                    from: s.offset + 1,
                    to: joined.last,
                })));
        }
        if ok {
            self.subs.push(Sub {
                socket,
                joined: joined_flag,
                cursor: joined.last,
            });
        }
        let _ = reply.send(Ok(joined.epoch));
    }

    /// After the notice is delivered (or once the room moved on to another
    /// epoch), the deleted room's sockets leave.
    fn close_if_done(&mut self) {
        if let Some(c) = &self.closing
            && (self.epoch.as_deref() != Some(c.epoch.as_str()) || self.last >= c.upto)
        {
            self.remove_deleted();
        }
        if self.evicting.is_empty() {
            return;
        }
        let now = tokio::time::Instant::now();
        let (epoch, last) = (self.epoch.clone(), self.last);
        let (due, wait): (Vec<Evicting>, Vec<Evicting>) = std::mem::take(&mut self.evicting)
            .into_iter()
            .partition(|e| {
                epoch.as_deref() != Some(e.epoch.as_str()) || last >= e.upto || now >= e.by
            });
        self.evicting = wait;
        for e in due {
            self.evict(&e.user);
        }
    }

    /// The deleted room's sockets leave it: `left`, the shared flag cleared,
    /// and their readers woken to forget the room.
    fn remove_deleted(&mut self) {
        let Some(c) = self.closing.take() else {
            return;
        };
        let left: Utf8Bytes = ServerFrame::Left { room: &self.room }.to_json(None).into();
        self.subs.retain(|s| {
            if !c.sockets.contains(&s.socket.id) {
                return true;
            }
            if s.joined.swap(false, Ordering::AcqRel) {
                s.socket.push(left.clone());
                s.socket.removed.notify_one();
            }
            false
        });
    }

    /// A banned user's sockets leave the room: `left`, the shared flag
    /// cleared, their readers woken to forget it.
    fn evict(&mut self, user: &str) {
        let left: Utf8Bytes = ServerFrame::Left { room: &self.room }.to_json(None).into();
        self.subs.retain(|s| {
            if &*s.socket.user != user {
                return true;
            }
            if s.joined.swap(false, Ordering::AcqRel) {
                s.socket.push(left.clone());
                s.socket.removed.notify_one();
            }
            false
        });
    }

    fn switch_epoch(&mut self, epoch: String) {
        // A deleted room came back: its old sockets leave before the new
        // epoch's messages could reach them.
        if self.closing.is_some() {
            self.remove_deleted();
        }
        // The sockets still joined are told, as a rejoin would tell them:
        // the room started afresh (it expired, or Redis lost writes and it
        // went on in a new epoch), and its messages follow from offset 1.
        let told: Utf8Bytes = ServerFrame::Joined {
            room: &self.room,
            epoch: &epoch,
            offset: 0,
            recovered: Some(false),
            unread: None,
        }
        .to_json(None)
        .into();
        for s in &mut self.subs {
            s.cursor = 0;
            if s.joined.load(Ordering::Acquire) {
                s.socket.push(told.clone());
            }
        }
        self.epoch = Some(epoch);
        self.last = 0;
    }

    async fn on_live(&mut self, payload: Bytes) {
        let Some(nl) = payload.iter().position(|&b| b == b'\n') else {
            return;
        };
        let (header, body) = (payload.slice(..nl), payload.slice(nl + 1..));
        let Ok(text) = Utf8Bytes::try_from(body) else {
            return;
        };
        match live::parse(&header) {
            // An ephemeral event (typing, presence) for everyone but its user.
            Some(live::Live::Event { user: origin }) => {
                for s in &self.subs {
                    if s.socket.user.as_bytes() != origin && s.joined.load(Ordering::Acquire) {
                        s.socket.push(text.clone());
                    }
                }
            }
            // A stored message: the fanout's, or one appended on this node.
            Some(live::Live::Stored(live::Header {
                source,
                offset,
                epoch,
                ts,
                read_us,
                publish_us,
            })) => {
                if self.subs.is_empty() {
                    return;
                }
                if source == live::Source::Local {
                    // Only the next offset of the current epoch; anything
                    // else waits for the fanout's copy.
                    if self.epoch.as_deref() == Some(epoch) && offset == self.last + 1 {
                        self.deliver(offset, ts, &text, false);
                    }
                    return;
                }
                crate::hops::arrived(ts, read_us, publish_us, crate::hops::unix_us());
                // How late the fanout's copies arrive, delivered here or
                // not (this node's own messages are delivered before them):
                // what `CHAT_MAX_DELIVERY_LAG` sheds on.
                if ts > 0 {
                    let now = chat_core::clock::now_ms();
                    self.ctx.backpressure.observe(now.saturating_sub(ts), now);
                }
                if self.epoch.as_deref() != Some(epoch) {
                    // A late message of a retired epoch must not flip the hub:
                    // Redis says which epoch is current, and the resync
                    // delivers that epoch's messages.
                    self.resync().await;
                    return;
                }
                if offset <= self.last {
                    return;
                }
                if offset > self.last + 1 {
                    if !self.heal(offset - 1).await {
                        return;
                    }
                    if offset <= self.last {
                        return;
                    }
                }
                self.deliver(offset, ts, &text, false);
            }
            _ => {}
        }
    }

    /// Reads the missing range up to `upto` from the room stream and delivers it.
    /// False when Redis could not be read; a resync is then scheduled.
    async fn heal(&mut self, upto: u64) -> bool {
        let mut conn = self.ctx.redis.clone();
        while self.last < upto {
            let want = (upto - self.last).min(HEAL_BATCH);
            let r = match self
                .ctx
                .scripts
                .range(&mut conn, &self.ctx.keys, &self.room, self.last, want)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    warn!(room = %self.room, error = %e, "heal failed, will resync");
                    self.resync_pending = true;
                    return false;
                }
            };
            if Some(r.epoch.as_str()) != self.epoch.as_deref() {
                // Another epoch in the stream: the resync sorts it out.
                self.resync_pending = true;
                return false;
            }
            let before = self.last;
            if r.read_from.is_none() {
                // Nothing after `last` any more: trimmed meanwhile.
                self.lost_range(upto);
                break;
            }
            self.deliver_read(&r, upto);
            if self.last == before {
                self.lost_range(upto);
            }
        }
        true
    }

    /// Reads everything after `last` from the room stream and delivers it.
    async fn resync(&mut self) {
        if self.subs.is_empty() || self.epoch.is_none() {
            self.resync_pending = false;
            return;
        }
        let mut conn = self.ctx.redis.clone();
        loop {
            let r = match self
                .ctx
                .scripts
                .range(&mut conn, &self.ctx.keys, &self.room, self.last, HEAL_BATCH)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    debug!(room = %self.room, error = %e, "resync failed");
                    self.resync_pending = true;
                    return;
                }
            };
            if r.epoch.is_empty() {
                break;
            }
            if Some(r.epoch.as_str()) != self.epoch.as_deref() {
                self.switch_epoch(r.epoch.clone());
                continue;
            }
            if r.read_from.is_none() {
                break;
            }
            let before = self.last;
            // Nothing real lies past the room's last offset (the append
            // script writes both at once): an entry there is someone else's.
            self.deliver_read(&r, r.last);
            if self.last >= r.last || self.last == before {
                break;
            }
        }
        self.resync_pending = false;
    }

    /// Delivers what one read of the room stream returned, up to `upto`.
    /// Offsets missing before the first entry read were trimmed: the sockets
    /// behind them are closed (`lost_range`). A read whose entries have
    /// consecutive offsets holds no hole, so the offsets it has no message
    /// for are entries that did not parse (each skipped with a warning):
    /// they are passed over, so one bad entry neither stalls the room nor
    /// closes its sockets. A read with a hole in it (an offset with no entry
    /// at all) is taken as trimmed, as before.
    fn deliver_read(&mut self, r: &chat_core::scripts::Range, upto: u64) {
        let (Some(from), Some(to)) = (r.read_from, r.read_to) else {
            return;
        };
        if from > self.last + 1 {
            self.lost_range((from - 1).min(upto));
        }
        let whole = to >= from && r.read == to - from + 1;
        for m in r.messages.iter().filter(|m| m.offset <= upto) {
            if !whole && m.offset > self.last + 1 {
                self.lost_range(m.offset - 1);
            }
            self.deliver_message(m);
        }
        let to = to.min(upto);
        if whole {
            self.last = self.last.max(to);
        } else if self.last < to {
            self.lost_range(to);
        }
    }

    /// Messages up to `upto` were trimmed before this node could deliver
    /// them. The sockets that miss them are closed 1001: they re-join with
    /// `since` and are told `recovered: false`, instead of silently skipping.
    fn lost_range(&mut self, upto: u64) {
        warn!(room = %self.room, from = self.last + 1, upto, "messages trimmed before delivery; closing behind sockets");
        for s in self.subs.iter().filter(|s| s.cursor < upto) {
            s.socket
                .closer
                .close(chat_core::protocol::close::GOING_AWAY);
        }
        self.subs.retain(|s| s.cursor >= upto);
        self.last = upto;
    }

    fn deliver_message(&mut self, m: &Message) {
        if m.offset > self.last {
            self.deliver(m.offset, m.ts, &message_frame(m), true);
        }
    }

    /// `observe`: count its lag for load shedding (messages read back from
    /// the room stream; the fanout's copies are counted on arrival).
    fn deliver(&mut self, offset: u64, ts: u64, frame: &Utf8Bytes, observe: bool) {
        let mut dead = false;
        let mut delivered = 0u64;
        let stamp = Stamp {
            hub_us: crate::hops::unix_us(),
            ts_ms: ts,
        };
        for s in &mut self.subs {
            if s.cursor < offset && s.joined.load(Ordering::Acquire) {
                s.cursor = offset;
                delivered += 1;
                if !s.socket.push_out(Out::Live(frame.clone(), stamp)) {
                    dead = true;
                }
            }
        }
        // Once per message, not per recipient.
        if delivered > 0 {
            metrics::counter!("chat_deliveries_total").increment(delivered);
            let now = chat_core::clock::now_ms();
            if ts > 0 {
                let lag = now.saturating_sub(ts);
                metrics::histogram!("chat_delivery_latency_seconds").record(lag as f64 / 1000.0);
                if observe {
                    self.ctx.backpressure.observe(lag, now);
                }
            }
        }
        if dead {
            self.subs
                .retain(|s| !s.socket.closer.is_closed() && s.joined.load(Ordering::Acquire));
        }
        self.last = offset;
    }
}
