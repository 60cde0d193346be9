//! Field types stricter than poem-openapi's defaults: request strings of a
//! documented shape ([`Shaped`]: a number or a boolean is refused, not turned
//! into text), optional request fields that may be `null` ([`Optional`]), and
//! response fields that are always present and may be `null` ([`Nullable`]).

use std::{borrow::Cow, fmt};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

/// The parts of `Type` that [`Nullable`] and [`Optional`] take from the
/// `Option<T>` they wrap (they differ in `IS_REQUIRED`, name and schema).
macro_rules! option_type_methods {
    () => {
        fn register(registry: &mut poem_openapi::registry::Registry) {
            T::register(registry);
        }

        fn as_raw_value(&self) -> Option<&Self::RawValueType> {
            self.0.as_ref().and_then(Type::as_raw_value)
        }

        fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
            match &self.0 {
                Some(value) => value.raw_element_iter(),
                None => Box::new(std::iter::empty()),
            }
        }
    };
}

/// A wrapper of `Option<T>` parsed as the `Option` is (absent and `null` are `None`).
macro_rules! parse_like_option {
    ($wrapper:ident) => {
        impl<T: ParseFromJSON> ParseFromJSON for $wrapper<T> {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                Option::<T>::parse_from_json(value)
                    .map(Self)
                    .map_err(ParseError::propagate)
            }
        }
    };
}

/// A response field that is always present and may be `null`, documented as
/// `nullable: true`. (`Option` is documented as an optional field of its
/// type, which generated clients then refuse to find `null` in.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nullable<T>(pub Option<T>);

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Self(value)
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;

    type RawValueType = T::RawValueType;

    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = match T::schema_ref() {
            MetaSchemaRef::Inline(schema) => *schema,
            reference @ MetaSchemaRef::Reference(_) => MetaSchema {
                all_of: vec![reference],
                ..MetaSchema::ANY
            },
        };
        schema.nullable = true;
        MetaSchemaRef::Inline(Box::new(schema))
    }

    option_type_methods!();
}

parse_like_option!(Nullable);

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.as_ref().and_then(ToJSON::to_json).unwrap_or(Value::Null))
    }
}

/// The documented shape of a request string: its schema (`format`, `pattern`,
/// lengths) and the server's own rule for it, which must agree (a test sends
/// values on both sides of the line).
pub trait Shape: Send + Sync + 'static {
    /// The name of the type (unique per shape).
    const NAME: &'static str;
    const FORMAT: Option<&'static str> = None;
    /// An ECMA-262 pattern, anchored, without look-around (generated clients
    /// and fuzzers compile it with several regex engines).
    const PATTERN: &'static str;
    const MIN_LENGTH: usize;
    const MAX_LENGTH: usize;
    /// Longer than this is refused while parsing (400 `invalid_request`),
    /// before any work; between `MAX_LENGTH` and this, the handler refuses
    /// it with its own code.
    const PARSE_LIMIT: usize = Self::MAX_LENGTH;
    /// Whether a value outside the shape is refused while the body is parsed
    /// (400 `invalid_request`); otherwise the handler refuses it with its own
    /// code (400 `invalid_email`, 400 `invalid_redirect`).
    const STRICT: bool;
    /// The server's rule: whether `value` has the shape.
    fn fits(value: &str) -> bool;
}

/// A JSON string of shape `S`: unlike `String` in poem-openapi, a number or a
/// boolean is refused (400) rather than turned into text. `Debug` shows only
/// the length, since request fields carry emails, codes and tokens.
pub struct Shaped<S>(String, std::marker::PhantomData<S>);

impl<S> Shaped<S> {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), std::marker::PhantomData)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S> Clone for Shaped<S> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<S> fmt::Debug for Shaped<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shaped(<{} bytes>)", self.0.len())
    }
}

