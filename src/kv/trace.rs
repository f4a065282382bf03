//! Event traces of the KV nodes, merged into one causally ordered timeline and drawn as a
//! space-time diagram.
//!
//! Each node writes its events as JSON lines ([`TraceEvent`], one object per line). A message
//! is identified by [`MsgId`] (sender, sender's event seq of the send), carried in the frame, so
//! the receiver's `Recv` names the exact `Send` it pairs with. [`Tracer`] keeps a node's Lamport
//! and vector clocks and produces correctly stamped events; nodes may use it or stamp events
//! themselves.
//!
//! [`merge`] rebuilds happens-before from the trace itself: program order on each node (by
//! `seq`) plus one edge per matched send→receive pair. It does not trust the recorded clocks for
//! the order (they are kept, shown, and checked: disagreements are counted in
//! [`Timeline::clock_anomalies`]). Each event gets a *column*: the length of the longest causal
//! chain ending at it. Every edge goes from a smaller to a larger column, so sorting by
//! (column, node, seq) is a linear extension of happens-before with a deterministic tie-break,
//! and two events in the same column are always concurrent. Happens-before and concurrency
//! queries are O(1) from per-event causal clocks computed over the trace graph.
//!
//! [`render_svg`] draws one horizontal line per node, time (columns) left to right, a dot per
//! event labelled with its label and Lamport time, an arrow per message from its send to its
//! receive, and shades each column holding events of several nodes (those events are pairwise
//! concurrent). Clicking a dot (in a browser) colours its causal past blue, its future green and
//! every event concurrent with it orange. Large traces: at most `max_columns` columns (default
//! 300) are drawn, from `first_column`; the picture says which part it shows, and labels are
//! shortened to 16 characters (full text in each dot's tooltip).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::clock::{get_varint, put_varint, ClockError, Lamport, VectorClock};

/// A message: its sender and the sender's event seq of the send.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct MsgId {
    pub from: u64,
    pub seq: u64,
}

/// What kind of event. JSON: `{"Send":{"to":2,"msg":{"from":1,"seq":7}}}`,
/// `{"Recv":{"from":1,"msg":{...}}}` or `"Local"` (serde's default enum form).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Send { to: u64, msg: MsgId },
    Recv { from: u64, msg: MsgId },
    Local,
}

/// One event of one node: a JSON object per line in the node's trace file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub node: u64,
    /// Per-node event number (program order).
    pub seq: u64,
    pub lamport: u64,
    pub vclock: VectorClock,
    pub kind: EventKind,
    pub label: String,
    /// Wall-clock (or virtual) time in microseconds, informational only.
    pub wall_us: u64,
}

impl TraceEvent {
    /// The event as one JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The causal stamp a node puts in every frame: the message id and the sender's clocks after
/// the send. Binary form: `msg.from`, `msg.seq`, `lamport` as LEB128, then the vector clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub msg: MsgId,
    pub lamport: u64,
    pub vclock: VectorClock,
}

impl Stamp {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.msg.from);
        put_varint(out, self.msg.seq);
        put_varint(out, self.lamport);
        self.vclock.encode(out);
    }

    /// Decodes a stamp from the start of `buf`; returns it and the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<(Stamp, usize), ClockError> {
        let mut pos = 0;
        let from = get_varint(buf, &mut pos)?;
        let seq = get_varint(buf, &mut pos)?;
        let lamport = get_varint(buf, &mut pos)?;
        let (vclock, used) = VectorClock::decode(&buf[pos..])?;
        Ok((
            Stamp {
                msg: MsgId { from, seq },
                lamport,
                vclock,
            },
            pos + used,
        ))
    }
}

/// A node's clocks and event counter, producing stamped [`TraceEvent`]s (sans-IO: the caller
/// passes the time). Keeps at most `cap` undrained events; older ones are dropped and counted.
#[derive(Clone, Debug)]
pub struct Tracer {
    node: u64,
    seq: u64,
    lamport: Lamport,
    vclock: VectorClock,
    buf: Vec<TraceEvent>,
    cap: usize,
    dropped: u64,
}

impl Tracer {
    /// A tracer for `node` keeping at most 100,000 undrained events.
    pub fn new(node: u64) -> Tracer {
        Tracer::with_capacity(node, 100_000)
    }

