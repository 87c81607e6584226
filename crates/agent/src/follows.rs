//! Who follows which started process's output, bounded, and ended when its
//! requester is gone.
//!
//! A follow streams every output chunk of a process to its requester, so
//! each one multiplies what the agent sends: unbounded, a viewer asking for
//! 1,500 follows of one chatty process made the agent send tens of
//! thousands of frames a second, until the gateway closed it for it. So
//! there are three caps: per requester (a newer follow ends that
//! requester's oldest, which is what a console switching between
//! processes wants), per process and per agent (past these a follow is
//! refused with `limit`). And a follow ends as soon as its requester is
//! gone: the agent identifies without presence (a fleet's hosts need no
//! news of each other's clients), so it learns of it from the gateway's
//! answer to the next event it sends there, `INVALID_UUID`, or to the
//! `CLIENT_FETCH` it sends for each requester every few seconds (a quiet
//! process's follow sends no events).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use tokio::sync::watch;
use uuid::Uuid;

use concierge_protocol::agent::{Failure, Reason};

/// The caps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Follows the agent streams at once.
    pub total: usize,
    /// Follows one requester holds; a newer one ends its oldest.
    pub per_requester: usize,
    /// Follows of one process.
    pub per_process: usize,
}

/// Why a follow was ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The requester left: nothing more is sent.
    Gone,
    /// A newer follow of the same requester took its place.
    Replaced,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    pid: Option<u32>,
    end: watch::Sender<Option<End>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Each requester's follows, oldest first.
    by_requester: HashMap<Uuid, VecDeque<Entry>>,
}

impl Inner {
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_requester.values().flatten()
    }
}

/// The follows of this agent. Cheap to clone; lives on the agent's thread.
#[derive(Debug, Clone)]
pub struct Follows {
    inner: Rc<RefCell<Inner>>,
    caps: Caps,
}

/// One admitted follow: it counts until dropped, and `end` says when it
/// was ended from outside.
#[derive(Debug)]
pub struct Ticket {
    follows: Follows,
    requester: Uuid,
    id: u64,
    pub end: watch::Receiver<Option<End>>,
}

impl Follows {
    pub fn new(caps: Caps) -> Follows {
        Follows {
            inner: Rc::default(),
            caps,
        }
    }

    /// Admits a follow of `pid` (`None`: a process about to start, which
    /// nobody follows yet) by `requester`, or refuses it with `limit`.
    pub fn admit(&self, requester: Uuid, pid: Option<u32>) -> Result<Ticket, Failure> {
        let mut inner = self.inner.borrow_mut();
        if let Some(pid) = pid {
            let followers = inner.entries().filter(|e| e.pid == Some(pid)).count();
            if followers >= self.caps.per_process {
                return Err(Failure::new(
                    Reason::Limit,
                    format!(
                        "process {pid} is followed {followers} times, the most this agent \
                         streams one process (max_follows_per_process)"
                    ),
                ));
            }
        }
        let own = inner.by_requester.get(&requester).map_or(0, VecDeque::len);
        if own >= self.caps.per_requester {
            if let Some(oldest) = inner
                .by_requester
                .get_mut(&requester)
                .and_then(VecDeque::pop_front)
            {
                oldest.end.send_replace(Some(End::Replaced));
            }
        } else {
            let total: usize = inner.by_requester.values().map(VecDeque::len).sum();
            if total >= self.caps.total {
                return Err(Failure::new(
                    Reason::Limit,
                    format!(
                        "this agent streams {total} follows, the most it streams at once \
                         (max_follows)"
                    ),
                ));
            }
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let (end, ended) = watch::channel(None);
        inner
            .by_requester
            .entry(requester)
            .or_default()
            .push_back(Entry { id, pid, end });
        Ok(Ticket {
            follows: self.clone(),
            requester,
            id,
            end: ended,
        })
    }

    /// The requesters that hold follows.
    pub fn requesters(&self) -> Vec<Uuid> {
        self.inner.borrow().by_requester.keys().copied().collect()
    }

    /// Ends every follow of `requester`, which is gone.
    pub fn gone(&self, requester: Uuid) {
        let ended = self.inner.borrow_mut().by_requester.remove(&requester);
        for entry in ended.into_iter().flatten() {
            entry.end.send_replace(Some(End::Gone));
        }
    }
}

impl Ticket {
    /// The per-requester cap, for the message of a replaced follow.
    pub fn per_requester(&self) -> usize {
        self.follows.caps.per_requester
    }

    /// Names the process once it started (see [`Follows::admit`]).
    pub fn set_pid(&self, pid: u32) {
        let mut inner = self.follows.inner.borrow_mut();
        if let Some(entry) = inner
            .by_requester
            .get_mut(&self.requester)
            .and_then(|entries| entries.iter_mut().find(|e| e.id == self.id))
        {
            entry.pid = Some(pid);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.follows.inner.borrow_mut();
        if let Some(entries) = inner.by_requester.get_mut(&self.requester) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                inner.by_requester.remove(&self.requester);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_replace_and_release() {
        let follows = Follows::new(Caps {
            total: 3,
            per_requester: 2,
            per_process: 2,
        });
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a1 = follows.admit(a, Some(1)).expect("first");
        let _a2 = follows.admit(a, Some(2)).expect("second");
        // A third of a's ends its oldest.
        let a3 = follows.admit(a, Some(2)).expect("replaces");
        assert_eq!(*a1.end.borrow(), Some(End::Replaced));
        drop(a1);
        // Process 2 is followed twice.
        let refused = follows.admit(b, Some(2)).expect_err("per process");
        assert_eq!(refused.reason, Reason::Limit);
        let b1 = follows.admit(b, None).expect("third in all");
        b1.set_pid(3);
        let refused = follows.admit(c, Some(4)).expect_err("total");
        assert_eq!(refused.reason, Reason::Limit);
        follows.gone(a);
        assert_eq!(*a3.end.borrow(), Some(End::Gone));
        drop(a3);
        follows.admit(c, Some(4)).expect("room again");
    }
}