impl<S: Shape> Type for Shaped<S> {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;

    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        S::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: S::FORMAT,
            pattern: Some(S::PATTERN.to_owned()),
            min_length: Some(S::MIN_LENGTH),
            max_length: Some(S::MAX_LENGTH),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Shape> ParseFromJSON for Shaped<S> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            // Too long is refused before any work, whatever the shape.
            Some(Value::String(s)) if s.chars().count() > S::PARSE_LIMIT => {
                Err(ParseError::custom(format!("longer than {} characters", S::PARSE_LIMIT)))
            }
            Some(Value::String(s)) if S::STRICT && !S::fits(&s) => {
                Err(ParseError::custom(format!("not a valid `{}`", S::NAME)))
            }
            Some(Value::String(s)) => Ok(Self::new(s)),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl<S: Shape> ToJSON for Shaped<S> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// An email address as sent: ASCII `local@domain.tld` (see
/// [`EmailAddress`](crate::auth::email_address::EmailAddress)), which may be
/// surrounded by spaces, tabs and line breaks (trimmed); the handler answers
/// 400 `invalid_email` for anything else.
pub struct EmailShape;

/// One character of an unquoted local part, besides the dot.
macro_rules! atom {
    () => {
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
    };
}
/// A domain label: letters, digits and inner hyphens, at most 63.
macro_rules! label {
    () => {
        "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    };
}

impl Shape for EmailShape {
    const NAME: &'static str = "email";
    // `format: email` tells generated clients and form builders what the field
    // is; the pattern and the lengths are the rule (validators disagree on the
    // format's edges: doubled dots, `--` in a label, whitespace around it,
    // which the server trims).
    const FORMAT: Option<&'static str> = Some("email");
    const PATTERN: &'static str = concat!(
        "^[ \\t\\r\\n]*",
        atom!(),
        "(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,62}",
        atom!(),
        ")?@(?:",
        label!(),
        "\\.)+[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9][ \\t\\r\\n]*$"
    );
    const MIN_LENGTH: usize = 6;
    const MAX_LENGTH: usize = crate::auth::email_address::MAX_LEN;
    /// Addresses up to 320 characters are answered `invalid_email`, as before
    /// the shape was documented.
    const PARSE_LIMIT: usize = 320;
    const STRICT: bool = false;

    fn fits(value: &str) -> bool {
        let inner = value.trim_matches([' ', '\t', '\r', '\n']);
        value.chars().count() <= Self::MAX_LENGTH
            && inner.trim() == inner
            && crate::auth::email_address::EmailAddress::parse(inner).is_some()
    }
}

/// A one-time code as typed: digits, with spaces and dashes anywhere
/// (`123 456`, `123-456`). A code of the wrong number of digits has the shape
/// and is answered 401 `invalid_code`, as a wrong one is.
pub struct CodeShape;

impl Shape for CodeShape {
    const NAME: &'static str = "code";
    const PATTERN: &'static str = "^[0-9 -]+$";
    const MIN_LENGTH: usize = 1;
    const MAX_LENGTH: usize = 64;
    const STRICT: bool = true;

    fn fits(value: &str) -> bool {
        (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-'))
    }
}

/// A refresh token or magic-link token: 43 characters of base64url (32
/// random bytes, unpadded).
pub struct TokenShape;

impl Shape for TokenShape {
    const NAME: &'static str = "token";
    const PATTERN: &'static str = "^[A-Za-z0-9_-]{43}$";
    const MIN_LENGTH: usize = 43;
    const MAX_LENGTH: usize = 43;
    const STRICT: bool = true;

    fn fits(value: &str) -> bool {
        crate::auth::is_token_shaped(value)
    }
}

/// An absolute http(s) URL (`scheme://authority` then anything from `/`, `?`
/// or `#` on, which the URL standard escapes); whether it is allowed is the
/// handler's 400 `invalid_redirect` (its origin must be on `REDIRECT_ALLOW_LIST`).
pub struct RedirectShape;

impl Shape for RedirectShape {
    const NAME: &'static str = "redirect_url";
    const FORMAT: Option<&'static str> = Some("uri");
    const PATTERN: &'static str = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+(?:[/?#][\\s\\S]*)?$";
    const MIN_LENGTH: usize = 8;
    const MAX_LENGTH: usize = crate::auth::magic_link::MAX_REDIRECT_LEN;
    const STRICT: bool = false;

    fn fits(value: &str) -> bool {
        let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
        let Some(rest) = ["http://", "https://"]
            .iter()
            .find_map(|s| lower.starts_with(s).then(|| &value[s.len()..]))
        else {
            return false;
        };
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..host_end];
        (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&value.chars().count())
            && !authority.is_empty()
            && !authority.contains(|c: char| c == '@' || c.is_whitespace())
    }
}

/// A language tag (BCP 47 shape): `de`, `pt-BR`, `zh-Hant-TW`.
pub struct LocaleShape;

impl Shape for LocaleShape {
    const NAME: &'static str = "locale";
    const PATTERN: &'static str = "^[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*$";
    const MIN_LENGTH: usize = 2;
    const MAX_LENGTH: usize = crate::email::locale::MAX_TAG_LEN;
    const STRICT: bool = true;