    pub fn with_capacity(node: u64, cap: usize) -> Tracer {
        Tracer {
            node,
            seq: 0,
            lamport: Lamport::default(),
            vclock: VectorClock::default(),
            buf: Vec::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    pub fn lamport(&self) -> u64 {
        self.lamport.now()
    }

    pub fn vclock(&self) -> &VectorClock {
        &self.vclock
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn record(&mut self, kind: EventKind, label: &str, wall_us: u64) -> u64 {
        self.seq += 1;
        if self.buf.len() >= self.cap {
            self.buf.remove(0);
            self.dropped += 1;
        }
        self.buf.push(TraceEvent {
            node: self.node,
            seq: self.seq,
            lamport: self.lamport.now(),
            vclock: self.vclock.clone(),
            kind,
            label: label.to_string(),
            wall_us,
        });
        self.seq
    }

    /// A local event.
    pub fn local(&mut self, label: &str, wall_us: u64) {
        self.lamport.tick();
        self.vclock.increment(self.node);
        self.record(EventKind::Local, label, wall_us);
    }

    /// A send to `to`: returns the stamp to put in the frame.
    pub fn send(&mut self, to: u64, label: &str, wall_us: u64) -> Stamp {
        self.lamport.tick();
        self.vclock.increment(self.node);
        let msg = MsgId {
            from: self.node,
            seq: self.seq + 1,
        };
        self.record(EventKind::Send { to, msg }, label, wall_us);
        Stamp {
            msg,
            lamport: self.lamport.now(),
            vclock: self.vclock.clone(),
        }
    }

    /// A receive of a frame from `from` carrying `stamp`.
    pub fn recv(&mut self, from: u64, stamp: &Stamp, label: &str, wall_us: u64) {
        self.lamport.observe(stamp.lamport);
        self.vclock.merge(&stamp.vclock);
        self.vclock.increment(self.node);
        self.record(
            EventKind::Recv {
                from,
                msg: stamp.msg,
            },
            label,
            wall_us,
        );
    }

    /// Moves the recorded events to `out`.
    pub fn drain(&mut self, out: &mut Vec<TraceEvent>) {
        out.append(&mut self.buf);
    }
}

/// Parses JSON lines; blank lines are ignored, bad lines counted and skipped.
pub fn parse_trace(bytes: &[u8]) -> (Vec<TraceEvent>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    for line in bytes.split(|&b| b == b'\n') {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match serde_json::from_slice::<TraceEvent>(line) {
            Ok(e) => events.push(e),
            Err(_) => bad += 1,
        }
    }
    (events, bad)
}

/// Reads a node's trace file; returns the events and the number of bad lines skipped.
pub fn read_trace_counted(path: &Path) -> io::Result<(Vec<TraceEvent>, usize)> {
    Ok(parse_trace(&std::fs::read(path)?))
}

/// Reads a node's trace file; bad lines are skipped (and logged as a count).
pub fn read_trace(path: &Path) -> io::Result<Vec<TraceEvent>> {
    let (events, bad) = read_trace_counted(path)?;
    if bad > 0 {
        log::warn!("{}: skipped {bad} bad trace lines", path.display());
    }
    Ok(events)
}

/// Appends events to a writer as JSON lines.
pub fn write_trace<W: io::Write>(w: &mut W, events: &[TraceEvent]) -> io::Result<()> {
    for e in events {
        writeln!(w, "{}", e.to_json_line())?;
    }
    Ok(())
}

/// A matched message: indices into [`Timeline::events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub send: usize,
    pub recv: usize,
}

/// All nodes' events in one causal order.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Sorted by (column, node, seq): a linear extension of happens-before.
    pub events: Vec<TraceEvent>,
    /// Node ids, ascending.
    pub nodes: Vec<u64>,
    /// Matched send→receive pairs.
    pub messages: Vec<Message>,
    /// Sends with no receive in the trace (lost, or the receiver's trace is missing).
    pub unmatched_sends: Vec<usize>,
    /// Receives whose send is not in the trace.
    pub unmatched_recvs: Vec<usize>,
    /// Events dropped because another event had the same (node, seq).
    pub duplicates: usize,
    /// Send/receive pairs that contradicted program order (a cycle) and were not used as edges.
    pub causal_anomalies: usize,
    /// Recorded clocks that disagree with the trace's causality (a receive whose Lamport time
    /// or vector clock is not after its send's, or Lamport times going backwards on a node).
    pub clock_anomalies: usize,
    /// Column of each event: length of the longest causal chain ending at it.
    column: Vec<u32>,
    /// Index of each event's node in `nodes`.
    node_ix: Vec<u32>,
    /// Causal clock per event (dense, per `nodes`): events of each node in its past, inclusive.
    past: Vec<Vec<u32>>,
    /// Events in each event's causal future, inclusive of itself.
    future_count: Vec<u64>,
}

impl Timeline {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The column (diagram x position) of event `i`.
    pub fn column(&self, i: usize) -> u32 {
        self.column[i]
    }

    /// Number of columns.
    pub fn columns(&self) -> u32 {
        self.column.iter().max().map_or(0, |c| c + 1)
    }

    /// The index of the event `(node, seq)`.
    pub fn find(&self, node: u64, seq: u64) -> Option<usize> {
        self.events
            .iter()
            .position(|e| e.node == node && e.seq == seq)
    }

    /// True when event `a` happened before event `b` (a ≠ b).
    pub fn happens_before(&self, a: usize, b: usize) -> bool {
        if a == b || a >= self.len() || b >= self.len() {
            return false;
        }
        let k = self.node_ix[a] as usize;
        self.past[b][k] >= self.past[a][k]
    }

    /// True when neither of `a`, `b` happened before the other (and a ≠ b).
    pub fn concurrent(&self, a: usize, b: usize) -> bool {
        a != b
            && a < self.len()
            && b < self.len()
            && !self.happens_before(a, b)
            && !self.happens_before(b, a)
    }

    /// All events concurrent with `i`.
    pub fn concurrent_with(&self, i: usize) -> Vec<usize> {
        (0..self.len()).filter(|&j| self.concurrent(i, j)).collect()
    }

    /// How many events are concurrent with `i` (O(1)).
    pub fn concurrent_count(&self, i: usize) -> u64 {
        let n = self.len() as u64;
        let past: u64 = self.past[i].iter().map(|&c| c as u64).sum();
        n + 1 - past - self.future_count[i]
    }

    /// Pairs of events on different nodes in the same column (pairwise concurrent), in order.
    pub fn same_column_pairs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.len() {
            let mut end = start;
            while end < self.len() && self.column[end] == self.column[start] {
                end += 1;
            }
            for a in start..end {
                for b in a + 1..end {
                    out.push((a, b));
                }
            }
            start = end;
        }
        out
    }
}

