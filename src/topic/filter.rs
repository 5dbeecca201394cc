//! Which subscriptions a message goes to: CMQ's two filter types.
//!
//! - Tags: a message carries up to [`MAX_TAGS`] tags; a subscription with filter tags gets the
//!   message if any of its tags is among them. A subscription without filter tags gets every
//!   message, tagged or not; a message without tags goes only to those.
//! - Routing keys: a message carries one routing key, words separated by dots
//!   (`order.eu.created`); a subscription's binding keys are patterns of words where `*` stands
//!   for exactly one word and `#` for zero or more. A subscription gets the message if any of
//!   its binding keys matches. A subscription without binding keys gets every message.

use crate::error::QueueError;

/// Most tags one message carries, and most filter tags or binding keys one subscription has.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Longest routing key or binding key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Most words in a routing key or binding key.
pub const MAX_KEY_WORDS: usize = 16;

/// Whether a message with `tags` goes to a subscription with `filter_tags`.
pub fn tags_match(filter_tags: &[String], tags: &[String]) -> bool {
    filter_tags.is_empty() || filter_tags.iter().any(|filter| tags.contains(filter))
}

/// Whether a message with `routing_key` goes to a subscription with `binding_keys`.
pub fn routing_key_matches(binding_keys: &[String], routing_key: &str) -> bool {
    if binding_keys.is_empty() {
        return true;
    }
    let words: Vec<&str> = routing_key.split('.').collect();
    binding_keys.iter().any(|binding| {
        let pattern: Vec<&str> = binding.split('.').collect();
        words_match(&pattern, &words)
    })
}

