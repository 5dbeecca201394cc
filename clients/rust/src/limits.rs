//! Every range and default of the queue model's API, named once: the server enforces them and
//! the client sizes its calls with them. The proto's doc comments and the README quote these
//! numbers; change them together. (Server settings, such as how many queues a server holds, are
//! the server's own.)

use std::ops::RangeInclusive;

/// Queue names: 1 to this many characters.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

/// Seconds a received message stays invisible.
pub const VISIBILITY_TIMEOUT_SECONDS: RangeInclusive<u32> = 1..=43_200;
pub const DEFAULT_VISIBILITY_TIMEOUT_SECONDS: u32 = 30;
/// ChangeMessageVisibility's timeout, from now: 0 makes the message visible at once (a nack).
pub const CHANGE_VISIBILITY_SECONDS: RangeInclusive<u32> = 0..=43_200;

/// Seconds a receive waits for a message.
pub const POLLING_WAIT_SECONDS: RangeInclusive<u32> = 0..=30;
pub const DEFAULT_POLLING_WAIT_SECONDS: u32 = 0;

/// Largest body, in bytes.
pub const MAX_MESSAGE_SIZE: RangeInclusive<u32> = 1_024..=1_048_576;
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 65_536;

/// Seconds a message is kept after it was sent (15 days at most).
pub const MESSAGE_RETENTION_SECONDS: RangeInclusive<u32> = 60..=1_296_000;
pub const DEFAULT_MESSAGE_RETENTION_SECONDS: u32 = 345_600;

/// Rewind window; its upper bound is the queue's retention. 0 turns rewind off.
pub const DEFAULT_REWIND_SECONDS: u32 = 0;

/// Messages a queue holds at most (visible + in flight + delayed).
pub const MAX_BACKLOG: RangeInclusive<u64> = 1..=1_000_000_000;
pub const DEFAULT_MAX_BACKLOG: u64 = 100_000_000;

/// Bytes a queue holds at most (bodies and attributes of its messages, rewindable ones too);
/// 0 means no quota.
pub const MAX_BYTES: RangeInclusive<u64> = 0..=1 << 50;
pub const DEFAULT_MAX_BYTES: u64 = 0;

/// Entries of a batch send, messages of a receive, handles of a batch delete.
pub const MAX_BATCH: usize = 16;

/// Attributes of one message, at most.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 16;
/// Length of an attribute's key, in characters (letters, digits, '-', '_', '.').
pub const ATTRIBUTE_KEY_LEN: RangeInclusive<usize> = 1..=64;

/// Length of a send's `deduplication_id`, in printable ASCII characters.
pub const DEDUPLICATION_ID_LEN: RangeInclusive<usize> = 1..=128;
/// Seconds a queue remembers a send's `deduplication_id`; 0 turns deduplication off.
pub const DEDUPLICATION_WINDOW_SECONDS: RangeInclusive<u32> = 0..=86_400;
pub const DEFAULT_DEDUPLICATION_WINDOW_SECONDS: u32 = 300;

/// A dead-letter policy's receives before a message is moved to its dead-letter queue.
pub const MAX_RECEIVE_COUNT: RangeInclusive<u32> = 1..=1_000;
/// A dead-letter policy's time to live, in seconds, when not 0 (off).
pub const DEAD_LETTER_TIME_TO_LIVE_SECONDS: RangeInclusive<u32> = 300..=43_200;
/// Messages one RedriveMessages moves: 0 means all the visible ones, up to this many.
pub const MAX_REDRIVE_MESSAGES: u32 = 100_000;

/// A consumer stream's messages pushed and not yet acknowledged (StreamMessages'
/// `max_outstanding_messages`), and the default when the request says 0.
pub const MAX_OUTSTANDING_MESSAGES: RangeInclusive<usize> = 1..=1_000;
pub const DEFAULT_MAX_OUTSTANDING_MESSAGES: usize = 100;

/// ListQueues page size when the request says 0, and the largest allowed.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Room in a request beyond its bodies: the queue name, field tags and lengths (a full batch of
/// the largest bodies spends a few hundred bytes of it).
pub const REQUEST_OVERHEAD_BYTES: usize = 64 * 1024;