/// Merges the events of all nodes into one causally ordered [`Timeline`].
pub fn merge(mut events: Vec<TraceEvent>) -> Timeline {
    // Program order, duplicates dropped.
    events.sort_by_key(|e| (e.node, e.seq));
    let before = events.len();
    events.dedup_by_key(|e| (e.node, e.seq));
    let duplicates = before - events.len();
    let n = events.len();
    let mut nodes: Vec<u64> = events.iter().map(|e| e.node).collect();
    nodes.dedup();
    let node_pos: HashMap<u64, u32> = nodes
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i as u32))
        .collect();
    let by_id: HashMap<(u64, u64), usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.node, e.seq), i))
        .collect();

    // Message edges: recv index → send index.
    let mut send_of: Vec<Option<usize>> = vec![None; n];
    let mut received = vec![false; n];
    let mut unmatched_recv = vec![false; n];
    for (r, e) in events.iter().enumerate() {
        if let EventKind::Recv { msg, .. } = &e.kind {
            match by_id.get(&(msg.from, msg.seq)) {
                Some(&s) if matches!(&events[s].kind, EventKind::Send { msg: m, .. } if m == msg) =>
                {
                    send_of[r] = Some(s);
                    received[s] = true;
                }
                _ => unmatched_recv[r] = true,
            }
        }
    }
    let prog_pred = |i: usize| (i > 0 && events[i - 1].node == events[i].node).then(|| i - 1);
    let mut recvs_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (r, s) in send_of.iter().enumerate() {
        if let Some(s) = *s {
            recvs_of[s].push(r);
        }
    }

    // Kahn's algorithm with a (lamport, node, seq) tie-break; a cycle (a receive that program
    // order puts before its own send) is broken by dropping that message edge.
    let mut indeg: Vec<u32> = (0..n)
        .map(|i| prog_pred(i).is_some() as u32 + send_of[i].is_some() as u32)
        .collect();
    let key = |i: usize| Reverse((events[i].lamport, events[i].node, events[i].seq, i));
    let mut heap: BinaryHeap<_> = (0..n).filter(|&i| indeg[i] == 0).map(key).collect();
    let mut emitted = vec![false; n];
    let mut topo = Vec::with_capacity(n);
    let mut causal_anomalies = 0;
    while topo.len() < n {
        let i = match heap.pop() {
            Some(Reverse((.., i))) => i,
            None => {
                // Stuck: every node's next event waits for a send not yet emitted. Force the
                // smallest such receive, dropping its message edge.
                let i = (0..n)
                    .filter(|&i| !emitted[i] && prog_pred(i).is_none_or(|p| emitted[p]))
                    .min_by_key(|&i| key(i).0)
                    .unwrap_or_else(|| (0..n).find(|&i| !emitted[i]).unwrap_or(0));
                if let Some(s) = send_of[i].take() {
                    recvs_of[s].retain(|&r| r != i);
                    causal_anomalies += 1;
                }
                i
            }
        };
        if emitted[i] {
            continue;
        }
        emitted[i] = true;
        topo.push(i);
        let mut succ: Vec<usize> = recvs_of[i].clone();
        if i + 1 < n && events[i + 1].node == events[i].node {
            succ.push(i + 1);
        }
        for s in succ {
            indeg[s] = indeg[s].saturating_sub(1);
            if indeg[s] == 0 && !emitted[s] {
                heap.push(key(s));
            }
        }
    }

    // Columns along the topological order.
    let mut column = vec![0u32; n];
    for &i in &topo {
        let mut c = 0;
        if let Some(p) = prog_pred(i) {
            c = c.max(column[p] + 1);
        }
        if let Some(s) = send_of[i] {
            c = c.max(column[s] + 1);
        }
        column[i] = c;
    }

    // Final order and index remapping.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (column[i], events[i].node, events[i].seq));
    let mut new_ix = vec![0usize; n];
    for (new, &old) in order.iter().enumerate() {
        new_ix[old] = new;
    }
    let mut slots: Vec<Option<TraceEvent>> = events.into_iter().map(Some).collect();
    let events: Vec<TraceEvent> = order
        .iter()
        .map(|&old| slots[old].take().unwrap_or_else(dummy_event))
        .collect();
    let column: Vec<u32> = order.iter().map(|&old| column[old]).collect();
    let send_of: Vec<Option<usize>> = order
        .iter()
        .map(|&old| send_of[old].map(|s| new_ix[s]))
        .collect();
    let received: Vec<bool> = order.iter().map(|&old| received[old]).collect();
    let unmatched_recv: Vec<bool> = order.iter().map(|&old| unmatched_recv[old]).collect();
    let node_ix: Vec<u32> = events
        .iter()
        .map(|e| node_pos.get(&e.node).copied().unwrap_or(0))
        .collect();

    // Program predecessor/successor in the new order.
    let k = nodes.len();
    let mut last_on: Vec<Option<usize>> = vec![None; k];
    let mut pred = vec![None; n];
    let mut next = vec![None; n];
    for i in 0..n {
        let ni = node_ix[i] as usize;
        if let Some(p) = last_on[ni] {
            pred[i] = Some(p);
            next[p] = Some(i);
        }
        last_on[ni] = Some(i);
    }

    // Causal clocks forward; future sizes backward (per node, the reachable events form a
    // suffix, so the count per node is a max over successors).
    let mut past: Vec<Vec<u32>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = match pred[i] {
            Some(p) => past[p].clone(),
            None => vec![0u32; k],
        };
        if let Some(s) = send_of[i] {
            for (x, &y) in c.iter_mut().zip(&past[s]) {
                *x = (*x).max(y);
            }
        }
        c[node_ix[i] as usize] += 1;
        past.push(c);
    }
    let mut recvs_new: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (r, s) in send_of.iter().enumerate() {
        if let Some(s) = *s {
            recvs_new[s].push(r);
        }
    }
    let mut remaining_on = vec![0u32; n]; // events on the node from i on, inclusive
    let mut count = vec![0u32; k];
    for i in (0..n).rev() {
        count[node_ix[i] as usize] += 1;
        remaining_on[i] = count[node_ix[i] as usize];
    }
    let mut fut: Vec<Vec<u32>> = vec![Vec::new(); n];
    for i in (0..n).rev() {
        let mut c = match next[i] {
            Some(x) => fut[x].clone(),
            None => vec![0u32; k],
        };
        for &r in &recvs_new[i] {
            for (x, &y) in c.iter_mut().zip(&fut[r]) {
                *x = (*x).max(y);
            }
        }
        c[node_ix[i] as usize] = remaining_on[i];
        fut[i] = c;
    }
    let future_count: Vec<u64> = fut
        .iter()
        .map(|c| c.iter().map(|&x| x as u64).sum())
        .collect();

    let mut messages = Vec::new();
    for (r, s) in send_of.iter().enumerate() {
        if let Some(s) = *s {
            messages.push(Message { send: s, recv: r });
        }
    }
    messages.sort_by_key(|m| (m.send, m.recv));
    let unmatched_sends = (0..n)
        .filter(|&i| matches!(events[i].kind, EventKind::Send { .. }) && !received[i])
        .collect();
    let unmatched_recvs = (0..n).filter(|&i| unmatched_recv[i]).collect();

    // Recorded clocks against the rebuilt causality.
    let mut clock_anomalies = 0;
    for m in &messages {
        let (s, r) = (&events[m.send], &events[m.recv]);
        if r.lamport <= s.lamport
            || (!s.vclock.is_empty()
                && !r.vclock.is_empty()
                && !s.vclock.happened_before(&r.vclock))
        {
            clock_anomalies += 1;
        }
    }
    for i in 0..n {
        if let Some(p) = pred[i] {
            if events[i].lamport <= events[p].lamport {
                clock_anomalies += 1;
            }
        }
    }

    Timeline {
        events,
        nodes,
        messages,
        unmatched_sends,
        unmatched_recvs,
        duplicates,
        causal_anomalies,
        clock_anomalies,
        column,
        node_ix,
        past,
        future_count,
    }
}

