//! Text layout for the command line's tables.

/// Which side of its column a value sits on.
pub enum Align {
    Left,
    Right,
}

/// `s` padded with spaces to `width` characters. Not `format!("{s:<w$}")`: format widths above
/// 65,535 panic, and a feature value can be longer than that.
pub fn padded(s: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(s.chars().count()));
    match align {
        Align::Left => format!("{s}{fill}"),
        Align::Right => format!("{fill}{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_by_characters_to_any_width() {
        assert_eq!(padded("ab", 4, Align::Left), "ab  ");
        assert_eq!(padded("äb", 4, Align::Right), "  äb");
        assert_eq!(padded("abcdef", 3, Align::Right), "abcdef");
        // Wider than `format!` allows (65,535), which a long feature value can ask for.
        let long = "x".repeat(70_000);
        assert_eq!(padded(&long, 70_001, Align::Left).len(), 70_001);
    }
}
