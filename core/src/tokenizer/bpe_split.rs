//! The pre-tokenizer splits of byte-level BPE models, hand-coded (no regex engine) as llama.cpp's
//! `unicode_regex_split_custom_qwen2` matches its Qwen2 pattern
//! `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
//! ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` and `unicode_regex_split_custom_llama3` its
//! Llama 3 pattern (the same but `\p{N}{1,3}`), and the GPT-2 byte-to-char mapping the words are
//! written in before merging.
//!
//! A fragment of text (between special tokens) is cut into words left to right: each word is the
//! first alternative that matches at its start, and nothing past the fragment's end is seen. So
//! the words after a word end do not depend on the text before it.

use super::unicode::{is_letter, is_llama_whitespace, is_number};

/// The char starting at byte `at` of `s`, and its length; `None` at the end (or off a boundary).
fn char_at(s: &str, at: usize) -> Option<(char, usize)> {
    let c = s.get(at..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

/// Neither whitespace, letter nor number (`[^\s\p{L}\p{N}]`).
fn is_other(c: char) -> bool {
    !(is_llama_whitespace(c) || is_letter(c) || is_number(c))
}

fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// The end (a byte offset into `frag`) of the word that starts at byte `at` of `frag` (`at` a
/// char boundary before the end), numbers taken `digits` chars at most at a time (Qwen2: 1,
/// Llama 3: 3). `None` when the word, or the scan that decides where it ends, runs more than
/// `max` bytes past `at`. Reads at most `max` + 4 bytes.
pub(crate) fn word_end(frag: &str, at: usize, max: usize, digits: usize) -> Option<usize> {
    let (c0, n0) = char_at(frag, at)?;
    let p1 = at.checked_add(n0)?;
    let limit = at.saturating_add(max);
    let next = char_at(frag, p1);
    // Contractions: 's 't 'm 'd 're 've 'll, either case.
    if c0 == '\'' {
        if let Some((c1, n1)) = next {
            let l1 = c1.to_ascii_lowercase();
            let p2 = p1.saturating_add(n1);
            if matches!(l1, 's' | 't' | 'm' | 'd') {
                return Some(p2);
            }
            if let Some((c2, n2)) = char_at(frag, p2) {
                if matches!((l1, c2.to_ascii_lowercase()), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    return Some(p2.saturating_add(n2));
                }
            }
        }
    }
    // An optional non-letter, non-number, non-newline char, then letters.
    if !(is_newline(c0) || is_number(c0)) && (is_letter(c0) || next.is_some_and(|(c, _)| is_letter(c))) {
        return run(frag, p1, limit, is_letter);
    }
    if is_number(c0) {
        let mut end = p1;
        for _ in 1..digits {
            match char_at(frag, end) {
                Some((c, n)) if is_number(c) => end = end.saturating_add(n),
                _ => break,
            }
        }
        return Some(end);
    }
    // An optional space, other chars, then newlines. A space that ends the fragment is a word
    // of its own here too (llama.cpp sees no flags past the end).
    let (lead, first) = if c0 == ' ' { (p1, next.map(|(c, _)| c)) } else { (at, Some(c0)) };
    if first.is_none_or(is_other) {
        let end = run(frag, lead, limit, is_other)?;
        return run(frag, end, limit, is_newline);
    }
    // Whitespace: through the last newline of the run; else all of it but the last char when
    // something follows; else all of it.
    let (mut p, mut count, mut last_newline, mut last_start) = (at, 0usize, None, at);
    while let Some((c, n)) = char_at(frag, p) {
        if !is_llama_whitespace(c) {
            break;
        }
        last_start = p;
        p = p.saturating_add(n);
        if is_newline(c) {
            last_newline = Some(p);
        }
        count = count.saturating_add(1);
        if p > limit {
            return None;
        }
    }
    match last_newline {
        Some(end) => Some(end),
        None if count > 1 && p < frag.len() => Some(last_start),
        None if count > 0 => Some(p),
        None => Some(p1),
    }
}

/// The end of the run of chars where `keep` holds from byte `at` of `s`; `None` past `limit`.
fn run(s: &str, mut at: usize, limit: usize, keep: impl Fn(char) -> bool) -> Option<usize> {
    while let Some((c, n)) = char_at(s, at) {
        if !keep(c) {
            break;
        }
        at = at.saturating_add(n);
        if at > limit {
            return None;
        }
    }
    Some(at)
}

/// The char GPT-2's byte-level BPE writes byte `b` as: printable Latin-1 bytes (`!`..=`~`,
/// `¡`..=`¬`, `®`..=`ÿ`) as themselves, the other 68 as U+0100 onwards in byte order.
pub(crate) fn byte_char(b: u8) -> char {
    // The non-printable bytes before `b`: 0x00..=0x20 (33), then 0x7F..=0xA0 (34), then 0xAD.
    let rank = match b {
        0x00..=0x20 => u32::from(b),
        0x7F..=0xA0 => u32::from(b).saturating_sub(0x7F - 33),
        0xAD => 67,
        _ => return char::from(b),
    };
    char::from_u32(0x100 | rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> [&str; 16] {
        let mut out = [""; 16];
        let mut at = 0;
        let mut i = 0;
        while at < s.len() && i < out.len() {
            let end = word_end(s, at, 1000, 1).unwrap();
            out[i] = &s[at..end];
            at = end;
            i += 1;
        }
        out
    }

    #[test]
    fn qwen2_split() {
        let w = words("Hello world's 123 don'T  x!!\n\n  y   ");
        let want = [
            "Hello", " world", "'s", " ", "1", "2", "3", " don", "'T", " ", " x", "!!\n\n", " ", " y", "   ",
        ];
        assert_eq!(&w[..15], &want);
        let w = words("a\t\tb\r\n c.");
        assert_eq!(&w[..6], &["a", "\t", "\tb", "\r\n", " c", "."]);
        // A space ending the fragment stands alone; unassigned chars are "other" chars.
        assert_eq!(&words("x ")[..2], &["x", " "]);
        assert_eq!(&words(" \u{0378}\u{0378}")[..2], &[" \u{0378}\u{0378}", ""]);
    }

    #[test]
    fn llama3_takes_digits_three_at_a_time() {
        let ends: [Option<usize>; 4] = [0, 3, 6, 8].map(|at| word_end("1234567x ٣٤", at, 100, 3));
        assert_eq!(ends, [Some(3), Some(6), Some(7), Some(9)]);
        assert_eq!(word_end("x ٣٤٥٦", 1, 100, 3), Some(2));
        assert_eq!(word_end("٣٤٥٦", 0, 100, 3), Some(6));
    }

    #[test]
    fn long_words_are_refused() {
        assert_eq!(word_end("aaaa", 0, 3, 1), None);
        assert_eq!(word_end("aaaa", 0, 4, 1), Some(4));
    }

    #[test]
    fn byte_chars_are_gpt2s() {
        assert_eq!(byte_char(b'A'), 'A');
        assert_eq!(byte_char(b' '), '\u{120}');
        assert_eq!(byte_char(b'\n'), '\u{10A}');
        assert_eq!(byte_char(0xAD), '\u{143}');
        assert_eq!(byte_char(0x7F), '\u{121}');
        let mut seen = [false; 0x144];
        for b in 0..=255u8 {
            let c = byte_char(b) as usize;
            assert!(!seen[c]);
            seen[c] = true;
        }
    }
}