fn dummy_event() -> TraceEvent {
    TraceEvent {
        node: 0,
        seq: 0,
        lamport: 0,
        vclock: VectorClock::default(),
        kind: EventKind::Local,
        label: String::new(),
        wall_us: 0,
    }
}

/// What part of a timeline to draw, and how.
#[derive(Clone, Copy, Debug)]
pub struct SvgOptions {
    /// First column drawn.
    pub first_column: u32,
    /// At most this many columns are drawn.
    pub max_columns: u32,
    /// Draw labels next to the dots (tooltips always carry them).
    pub labels: bool,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            first_column: 0,
            max_columns: 300,
            labels: true,
        }
    }
}

const DX: u32 = 64;
const DY: u32 = 110;
const LEFT: u32 = 90;
const TOP: u32 = 150;
const LABEL_CHARS: usize = 16;

/// XML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn short(s: &str) -> String {
    if s.chars().count() <= LABEL_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(LABEL_CHARS - 1).collect();
        t.push('…');
        t
    }
}

fn kind_text(e: &TraceEvent) -> String {
    match &e.kind {
        EventKind::Send { to, msg } => format!("send to {to} (msg {}/{})", msg.from, msg.seq),
        EventKind::Recv { from, msg } => {
            format!("recv from {from} (msg {}/{})", msg.from, msg.seq)
        }
        EventKind::Local => "local".to_string(),
    }
}

/// The diagram with default options.
pub fn render_svg(tl: &Timeline) -> String {
    render_svg_with(tl, &SvgOptions::default())
}

