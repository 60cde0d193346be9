//! Which language a message is written in: language tags (BCP 47) as a
//! request names them (`locale` in the body, else `Accept-Language`), in
//! order of preference, and how a tag falls back (`pt-BR` → `pt`).
//!
//! Tags are compared in lower case (`pt-BR` and `pt-br` are one tag).

/// Longest tag accepted; longer ones are refused rather than cut.
pub const MAX_TAG_LEN: usize = 35;

/// Most entries of an `Accept-Language` header that are looked at.
const MAX_ACCEPTED: usize = 16;

/// The tag in lower case when it has the shape of a BCP 47 language tag: a
/// primary subtag of 2 to 8 letters, then subtags of 1 to 8 letters or
/// digits, separated by `-` (`de`, `pt-BR`, `zh-Hant-TW`, `es-419`).
pub fn parse_tag(tag: &str) -> Option<String> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN {
        return None;
    }
    let mut subtags = tag.split('-');
    let primary = subtags.next()?;
    let primary_ok = (2..=8).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    let rest_ok = subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    (primary_ok && rest_ok).then(|| tag.to_ascii_lowercase())
}

/// The tag and its shorter forms, longest first: `pt-br` → `pt-br`, `pt`.
pub fn fallbacks(tag: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(tag.len());
    std::iter::from_fn(move || {
        let cut = end?;
        let this = tag.get(..cut)?;
        end = this.rfind('-');
        Some(this)
    })
}

/// The languages of an `Accept-Language` header, most wanted first (by their
/// `q` value; equal ones in the header's order). `*`, `q=0` and entries that
/// are not tags are left out.
pub fn accepted(header: &str) -> Vec<String> {
    let mut found: Vec<(u16, String)> = header
        .split(',')
        .take(MAX_ACCEPTED)
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let tag = parse_tag(parts.next()?.trim())?;
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .map_or(Some(1000), quality)?;
            (q > 0).then_some((q, tag))
        })
        .collect();
    found.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
    found.into_iter().map(|(_, tag)| tag).collect()
}

/// A `q` value in thousandths (`0.8` → 800); `None` when malformed.
fn quality(q: &str) -> Option<u16> {
    let value: f32 = q.trim().parse().ok()?;
    // Rounded to thousandths, as RFC 9110 allows no more precision.
    (0.0..=1.0).contains(&value).then(|| (value * 1000.0).round() as u16)
}

/// The request named a `locale` that is not a language tag.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidLocale;

/// The languages a request asks for, most wanted first: its `locale` alone
/// when given (refused when it is not a tag), else its `Accept-Language`.
/// Empty when neither says anything: the default applies.
pub fn wanted(locale: Option<&str>, accept_language: Option<&str>) -> Result<Vec<String>, InvalidLocale> {
    match locale.map(str::trim) {
        Some(tag) => parse_tag(tag).map(|t| vec![t]).ok_or(InvalidLocale),
        None => Ok(accept_language.map(accepted).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_for_shape_and_lower_cased() {
        for (tag, parsed) in [
            ("de", Some("de")),
            ("pt-BR", Some("pt-br")),
            ("zh-Hant-TW", Some("zh-hant-tw")),
            ("es-419", Some("es-419")),
            ("", None),
            ("d", None),
            ("de_DE", None),
            ("de-", None),
            ("-de", None),
            ("1de", None),
            ("de-toolongsubtag", None),
            ("en-US<script>", None),
            ("a-very-long-tag-that-is-longer-than-35", None),
        ] {
            assert_eq!(parse_tag(tag).as_deref(), parsed, "{tag:?}");
        }
    }

    #[test]
    fn a_tag_falls_back_to_its_shorter_forms() {
        assert_eq!(fallbacks("pt-br").collect::<Vec<_>>(), ["pt-br", "pt"]);
        assert_eq!(
            fallbacks("zh-hant-tw").collect::<Vec<_>>(),
            ["zh-hant-tw", "zh-hant", "zh"]
        );
        assert_eq!(fallbacks("de").collect::<Vec<_>>(), ["de"]);
    }

    #[test]
    fn accept_language_is_ordered_by_quality() {
        assert_eq!(accepted("fr;q=0.5, de-CH, en;q=0.8"), ["de-ch", "en", "fr"]);
        assert_eq!(accepted("da, en-GB;q=0.8, en;q=0.7"), ["da", "en-gb", "en"]);
        assert_eq!(accepted("*, de;q=0, it;q=0.1"), ["it"]);
        assert_eq!(accepted("de;q=2, <x>, fr;q=abc, es"), ["es"]);
        assert!(accepted("").is_empty());
    }

    #[test]
    fn the_body_locale_wins_over_the_header_and_must_be_a_tag() {
        assert_eq!(wanted(Some("pt-BR"), Some("de")), Ok(vec!["pt-br".to_owned()]));
        assert_eq!(
            wanted(None, Some("de, en;q=0.5")),
            Ok(vec!["de".to_owned(), "en".to_owned()])
        );
        assert_eq!(wanted(None, None), Ok(vec![]));
        assert_eq!(wanted(Some("not a tag"), Some("de")), Err(InvalidLocale));
    }
}