    fn fits(value: &str) -> bool {
        crate::email::locale::parse_tag(value).is_some()
    }
}

pub type Email = Shaped<EmailShape>;
pub type Code = Shaped<CodeShape>;
pub type Token = Shaped<TokenShape>;
pub type RedirectUrl = Shaped<RedirectShape>;
pub type Locale = Shaped<LocaleShape>;

/// An optional request field that may also be `null`, which means the same
/// as leaving it out; documented as not required and `nullable: true`.
#[derive(Debug, Clone)]
pub struct Optional<T>(pub Option<T>);

impl<T> Optional<T> {
    pub fn as_ref(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T: Type> Type for Optional<T> {
    const IS_REQUIRED: bool = false;

    type RawValueType = T::RawValueType;

    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("optional_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        Nullable::<T>::schema_ref()
    }

    option_type_methods!();
}

parse_like_option!(Optional);

impl<T: ToJSON> ToJSON for Optional<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.as_ref().and_then(ToJSON::to_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented pattern and lengths of `S` against its server rule,
    /// over `values`: they agree on each one.
    fn agree<S: Shape>(values: &[&str]) {
        let pattern = regex::Regex::new(S::PATTERN).expect("the pattern compiles");
        for value in values {
            let len = value.chars().count();
            let documented = pattern.is_match(value) && (S::MIN_LENGTH..=S::MAX_LENGTH).contains(&len);
            assert_eq!(documented, S::fits(value), "{}: {value:?}", S::NAME);
        }
    }

    #[test]
    fn the_documented_email_shape_is_the_server_rule() {
        let local64 = format!("{}@example.com", "a".repeat(64));
        let local65 = format!("{}@example.com", "a".repeat(65));
        let label63 = format!("ada@{}.com", "b".repeat(63));
        let label64 = format!("ada@{}.com", "b".repeat(64));
        let long = format!("ada@{}.example.com", vec!["c".repeat(60); 4].join("."));
        agree::<EmailShape>(&[
            "ada@example.com",
            "ADA@Example.COM",
            " ada@example.com\r\n",
            "\tada@example.com",
            "\u{a0}ada@example.com",
            "ada@example.com\u{b}",
            "a..da@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "o'hara+x@mail.example.xn--p1ai",
            "ada@example.1a",
            "ada@example.c",
            "ada@1.2.3.4",
            "ada@-example.com",
            "ada@example-.com",
            "ada@example..com",
            "ada@example",
            "ada",
            "@example.com",
            "ada@@example.com",
            "ada lovelace@example.com",
            "ädä@example.com",
            "ada@example.com\u{0}",
            "\"ada\"@example.com",
            "a@b.co",
            "",
            &local64,
            &local65,
            &label63,
            &label64,
            &long,
        ]);
    }

    #[test]
    fn the_other_documented_shapes_are_the_server_rules() {
        agree::<CodeShape>(&[
            "123456",
            "123 456",
            "123-456",
            " 1-2 ",
            "12a456",
            "",
            "١٢٣",
            &"1".repeat(65),
        ]);
        let token = "A".repeat(43);
        agree::<TokenShape>(&[
            &token,
            &token[..42],
            &format!("{token}A"),
            "B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq",
            "B8Ly4nQ+x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq",
            "B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2T=",
        ]);
        agree::<RedirectShape>(&[
            "https://app.example.com/welcome",
            "HTTP://app.example.com",
            "http://a",
            "https://app.example.com/a\u{0}b\r\nx",
            "https://user@app.example.com/",
            "https://app .example.com/",
            "https://",
            "https:app.example.com",
            "ftp://app.example.com/",
            "//app.example.com/",
        ]);
        agree::<LocaleShape>(&["de", "pt-BR", "zh-Hant-TW", "es-419", "d", "de_DE", "de-", " de", "1de"]);
    }

    #[test]
    fn values_are_refused_while_parsing_when_too_long_or_strictly_out_of_shape() {
        let parse = |v: &str| Code::parse_from_json(Some(Value::String(v.to_owned())));
        assert!(parse("123 456").is_ok());
        assert!(parse("12a456").is_err());
        let email = |v: String| Email::parse_from_json(Some(Value::String(v)));
        assert!(email("not an address".to_owned()).is_ok(), "the handler refuses it");
        assert!(email("a".repeat(255)).is_ok(), "invalid_email, from the handler");
        assert!(email("a".repeat(321)).is_err());
        assert!(Optional::<Locale>::parse_from_json(Some(Value::Null)).is_ok_and(|l| l.0.is_none()));
        assert!(Email::parse_from_json(Some(Value::from(5))).is_err());
    }
}