/// The space-time diagram of `tl` (see the module docs).
pub fn render_svg_with(tl: &Timeline, opt: &SvgOptions) -> String {
    let first = opt.first_column;
    let last = first.saturating_add(opt.max_columns.max(1)); // exclusive
    let total_cols = tl.columns();
    let shown = |i: usize| tl.column[i] >= first && tl.column[i] < last;
    let cols_shown = last.min(total_cols).saturating_sub(first);
    let x = |i: usize| LEFT + (tl.column[i] - first) * DX + DX / 2;
    let y_node = |k: usize| TOP + k as u32 * DY;
    let y = |i: usize| y_node(tl.node_ix[i] as usize);
    // at least wide enough for the legend
    let width = (LEFT + cols_shown.max(1) * DX + 40).max(960);
    let height = TOP + tl.nodes.len().max(1) as u32 * DY + 20;
    let n_shown = (0..tl.len()).filter(|&i| shown(i)).count();

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    s.push('\n');
    s.push_str(
        "<style>.ev{stroke:#222;stroke-width:1;cursor:pointer}.send{fill:#4a7fd0}.recv{fill:#3a9a50}\
.local{fill:#999}.msg{stroke:#555;stroke-width:1.2;fill:none}.lost{stroke:#c33;stroke-dasharray:4 3}\
.band{fill:#ffe9b8}.ev.past{fill:#1f4fff}.ev.future{fill:#10b030}.ev.conc{fill:#ff8c00;stroke:#ff8c00;stroke-width:4}\
.ev.sel{stroke:#000;stroke-width:4}</style>\n",
    );
    s.push_str(
        "<defs><marker id=\"arr\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n",
    );
    // Click handler: past blue, future green, concurrent orange. Written without '<' and '&'
    // so the SVG stays valid XML without CDATA.
    s.push_str(
        "<script>function kvsel(id){var s=document.getElementById(id);var cs=s.getAttribute('data-c').split(',').map(Number);var ks=+s.getAttribute('data-k');\
document.querySelectorAll('.ev').forEach(function(e){e.classList.remove('past','future','conc','sel');\
var ce=e.getAttribute('data-c').split(',').map(Number);var ke=+e.getAttribute('data-k');\
if(e===s){e.classList.add('sel');}else if(cs[ke]>=ce[ke]){e.classList.add('past');}else if(ce[ks]>=cs[ks]){e.classList.add('future');}else{e.classList.add('conc');}});}</script>\n",
    );

    // Header and legend.
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="13" font-weight="bold">{} events on {} nodes, {} messages; columns {}–{} of {} shown ({} events)</text>"#,
        tl.len(),
        tl.nodes.len(),
        tl.messages.len(),
        if cols_shown == 0 { 0 } else { first + 1 },
        first + cols_shown,
        total_cols,
        n_shown
    );
    let _ = writeln!(
        s,
        r##"<g class="legend" transform="translate(10,30)"><circle cx="6" cy="6" r="5" class="send"/><text x="15" y="10">send</text><circle cx="66" cy="6" r="5" class="recv"/><text x="75" y="10">receive</text><circle cx="136" cy="6" r="5" class="local"/><text x="145" y="10">local</text><line x1="190" y1="6" x2="225" y2="6" class="msg" marker-end="url(#arr)"/><text x="230" y="10">message</text><line x1="290" y1="6" x2="320" y2="6" class="msg lost"/><text x="325" y="10">unmatched</text><rect x="395" y="0" width="14" height="12" class="band"/><text x="413" y="10">column with events of several nodes: pairwise concurrent (no happens-before)</text><text x="0" y="28">Time runs left to right in causal order (column = longest causal chain); labels show "label Lamport-time". Click an event: past blue, future green, concurrent orange.</text></g>"##
    );
    if tl.causal_anomalies + tl.clock_anomalies + tl.duplicates > 0 {
        let _ = writeln!(
            s,
            r##"<text x="10" y="80" fill="#c33">anomalies: {} send/receive pairs against program order, {} recorded clocks disagree, {} duplicate events dropped</text>"##,
            tl.causal_anomalies, tl.clock_anomalies, tl.duplicates
        );
    }

    // Concurrency bands: columns with events of more than one node.
    let mut i = 0;
    while i < tl.len() {
        let mut j = i;
        while j < tl.len() && tl.column[j] == tl.column[i] {
            j += 1;
        }
        if j - i > 1 && shown(i) {
            let bx = x(i) - DX / 2 + 4;
            let _ = writeln!(
                s,
                r#"<rect class="band" data-col="{}" x="{bx}" y="{}" width="{}" height="{}"/>"#,
                tl.column[i],
                TOP - 40,
                DX - 8,
                tl.nodes.len() as u32 * DY - 30
            );
        }
        i = j;
    }

    // Node lines.
    for (k, node) in tl.nodes.iter().enumerate() {
        let yy = y_node(k);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{yy}" x2="{}" y2="{yy}" stroke="#bbb" stroke-width="2"/><text x="10" y="{}" font-size="13" font-weight="bold">node {node}</text>"##,
            LEFT - 10,
            width - 20,
            yy + 4
        );
    }

    // Messages (both ends shown), then lost/unmatched stubs.
    let mut crossing = 0;
    for m in &tl.messages {
        if !(shown(m.send) && shown(m.recv)) {
            if shown(m.send) || shown(m.recv) {
                crossing += 1;
            }
            continue;
        }
        let _ = writeln!(
            s,
            r#"<line class="msg" data-send="e{}" data-recv="e{}" x1="{}" y1="{}" x2="{}" y2="{}" marker-end="url(#arr)"/>"#,
            m.send,
            m.recv,
            x(m.send),
            y(m.send),
            x(m.recv),
            y(m.recv)
        );
    }
    for &i in &tl.unmatched_sends {
        if !shown(i) {
            continue;
        }
        if let EventKind::Send { to, .. } = tl.events[i].kind {
            let (x1, y1) = (x(i), y(i));
            let target = tl.nodes.iter().position(|&n| n == to);
            let y2 = match target {
                Some(k) => (y1 as i64 + (y_node(k) as i64 - y1 as i64) / 2) as u32,
                None => y1 + DY / 3,
            };
            let _ = writeln!(
                s,
                r##"<line class="msg lost" data-send="e{i}" x1="{x1}" y1="{y1}" x2="{}" y2="{y2}"/><text x="{}" y="{}" fill="#c33">× to {to}</text>"##,
                x1 + DX / 2,
                x1 + DX / 2 + 2,
                y2 + 4
            );
        }
    }
    for &i in &tl.unmatched_recvs {
        if !shown(i) {
            continue;
        }
        let (x2, y2) = (x(i), y(i));
        let _ = writeln!(
            s,
            r#"<line class="msg lost" data-recv="e{i}" x1="{}" y1="{}" x2="{x2}" y2="{y2}" marker-end="url(#arr)"/>"#,
            x2 - DX / 2,
            y2 - DY / 4
        );
    }
    if crossing > 0 {
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}" fill="#555">{crossing} messages cross the edge of the shown columns (not drawn)</text>"##,
            height - 6
        );
    }

    // Events.
    for i in (0..tl.len()).filter(|&i| shown(i)) {
        let e = &tl.events[i];
        let (cx, cy) = (x(i), y(i));
        let class = match e.kind {
            EventKind::Send { .. } => "send",
            EventKind::Recv { .. } => "recv",
            EventKind::Local => "local",
        };
        let clock: Vec<String> = tl.past[i].iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            s,
            r#"<circle id="e{i}" class="ev {class}" cx="{cx}" cy="{cy}" r="6" data-k="{}" data-c="{}" onclick="kvsel(this.id)"><title>{}</title></circle>"#,
            tl.node_ix[i],
            clock.join(","),
            escape(&format!(
                "#{i} node {} seq {} · {} · Lamport {} · vclock {} · {} · t={} µs · concurrent with {} events",
                e.node,
                e.seq,
                e.label,
                e.lamport,
                e.vclock,
                kind_text(e),
                e.wall_us,
                tl.concurrent_count(i)
            ))
        );
        if opt.labels {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" transform="rotate(-35 {} {})">{} {}</text>"#,
                cx + 2,
                cy - 10,
                cx + 2,
                cy - 10,
                escape(&short(&e.label)),
                e.lamport
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A standalone HTML page: the diagram and a table of the events (at most 5,000 rows).
pub fn render_html(tl: &Timeline) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>KV trace</title>\n");
    s.push_str("<style>body{font-family:sans-serif}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}tr:hover{background:#eef}.svgbox{overflow-x:auto}</style>\n");
    s.push_str("</head><body>\n<h1>KV trace</h1>\n");
    let _ = writeln!(
        s,
        "<p>{} events on nodes {:?}, {} messages ({} unmatched sends, {} unmatched receives); {} causal anomalies, {} clock anomalies, {} duplicates.</p>",
        tl.len(),
        tl.nodes,
        tl.messages.len(),
        tl.unmatched_sends.len(),
        tl.unmatched_recvs.len(),
        tl.causal_anomalies,
        tl.clock_anomalies,
        tl.duplicates
    );
    s.push_str("<div class=\"svgbox\">\n");
    s.push_str(&render_svg(tl));
    s.push_str("</div>\n<table>\n<tr><th>#</th><th>column</th><th>node</th><th>seq</th><th>Lamport</th><th>vector clock</th><th>kind</th><th>label</th><th>wall µs</th><th>concurrent with</th></tr>\n");
    const MAX_ROWS: usize = 5_000;
    for (i, e) in tl.events.iter().enumerate().take(MAX_ROWS) {
        let _ = writeln!(
            s,
            "<tr onclick=\"if(document.getElementById('e{i}'))kvsel('e{i}')\"><td>{i}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            tl.column[i],
            e.node,
            e.seq,
            e.lamport,
            escape(&e.vclock.to_string()),
            escape(&kind_text(e)),
            escape(&e.label),
            e.wall_us,
            tl.concurrent_count(i)
        );
    }
    s.push_str("</table>\n");
    if tl.len() > MAX_ROWS {
        let _ = writeln!(
            s,
            "<p>… {} more events not listed.</p>",
            tl.len() - MAX_ROWS
        );
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built trace (recorded in scrambled order):
    ///   node 1: a1 local, a2 send→2 (m1), a3 local
    ///   node 2: b1 local, b2 recv m1, b3 send→3 (m2), b4 local
    ///   node 3: c1 local, c2 recv m2, c3 send→1 (lost)
    fn sample() -> Vec<TraceEvent> {
        let mut t1 = Tracer::new(1);
        let mut t2 = Tracer::new(2);
        let mut t3 = Tracer::new(3);
        t1.local("a1", 1);
        let m1 = t1.send(2, "a2 append", 2);
        t1.local("a3", 3);
        t2.local("b1", 1);
        t2.recv(1, &m1, "b2", 4);
        let m2 = t2.send(3, "b3 vote", 5);
        t2.local("b4", 6);
        t3.local("c1", 1);
        t3.recv(2, &m2, "c2", 7);
        let _lost = t3.send(1, "c3 <lost> & \"q\"", 8);
        let mut ev = Vec::new();
        t3.drain(&mut ev);
        t1.drain(&mut ev);
        t2.drain(&mut ev);
        ev.reverse();
        ev
    }

    fn ix(tl: &Timeline, node: u64, seq: u64) -> usize {
        tl.find(node, seq).unwrap()
    }

    #[test]
    fn merged_order_respects_happens_before() {
        let tl = merge(sample());
        assert_eq!(tl.len(), 10);
        assert_eq!(tl.nodes, vec![1, 2, 3]);
        // program order
        for node in [1, 2, 3] {
            let seqs: Vec<u64> = tl
                .events
                .iter()
                .filter(|e| e.node == node)
                .map(|e| e.seq)
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{node}: {seqs:?}");
        }
        // every message send precedes its receive; every hb pair is in order
        for m in &tl.messages {
            assert!(m.send < m.recv);
        }
        for a in 0..tl.len() {
            for b in 0..tl.len() {
                if tl.happens_before(a, b) {
                    assert!(a < b, "{a} hb {b} but ordered after");
                    assert!(tl.column(a) < tl.column(b));
                }
            }
        }
        // transitive chain a1 → a2 → b2 → b3 → c2 → c3
        assert!(tl.happens_before(ix(&tl, 1, 1), ix(&tl, 3, 3)));
        assert!(!tl.happens_before(ix(&tl, 3, 3), ix(&tl, 1, 1)));
        assert_eq!(tl.clock_anomalies, 0);
        assert_eq!(tl.causal_anomalies, 0);
    }

    #[test]
    fn merge_is_deterministic_whatever_the_input_order() {
        let a = merge(sample());
        let mut s = sample();
        s.sort_by_key(|e| (e.lamport, e.node));
        let b = merge(s);
        assert_eq!(a.events, b.events);
        assert_eq!(a.messages, b.messages);
    }

    #[test]
    fn concurrency_queries_match_vector_clocks() {
        let tl = merge(sample());
        let (a1, a3, b1, b4, c1) = (
            ix(&tl, 1, 1),
            ix(&tl, 1, 3),
            ix(&tl, 2, 1),
            ix(&tl, 2, 4),
            ix(&tl, 3, 1),
        );
        assert!(tl.concurrent(a1, b1));
        assert!(tl.concurrent(a3, b4));
        assert!(tl.concurrent(a1, c1));
        assert!(!tl.concurrent(a1, b4)); // a1 → a2 → b2 → b3 → b4
                                         // the rebuilt relation agrees with the recorded vector clocks on every pair
        for i in 0..tl.len() {
            for j in 0..tl.len() {
                let rec = tl.events[i].vclock.happened_before(&tl.events[j].vclock);
                assert_eq!(tl.happens_before(i, j), rec, "{i} {j}");
            }
            assert_eq!(tl.concurrent_count(i), tl.concurrent_with(i).len() as u64);
        }
        // a1, b1, c1 are all in column 0: pairwise concurrent
        let pairs = tl.same_column_pairs();
        assert!(pairs.contains(&(a1.min(b1), a1.max(b1))));
        for (x, y) in pairs {
            assert!(tl.concurrent(x, y));
        }
    }

    #[test]
    fn unmatched_messages_are_reported() {
        let tl = merge(sample());
        assert_eq!(tl.messages.len(), 2);
        assert_eq!(tl.unmatched_sends, vec![ix(&tl, 3, 3)]);
        assert!(tl.unmatched_recvs.is_empty());
        let mut ev = sample();
        ev.retain(|e| e.node != 1); // node 1's trace missing: b2's send unknown
        let tl = merge(ev);
        assert_eq!(tl.unmatched_recvs, vec![ix(&tl, 2, 2)]);
    }

    #[test]
    fn receive_before_its_send_in_program_order_is_an_anomaly_not_a_hang() {
        // node 1: recv m(2,2) then send m(1,2)→2; node 2: recv m(1,2) then send m(2,2)→1.
        let mk = |node, seq, kind| TraceEvent {
            node,
            seq,
            lamport: seq,
            vclock: VectorClock::new(),
            kind,
            label: String::new(),
            wall_us: 0,
        };
        let ev = vec![
            mk(
                1,
                1,
                EventKind::Recv {
                    from: 2,
                    msg: MsgId { from: 2, seq: 2 },
                },
            ),
            mk(
                1,
                2,
                EventKind::Send {
                    to: 2,
                    msg: MsgId { from: 1, seq: 2 },
                },
            ),
            mk(
                2,
                1,
                EventKind::Recv {
                    from: 1,
                    msg: MsgId { from: 1, seq: 2 },
                },
            ),
            mk(
                2,
                2,
                EventKind::Send {
                    to: 1,
                    msg: MsgId { from: 2, seq: 2 },
                },
            ),
            mk(2, 2, EventKind::Local), // duplicate (node, seq)
        ];
        let tl = merge(ev);
        assert_eq!(tl.len(), 4);
        assert_eq!(tl.duplicates, 1);
        assert_eq!(tl.causal_anomalies, 1);
        assert_eq!(tl.messages.len(), 1);
        for m in &tl.messages {
            assert!(m.send < m.recv);
        }
        assert!(render_svg(&tl).contains("anomalies"));
    }

    #[test]
    fn recorded_clocks_that_disagree_are_counted() {
        let mut ev = sample();
        for e in &mut ev {
            if e.node == 2 && e.seq == 2 {
                e.lamport = 0; // receive not after its send
            }
        }
        assert!(merge(ev).clock_anomalies >= 1);
    }

    #[test]
    fn read_trace_skips_and_counts_bad_lines() {
        let ev = sample();
        let mut buf = Vec::new();
        write_trace(&mut buf, &ev[..3]).unwrap();
        buf.extend_from_slice(b"{not json}\n\n\xff\xfe garbage\n{\"node\":1}\n");
        write_trace(&mut buf, &ev[3..]).unwrap();
        let dir = std::env::temp_dir().join(format!("kvtrace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.jsonl");
        std::fs::write(&path, &buf).unwrap();
        let (back, bad) = read_trace_counted(&path).unwrap();
        assert_eq!(bad, 3);
        assert_eq!(back, ev);
        assert_eq!(read_trace(&path).unwrap().len(), ev.len());
        assert!(read_trace(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_line_format_is_stable() {
        let e = TraceEvent {
            node: 2,
            seq: 5,
            lamport: 9,
            vclock: [(1, 3), (2, 5)].into_iter().collect(),
            kind: EventKind::Recv {
                from: 1,
                msg: MsgId { from: 1, seq: 3 },
            },
            label: "append".into(),
            wall_us: 42,
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"node":2,"seq":5,"lamport":9,"vclock":{"1":3,"2":5},"kind":{"Recv":{"from":1,"msg":{"from":1,"seq":3}}},"label":"append","wall_us":42}"#
        );
        let local = r#"{"node":1,"seq":1,"lamport":1,"vclock":{"1":1},"kind":"Local","label":"x","wall_us":0}"#;
        let (ev, bad) = parse_trace(local.as_bytes());
        assert_eq!((ev.len(), bad), (1, 0));
        assert_eq!(ev[0].kind, EventKind::Local);
    }

    #[test]
    fn stamp_round_trips_and_rejects_garbage() {
        let mut t = Tracer::new(4);
        t.local("x", 0);
        let st = t.send(5, "y", 0);
        let mut b = Vec::new();
        st.encode(&mut b);
        b.push(0xaa);
        let (d, used) = Stamp::decode(&b).unwrap();
        assert_eq!(d, st);
        assert_eq!(used, b.len() - 1);
        assert_eq!(d.msg, MsgId { from: 4, seq: 2 });
        for cut in 0..b.len() - 1 {
            assert!(Stamp::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn tracer_buffer_is_bounded() {
        let mut t = Tracer::with_capacity(1, 10);
        for i in 0..25 {
            t.local("x", i);
        }
        let mut out = Vec::new();
        t.drain(&mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(t.dropped(), 15);
        assert_eq!(out[0].seq, 16);
    }

    /// Minimal XML well-formedness: balanced, properly nested tags, quoted attributes, only the
    /// five predefined entities (so no raw '&' in text). Returns the number of tags.
    fn check_xml(s: &str) -> usize {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s;
        let mut tags = 0;
        while let Some(p) = rest.find(['<', '&']) {
            rest = &rest[p..];
            if rest.starts_with('&') {
                let end = rest.find(';').expect("unterminated entity");
                let ent = &rest[1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&ent),
                    "bad entity &{ent};"
                );
                rest = &rest[end + 1..];
                continue;
            }
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            tags += 1;
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            assert!(!tag.contains('<'), "'<' inside <{tag}>");
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().expect("close without open");
                assert_eq!(open, name.trim(), "mis-nested </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        tags
    }

    #[test]
    fn svg_is_well_formed() {
        let tl = merge(sample());
        let svg = render_svg(&tl);
        assert!(svg.starts_with("<svg "));
        assert!(check_xml(&svg) > 20);
        // the label with markup characters was escaped
        assert!(svg.contains("c3 &lt;lost&gt; &amp;"));
    }

    fn attr(tag: &str, name: &str) -> String {
        let k = format!(" {name}=\"");
        let p = tag.find(&k).unwrap_or_else(|| panic!("no {name} in {tag}")) + k.len();
        tag[p..p + tag[p..].find('"').unwrap()].to_string()
    }

    fn element<'a>(svg: &'a str, needle: &str) -> &'a str {
        let p = svg
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not found"));
        let start = svg[..p].rfind('<').unwrap();
        &svg[start..start + svg[start..].find('>').unwrap()]
    }

    #[test]
    fn message_arrow_connects_send_to_receive() {
        let tl = merge(sample());
        let svg = render_svg(&tl);
        let (a2, b2) = (ix(&tl, 1, 2), ix(&tl, 2, 2));
        let line = element(&svg, &format!("data-send=\"e{a2}\" data-recv=\"e{b2}\""));
        let from = element(&svg, &format!("id=\"e{a2}\""));
        let to = element(&svg, &format!("id=\"e{b2}\""));
        assert_eq!(attr(line, "x1"), attr(from, "cx"));
        assert_eq!(attr(line, "y1"), attr(from, "cy"));
        assert_eq!(attr(line, "x2"), attr(to, "cx"));
        assert_eq!(attr(line, "y2"), attr(to, "cy"));
        assert!(line.contains("marker-end"));
        // node 1's line and node 2's line differ: the arrow goes between nodes
        assert_ne!(attr(line, "y1"), attr(line, "y2"));
        assert_eq!(svg.matches("class=\"msg\" data-send").count(), 2);
        assert_eq!(svg.matches("class=\"msg lost\" data-send").count(), 1);
    }

    #[test]
    fn concurrent_events_are_marked() {
        let tl = merge(sample());
        let svg = render_svg(&tl);
        let (a1, b1, c1) = (ix(&tl, 1, 1), ix(&tl, 2, 1), ix(&tl, 3, 1));
        // a1, b1, c1 share column 0, which is shaded, and their dots stand in that band
        assert_eq!(tl.column(a1), 0);
        let band = element(&svg, "data-col=\"0\"");
        let bx: u32 = attr(band, "x").parse().unwrap();
        let bw: u32 = attr(band, "width").parse().unwrap();
        for e in [a1, b1, c1] {
            let cx: u32 = attr(element(&svg, &format!("id=\"e{e}\"")), "cx")
                .parse()
                .unwrap();
            assert!(bx < cx && cx < bx + bw);
        }
        // a column holding a single event is not shaded
        let single: Vec<u32> = (0..tl.columns())
            .filter(|&c| (0..tl.len()).filter(|&i| tl.column(i) == c).count() == 1)
            .collect();
        for c in single {
            assert!(!svg.contains(&format!("data-col=\"{c}\"")));
        }
        // tooltips carry the concurrency count; dots carry the clocks the click handler uses
        assert!(svg.contains(&format!(
            "concurrent with {} events",
            tl.concurrent_count(a1)
        )));
        assert!(element(&svg, &format!("id=\"e{a1}\"")).contains("data-c=\"1,0,0\""));
    }

    #[test]
    fn large_traces_are_capped_to_a_window_of_columns() {
        let mut ts: Vec<Tracer> = (1..=5).map(Tracer::new).collect();
        let mut ev = Vec::new();
        for round in 0..2_000u64 {
            let from = (round % 5) as usize;
            let to = ((round * 7 + 3) % 5) as usize;
            if from == to {
                ts[from].local("tick", round);
            } else {
                let st = ts[from].send(to as u64 + 1, "append", round);
                ts[to].recv(from as u64 + 1, &st, "append", round);
            }
        }
        for t in &mut ts {
            t.drain(&mut ev);
        }
        let t0 = std::time::Instant::now();
        let tl = merge(ev);
        let merged = t0.elapsed();
        assert!(tl.columns() > 300);
        let svg = render_svg(&tl);
        eprintln!(
            "trace: {} events, {} columns, merged in {:?}, svg {} KiB",
            tl.len(),
            tl.columns(),
            merged,
            svg.len() / 1024
        );
        check_xml(&svg);
        let dots = svg.matches("<circle id=").count();
        let expected = (0..tl.len()).filter(|&i| tl.column(i) < 300).count();
        assert_eq!(dots, expected);
        assert!(svg.contains(&format!("columns 1–300 of {}", tl.columns())));
        let later = render_svg_with(
            &tl,
            &SvgOptions {
                first_column: 300,
                max_columns: 100,
                labels: false,
            },
        );
        check_xml(&later);
        assert!(later.contains("columns 301–400"));
        assert!(!later.contains("rotate(-35"));
    }

    #[test]
    fn html_page_embeds_the_svg_and_a_table() {
        let tl = merge(sample());
        let html = render_html(&tl);
        assert!(html.contains("<svg "));
        assert_eq!(html.matches("<tr onclick").count(), tl.len());
        let body = &html[html.find("<body>").unwrap()..html.find("</html>").unwrap()];
        check_xml(body);
    }

    #[test]
    fn empty_trace_renders() {
        let tl = merge(Vec::new());
        assert!(tl.is_empty());
        check_xml(&render_svg(&tl));
        check_xml(
            &render_html(&tl)[render_html(&tl).find("<body>").unwrap()..].replace("</html>", ""),
        );
    }
}
