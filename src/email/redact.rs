//! What a mail server or provider says when it refuses a message, made safe
//! to log and to record: servers echo the recipient (`550 5.1.1
//! <ada@example.com>: Recipient address rejected`) and may echo anything else
//! they were sent, and logs must hold no personal data, codes or tokens.

/// Longest message kept, in characters; a chatty server cannot fill the log.
const MAX_CHARS: usize = 200;

/// Characters that end a word: around an address they are `<…>`, quotes,
/// `mailto:`, or a list.
const SEPARATORS: &[char] = &['<', '>', '(', ')', '[', ']', '{', '}', '"', '\'', ',', ';', ':'];

/// `text` with every word holding an `@` replaced by `[address]`, every
/// token-like run (16 or more of `A-Z a-z 0-9 - _` with a digit or an
/// inner capital) by `[token]`, every run of 4 or more digits by `[digits]`
/// (SMTP reply and enhanced status codes, `550`, `5.1.1`, are kept), control
/// characters by spaces, and cut to [`MAX_CHARS`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS + 8));
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || SEPARATORS.contains(&c) {
            push_word(&mut out, &word);
            word.clear();
            out.push(if c.is_control() { ' ' } else { c });
        } else {
            word.push(c);
        }
    }
    push_word(&mut out, &word);
    match out.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

/// One word, redacted.
fn push_word(out: &mut String, word: &str) {
    if word.contains('@') {
        out.push_str("[address]");
        return;
    }
    // Within the word, each run of token characters on its own.
    let mut run = String::new();
    for c in word.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run.push(c);
        } else {
            push_run(out, &run);
            run.clear();
            out.push(c);
        }
    }
    push_run(out, &run);
}

fn push_run(out: &mut String, run: &str) {
    let inner_capital = run.chars().skip(1).any(|c| c.is_ascii_uppercase());
    if run.len() >= 16 && (run.chars().any(|c| c.is_ascii_digit()) || inner_capital) {
        out.push_str("[token]");
        return;
    }
    let mut digits = String::new();
    for c in run.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            push_digits(out, &digits);
            digits.clear();
            out.push(c);
        }
    }
    push_digits(out, &digits);
}

/// A run of digits: as it is when short (reply codes, `127`), else `[digits]`.
fn push_digits(out: &mut String, digits: &str) {
    if digits.len() >= 4 {
        out.push_str("[digits]");
    } else {
        out.push_str(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_replaced_and_the_reply_kept() {
        assert_eq!(
            redact("5.1.1 <victim@example.com>: Recipient address rejected: User unknown"),
            "5.1.1 <[address]>: Recipient address rejected: User unknown"
        );
        assert_eq!(
            redact("mailto:Ada.Lovelace+tag@mail.example.org, \"bob@x\""),
            "mailto:[address], \"[address]\""
        );
    }

    #[test]
    fn codes_and_tokens_are_replaced_and_ordinary_words_kept() {
        assert_eq!(
            redact("Your sign-in code: 123456 (or 1234-5678)"),
            "Your sign-in code: [digits] (or [digits]-[digits])"
        );
        assert_eq!(
            redact("https://app.test/auth/verify?token=B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq"),
            "https://app.test/auth/verify?token=[token]"
        );
        assert_eq!(
            redact("550 5.7.1 internationalization Message-rejected 127.0.0.1"),
            "550 5.7.1 internationalization Message-rejected 127.0.0.1"
        );
    }

    #[test]
    fn control_characters_become_spaces_and_long_text_is_cut() {
        assert_eq!(redact("line one\r\nline\ttwo\u{1b}[31m"), "line one  line two [31m");
        let long = redact(&"word ".repeat(100));
        assert_eq!(long.chars().count(), MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
