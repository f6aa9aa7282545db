//! The ops a case is made of, and the strategies proptest draws them
//! from.

use proptest::prelude::*;

use crate::{HOUR_MS, TIMEOUT_MS};

/// Four devices: each has its own fingerprint (`fp-A`...) that a start
/// sends when it says so; `Nameless` sends no device name. Two starts of the
/// same device with `fp: true` are the same machine restarting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    A,
    B,
    C,
    Nameless,
}

impl Device {
    /// The name it sends (and the server reports), if any.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Device::A => Some("A"),
            Device::B => Some("B"),
            Device::C => Some("C"),
            Device::Nameless => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Takeover,
    Reject,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Takeover => "takeover",
            Policy::Reject => "reject",
        }
    }
}

/// One step. `s` picks a session this case has started (the `s % n`-th,
/// in start order); `s == 7`, or no session yet, means an id no key ever
/// had; for a heartbeat or an end, `s == 6` means the other key's latest
/// session (see `StartElsewhere`), which this key never had either. `sid: Some(n)` is the client's own session id number `n` (a retry
/// when `n` was used before); `None` lets the server pick one.
#[derive(Debug, Clone)]
pub enum Op {
    Start {
        device: Device,
        sid: Option<u8>,
        fp: bool,
    },
    /// `POST /api/session/borrow` for `hours` (0 and over the key's
    /// limit are refused).
    Borrow {
        device: Device,
        sid: Option<u8>,
        fp: bool,
        hours: u32,
    },
    /// `PATCH {"max_borrow_hours": n}`.
    SetBorrow(u32),
    Heartbeat {
        s: u8,
    },
    End {
        s: u8,
    },
    Status,
    /// `DELETE /api/admin/sessions/{id}`.
    Kick {
        s: u8,
    },
    /// `POST /api/admin/keys/{id}/revoke`.
    Revoke,
    /// `PATCH {"max_sessions": n}`.
    SetSeats(u32),
    /// `PATCH {"on_conflict": ...}`.
    SetPolicy(Policy),
    /// `PATCH {"status": "suspended"}`.
    Suspend,
    /// `PATCH {"status": "active"}`.
    Resume,
    /// Moves the server's clock forward.
    Advance {
        ms: i64,
    },
    /// A start with the client's own id `sid` on *another* key (one seat,
    /// takeover, no heartbeats): session ids are unique across keys.
    StartElsewhere {
        sid: u8,
    },
    /// `PATCH {"expires_at": now + in_ms}` (in the past when negative).
    /// Only in the key-expiry test.
    ExpireKey {
        in_ms: i64,
    },
    /// `PATCH {"expires_at": null}`. Only in the key-expiry test.
    ClearExpiry,
}

pub fn device() -> impl Strategy<Value = Device> {
    prop_oneof![
        3 => Just(Device::A),
        3 => Just(Device::B),
        3 => Just(Device::C),
        1 => Just(Device::Nameless),
    ]
}

pub fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Takeover), Just(Policy::Reject)]
}

/// The ops; `key_expiry` adds setting and clearing the key's `expires_at`.
pub fn op(key_expiry: bool) -> BoxedStrategy<Op> {
    let common = prop_oneof![
        6 => (device(), proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(device, sid, fp)| Op::Start { device, sid, fp }),
        2 => (device(), proptest::option::of(0u8..4), any::<bool>(), 0u32..=3)
            .prop_map(|(device, sid, fp, hours)| Op::Borrow { device, sid, fp, hours }),
        1 => prop_oneof![Just(0u32), Just(2u32)].prop_map(Op::SetBorrow),
        5 => (0u8..8).prop_map(|s| Op::Heartbeat { s }),
        2 => (0u8..8).prop_map(|s| Op::End { s }),
        2 => Just(Op::Status),
        1 => (0u8..8).prop_map(|s| Op::Kick { s }),
        1 => (0u8..4).prop_map(|sid| Op::StartElsewhere { sid }),
        1 => (1u32..=3).prop_map(Op::SetSeats),
        1 => policy().prop_map(Op::SetPolicy),
        1 => prop_oneof![2 => Just(Op::Suspend), 3 => Just(Op::Resume), 1 => Just(Op::Revoke)],
        4 => prop_oneof![
            // Small steps, and the edges of the timeout: one millisecond
            // short of it, exactly it, past it.
            3 => (1i64..=20_000).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Advance { ms: 1 }),
            1 => Just(Op::Advance { ms: TIMEOUT_MS - 1 }),
            1 => Just(Op::Advance { ms: TIMEOUT_MS }),
            1 => (TIMEOUT_MS + 1..=3 * TIMEOUT_MS).prop_map(|ms| Op::Advance { ms }),
            // Past a borrow (1 or 2 hours), and to the millisecond of one.
            1 => prop_oneof![Just(HOUR_MS - 1), Just(HOUR_MS), Just(HOUR_MS + 1)]
                .prop_map(|ms| Op::Advance { ms }),
        ],
    ];
    if !key_expiry {
        return common.boxed();
    }
    prop_oneof![
        12 => common,
        2 => prop_oneof![
            1 => (-5_000i64..=0).prop_map(|in_ms| Op::ExpireKey { in_ms }),
            3 => (1i64..=90_000).prop_map(|in_ms| Op::ExpireKey { in_ms }),
        ],
        1 => Just(Op::ClearExpiry),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
pub struct Case {
    pub seats: u32,
    pub policy: Policy,
    /// The key's `max_borrow_hours` (0: off).
    pub borrow_hours: u32,
    pub ops: Vec<Op>,
}

pub fn case(key_expiry: bool) -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(1u32), Just(3u32)],
        policy(),
        prop_oneof![Just(0u32), Just(2u32)],
        prop::collection::vec(op(key_expiry), 1..40),
    )
        .prop_map(|(seats, policy, borrow_hours, ops)| Case {
            seats,
            policy,
            borrow_hours,
            ops,
        })
}