/// Largest gRPC request: a full batch of the largest bodies, plus [`REQUEST_OVERHEAD_BYTES`].
/// tonic's default (4 MiB) would refuse a legal 16 × 1 MiB batch. A larger request fails with
/// INVALID_ARGUMENT, reason TOO_LARGE, cmq_code 4400.
pub const MAX_REQUEST_BYTES: usize =
    MAX_BATCH * (*MAX_MESSAGE_SIZE.end() as usize) + REQUEST_OVERHEAD_BYTES;

/// The largest SendMessage request (the server refuses larger ones as TOO_LARGE): one body of the largest size, plus the queue name and
/// field tags (a few hundred bytes; 4 KiB leaves room).
pub const MAX_SEND_REQUEST_BYTES: usize = *MAX_MESSAGE_SIZE.end() as usize + 4 * 1024;
/// The largest request of every call that carries no bodies (queue administration, receive,
/// delete): names, attributes and up to 16 receipt handles take a few KiB at most.
pub const MAX_CONTROL_REQUEST_BYTES: usize = 64 * 1024;

/// Checks a queue name: 1 to 64 characters, a letter first, then letters, digits, '-' or '_'.
/// The error is the whole message, naming the rule (the server answers it as INVALID_ARGUMENT).
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let invalid = |why: &str| {
        // Quote at most a name's worth of it: the message travels in a header.
        let shown: String = name.chars().take(MAX_QUEUE_NAME_LEN).collect();
        let ellipsis = if shown.len() < name.len() { "..." } else { "" };
        format!(
            "queue_name {shown:?}{ellipsis} {why}; a name is 1..={MAX_QUEUE_NAME_LEN} characters: \
             a letter first, then letters, digits, '-' or '_'"
        )
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("is empty")),
        Some(first) if !first.is_ascii_alphabetic() => {
            return Err(invalid("does not start with a letter"));
        }
        Some(_) => {}
    }
    if name.len() > MAX_QUEUE_NAME_LEN {
        return Err(invalid("is too long"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(invalid("has a character that is not allowed"));
    }
    Ok(())
}

/// Checks the attributes of one message: how many, and each key's length and characters.
/// `field` names them in the error (`attributes`, `entries[2].attributes`). Their size is the
/// queue's to check (see [`attributes_size`]).
pub fn check_message_attributes<'a>(
    field: &str,
    attributes: impl ExactSizeIterator<Item = &'a String>,
) -> Result<(), String> {
    let count = attributes.len();
    if count > MAX_MESSAGE_ATTRIBUTES {
        return Err(format!(
            "{field} has {count} entries; a message has at most {MAX_MESSAGE_ATTRIBUTES}"
        ));
    }
    for key in attributes {
        let valid_chars = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ATTRIBUTE_KEY_LEN.contains(&key.len()) || !valid_chars {
            let shown: String = key.chars().take(*ATTRIBUTE_KEY_LEN.end()).collect();
            return Err(format!(
                "{field} has the key {shown:?}; a key is {}..={} characters of letters, digits, \
                 '-', '_' and '.'",
                ATTRIBUTE_KEY_LEN.start(),
                ATTRIBUTE_KEY_LEN.end()
            ));
        }
    }
    Ok(())
}

/// The bytes attributes count toward a queue's `max_message_size`: every key and value, in
/// UTF-8.
pub fn attributes_size<'a>(
    attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> usize {
    attributes
        .into_iter()
        .map(|(key, value)| key.len() + value.len())
        .sum()
}

/// Checks a send's `deduplication_id` (empty means none): 1..=128 printable ASCII characters.
pub fn check_deduplication_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Ok(());
    }
    let printable = id.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if !DEDUPLICATION_ID_LEN.contains(&id.len()) || !printable {
        return Err(format!(
            "{field} is {} bytes{}; it must be {}..={} printable ASCII characters (0x20..0x7E)",
            id.len(),
            if printable {
                ""
            } else {
                " with a character that is not printable ASCII"
            },
            DEDUPLICATION_ID_LEN.start(),
            DEDUPLICATION_ID_LEN.end()
        ));
    }
    Ok(())
}
