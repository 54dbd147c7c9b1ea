//! Pure string helpers shared by the NetSapiens client and the status step.

/// `text` cut to at most `max_bytes` bytes at a character boundary, with `…` appended when
/// something was cut (Kubernetes limits an Event's note to 1 KiB; server text in a message is
/// kept short).
pub fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly", 7), "exactly");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ab cdef", 3), "ab…");
        // 'é' is two bytes: a cut inside it moves back to the boundary.
        assert_eq!(truncate("aéb", 2), "a…");
        assert_eq!(truncate("", 0), "");
    }
}