/// Matches pattern words against key words: `*` takes exactly one word, `#` any number (zero
/// included). Dynamic programming over (pattern, key) positions, so patterns with many `#` do
/// not backtrack exponentially; both sides are at most [`MAX_KEY_WORDS`] long.
fn words_match(pattern: &[&str], words: &[&str]) -> bool {
    // matched[j]: the pattern so far matches the first j words.
    let mut matched = vec![false; words.len() + 1];
    matched[0] = true;
    for part in pattern {
        let mut next = vec![false; words.len() + 1];
        match *part {
            "#" => {
                let mut reachable = false;
                for j in 0..=words.len() {
                    reachable |= matched[j];
                    next[j] = reachable;
                }
            }
            _ => {
                for j in 0..words.len() {
                    if matched[j] && (*part == "*" || *part == words[j]) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        matched = next;
    }
    matched[words.len()]
}

/// Checks a message's tags or a subscription's filter tags; `field` names them in errors.
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), QueueError> {
    if tags.len() > MAX_TAGS {
        return Err(QueueError::InvalidArgument(format!(
            "{field} has {} items; at most {MAX_TAGS}",
            tags.len()
        )));
    }
    for (index, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || tag.chars().any(char::is_control) {
            return Err(QueueError::InvalidArgument(format!(
                "{field}[{index}] is {} bytes; a tag is 1..={MAX_TAG_LEN} bytes without control \
                 characters",
                tag.len()
            )));
        }
    }
    Ok(())
}

/// Checks a routing key (`binding` false) or a binding key (`binding` true): 1..=16 words of
/// letters, digits, `-` and `_`, separated by single dots, at most [`MAX_KEY_LEN`] bytes; a
/// binding key's words may also be `*` or `#`.
pub fn check_key(field: &str, key: &str, binding: bool) -> Result<(), QueueError> {
    let allowed = if binding {
        "words of letters, digits, '-' and '_' (or '*' for one word, '#' for any number)"
    } else {
        "words of letters, digits, '-' and '_'"
    };
    let bad = |why: &str| {
        QueueError::InvalidArgument(format!(
            "{field} {why}; it must be 1..={MAX_KEY_LEN} bytes: up to {MAX_KEY_WORDS} {allowed}, \
             separated by '.'"
        ))
    };
    if key.is_empty() {
        return Err(bad("is empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad(&format!("is {} bytes", key.len())));
    }
    let words: Vec<&str> = key.split('.').collect();
    if words.len() > MAX_KEY_WORDS {
        return Err(bad(&format!("has {} words", words.len())));
    }
    for word in words {
        let wildcard = binding && (word == "*" || word == "#");
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !wildcard && !plain {
            return Err(bad(&format!("has the word {word:?}")));
        }
    }
    Ok(())
}

/// Checks a subscription's binding keys; `field` names them in errors.
pub fn check_binding_keys(field: &str, keys: &[String]) -> Result<(), QueueError> {
    if keys.len() > MAX_TAGS {
        return Err(QueueError::InvalidArgument(format!(
            "{field} has {} items; at most {MAX_TAGS}",
            keys.len()
        )));
    }
    for (index, key) in keys.iter().enumerate() {
        check_key(&format!("{field}[{index}]"), key, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_star_is_exactly_one_word() {
        let binding = keys(&["order.*.created"]);
        assert!(routing_key_matches(&binding, "order.eu.created"));
        assert!(!routing_key_matches(&binding, "order.created"));
        assert!(!routing_key_matches(&binding, "order.eu.west.created"));
        assert!(!routing_key_matches(&binding, "order.eu.deleted"));
    }

    #[test]
    fn a_hash_is_zero_or_more_words() {
        let binding = keys(&["order.#"]);
        assert!(routing_key_matches(&binding, "order"));
        assert!(routing_key_matches(&binding, "order.eu"));
        assert!(routing_key_matches(&binding, "order.eu.west.created"));
        assert!(!routing_key_matches(&binding, "invoice.eu"));
        let middle = keys(&["order.#.created"]);
        assert!(routing_key_matches(&middle, "order.created"));
        assert!(routing_key_matches(&middle, "order.eu.west.created"));
        assert!(!routing_key_matches(&middle, "order.eu.deleted"));
        assert!(routing_key_matches(&keys(&["#"]), "anything.at.all"));
        assert!(routing_key_matches(&keys(&["#.#.x"]), "x"));
    }

    #[test]
    fn exact_words_match_only_themselves_and_any_binding_key_suffices() {
        let binding = keys(&["a.b", "c.*"]);
        assert!(routing_key_matches(&binding, "a.b"));
        assert!(routing_key_matches(&binding, "c.d"));
        assert!(!routing_key_matches(&binding, "a.b.c"));
        assert!(!routing_key_matches(&binding, "a"));
        assert!(routing_key_matches(&[], "whatever"));
    }

    #[test]
    fn many_hashes_do_not_backtrack() {
        let pattern = vec!["#"; MAX_KEY_WORDS].join(".") + ".z";
        let key = vec!["a"; MAX_KEY_WORDS].join(".");
        assert!(!routing_key_matches(&[pattern], &key));
    }

    #[test]
    fn tags_match_any_and_no_filter_takes_all() {
        assert!(tags_match(
            &keys(&["red", "blue"]),
            &keys(&["green", "blue"])
        ));
        assert!(!tags_match(&keys(&["red"]), &keys(&["green"])));
        assert!(!tags_match(&keys(&["red"]), &[]));
        assert!(tags_match(&[], &[]));
        assert!(tags_match(&[], &keys(&["green"])));
    }

    #[test]
    fn keys_are_checked_with_the_field_named() {
        assert!(check_key("routing_key", "order.eu", false).is_ok());
        let error = check_key("routing_key", "order.*", false).unwrap_err();
        assert!(error.to_string().contains("routing_key"), "{error}");
        assert!(check_key("binding_keys[0]", "order.*.#", true).is_ok());
        assert!(check_key("k", "a..b", true).is_err());
        assert!(check_key("k", "", true).is_err());
        assert!(check_key("k", &"a".repeat(MAX_KEY_LEN + 1), false).is_err());
        let error = check_tags("tags", &keys(&["ok", ""])).unwrap_err();
        assert!(error.to_string().contains("tags[1]"), "{error}");
    }
}
