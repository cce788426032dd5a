//! What boxsock itself prints (errors, warnings, tables) is escaped before it reaches a
//! terminal: a path, a link target or a value another user chose must not carry escape
//! sequences (window titles, OSC 52 clipboard writes, screen clears) into the owner's
//! terminal. Messages already quote what they echo (`boxsock_core::echo`); this is the
//! backstop for text from elsewhere (a third-party strategy's reason, an OS error, clap's
//! echo of a rejected value). A command's own output (`run`, `exec`, `logs`) is the
//! command's and is never touched.

use std::borrow::Cow;

/// Most bytes of one printed line; a longer one keeps its head and tail.
pub const LINE_MAX: usize = 1024;

/// `text` with every control character but the newline (C0, DEL, C1) written as
/// `\u{..}`. With `allow_sgr`, colour sequences (`ESC [ digits;… m`, which only change
/// colours and weight) are kept, for the log lines coloured on a terminal.
pub fn escape_controls(text: &str, allow_sgr: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if allow_sgr && c == '\x1b' {
            if let Some(len) = sgr_len(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The length of the SGR sequence `ESC [ [0-9;]* m` at the start of `s`, if there is one.
fn sgr_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() < 3 || b[1] != b'[' {
        return None;
    }
    let params = b[2..].iter().take_while(|c| c.is_ascii_digit() || **c == b';').count();
    (b.get(2 + params) == Some(&b'm')).then_some(3 + params)
}

/// Every line of `text` escaped and at most [`LINE_MAX`] bytes: a longer line keeps its
/// first and last `LINE_MAX / 2 - 32` bytes and says how long it was.
pub fn for_terminal(text: &str) -> String {
    let escaped = escape_controls(text, false);
    let keep = LINE_MAX / 2 - 32;
    escaped
        .split('\n')
        .map(|line| {
            if line.len() <= LINE_MAX {
                return line.to_owned();
            }
            let mut head = keep;
            while !line.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = line.len() - keep;
            while !line.is_char_boundary(tail) {
                tail += 1;
            }
            format!("{}… ({} bytes) …{}", &line[..head], line.len(), &line[tail..])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON text with the C1 controls and DEL (which `serde_json` leaves raw) escaped as
/// `\u00XX`: still the same JSON, and nothing a terminal acts on. They can only occur
/// inside strings, where that escape is valid.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(char::is_control) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A `tracing` writer that escapes what it is given (see [`escape_controls`]).
pub struct Escaping {
    /// Keep colour sequences (logs coloured on a terminal).
    pub allow_sgr: bool,
}

impl std::io::Write for Escaping {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let shown = escape_controls(&text, self.allow_sgr);
        std::io::stderr().write_all(shown.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_colours_kept_only_when_asked() {
        let hostile = "a\x1b]0;T\x07b\u{9b}2J\x1b[2Jc\x1b[31mred\x1b[0m\n";
        assert_eq!(
            escape_controls(hostile, false),
            "a\\u{1b}]0;T\\u{7}b\\u{9b}2J\\u{1b}[2Jc\\u{1b}[31mred\\u{1b}[0m\n"
        );
        assert_eq!(
            escape_controls(hostile, true),
            "a\\u{1b}]0;T\\u{7}b\\u{9b}2J\\u{1b}[2Jc\x1b[31mred\x1b[0m\n"
        );
        assert!(matches!(escape_controls("plain\n", false), Cow::Borrowed(_)));
    }

    #[test]
    fn long_lines_are_bounded_with_head_tail_and_length() {
        let line = format!("error: invalid value '{}' for '--lock-wait <SECS>'", "x".repeat(5000));
        let shown = for_terminal(&line);
        assert!(shown.len() <= LINE_MAX + 32, "{}", shown.len());
        assert!(
            shown.starts_with("error: invalid value 'xxx")
                && shown.ends_with("for '--lock-wait <SECS>'"),
            "{shown}"
        );
        assert!(shown.contains(&format!("({} bytes)", line.len())));
    }

    #[test]
    fn json_stays_json() {
        let v = serde_json::json!({ "home": "/x\u{9b}\x1b]0;T\x07" });
        let s = serde_json::to_string_pretty(&v).unwrap();
        let shown = json_for_terminal(&s);
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap(), v);
    }
}
