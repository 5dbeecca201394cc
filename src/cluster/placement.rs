//! Where a queue belongs: rendezvous (highest-random-weight) hashing of the queue's name over the
//! live members. Every replica computes the same answer from the same member list, with no
//! coordination; when a member joins or leaves, only the queues whose winner changes move
//! (about 1/n of them).
//!
//! The hash is spelled out here (FNV-1a, then a 64-bit finaliser) rather than taken from the
//! standard library, whose hasher may change between Rust releases: replicas of two versions
//! during a rolling upgrade must still agree.

/// The member that should own `queue`: the one with the highest weight for it; None when there
/// are no members.
pub fn place<'a>(queue: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|member| (weight(member, queue), *member))
}

/// The weight of `member` for `queue`.
fn weight(member: &str, queue: &str) -> u64 {
    let mut hash = FNV_OFFSET;
    for byte in member
        .as_bytes()
        .iter()
        // A separator no name contains, so ("ab", "c") and ("a", "bc") differ.
        .chain(&[0xff])
        .chain(queue.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    mix(hash)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The splitmix64 finaliser: FNV alone spreads similar inputs poorly in the high bits.
fn mix(mut value: u64) -> u64 {
    value ^= value >> 30;
    value = value.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value ^= value >> 27;
    value = value.wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_agrees_and_order_does_not_matter() {
        let members = ["m-a", "m-b", "m-c"];
        let reversed = ["m-c", "m-b", "m-a"];
        for index in 0..100 {
            let queue = format!("queue-{index}");
            assert_eq!(place(&queue, members), place(&queue, reversed));
        }
        assert_eq!(place("q", std::iter::empty::<&str>()), None);
    }

    #[test]
    fn queues_spread_and_only_the_leavers_move() {
        let members = ["m-a", "m-b", "m-c"];
        let queues: Vec<String> = (0..3_000).map(|index| format!("queue-{index}")).collect();
        let mut counts = std::collections::HashMap::new();
        for queue in &queues {
            *counts
                .entry(place(queue, members).expect("a member"))
                .or_insert(0) += 1;
        }
        for member in members {
            // 1000 each expected; a generous band, not a statistics test.
            let count = counts[member];
            assert!((700..1_300).contains(&count), "{member}: {count}");
        }
        // m-c leaves: its queues go to the others; no other queue moves.
        for queue in &queues {
            let before = place(queue, members).expect("a member");
            let after = place(queue, ["m-a", "m-b"]).expect("a member");
            if before != "m-c" {
                assert_eq!(before, after, "{queue} moved though its owner stayed");
            }
        }
    }
}
