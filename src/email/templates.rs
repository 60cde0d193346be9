//! The messages sesame sends, written as minijinja templates: for the code
//! and for the link, a subject, a plain-text and an HTML part, in English and
//! German built in (`src/email/templates/<locale>/`).
//!
//! `EMAIL_TEMPLATES_DIR` overrides any of them per locale, and adds locales:
//! `<dir>/<locale>/code.subject.txt`, `code.txt`, `code.html`,
//! `link.subject.txt`, `link.txt`, `link.html`. A part missing in a locale
//! comes from the tag's shorter form (`pt-BR` → `pt`), then the default
//! locale, then English. The variables are:
//!
//! | variable | in | value |
//! |---|---|---|
//! | `app_name` | all | `APP_NAME` |
//! | `email` | all | the recipient's address |
//! | `expires_in` | all | minutes the code or link stays valid (rounded up) |
//! | `code` | `code.*` | the one-time code |
//! | `link` | `link.*` | the magic link |
//!
//! `.html` templates escape every value; an unknown variable is an error.
//! Every template is loaded and rendered once with sample values at
//! start-up, so a syntax error or an unknown variable stops start-up with
//! the file and line named, never a failed send.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};

use super::{
    Message,
    locale::{fallbacks, parse_tag},
};

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The one-time code (`code.*`).
    Code,
    /// The magic link (`link.*`).
    Link,
}

impl Kind {
    fn stem(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Link => "link",
        }
    }
}

/// The file names of a kind's parts: subject, plain text, HTML.
fn files(kind: Kind) -> [String; 3] {
    let stem = kind.stem();
    [
        format!("{stem}.subject.txt"),
        format!("{stem}.txt"),
        format!("{stem}.html"),
    ]
}

/// The locale that always has every template.
pub const BUILT_IN_FALLBACK: &str = "en";

/// The built-in templates: (locale, file, source).
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("en", "code.subject.txt", include_str!("templates/en/code.subject.txt")),
    ("en", "code.txt", include_str!("templates/en/code.txt")),
    ("en", "code.html", include_str!("templates/en/code.html")),
    ("en", "link.subject.txt", include_str!("templates/en/link.subject.txt")),
    ("en", "link.txt", include_str!("templates/en/link.txt")),
    ("en", "link.html", include_str!("templates/en/link.html")),
    ("de", "code.subject.txt", include_str!("templates/de/code.subject.txt")),
    ("de", "code.txt", include_str!("templates/de/code.txt")),
    ("de", "code.html", include_str!("templates/de/code.html")),
    ("de", "link.subject.txt", include_str!("templates/de/link.subject.txt")),
    ("de", "link.txt", include_str!("templates/de/link.txt")),
    ("de", "link.html", include_str!("templates/de/link.html")),
];

/// The values a message is rendered with (besides `app_name`).
struct Values<'a> {
    email: &'a str,
    expires_in: u64,
    code: &'a str,
    link: &'a str,
}

/// Every template, checked; cheap to clone.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
    /// Locales with at least one template, lower case.
    locales: Arc<BTreeSet<String>>,
    default_locale: String,
    app_name: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("locales", &self.locales)
            .field("default_locale", &self.default_locale)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, with `dir`'s on top; every problem (one line
    /// each, naming the file and line) when a template does not load or render.
    pub fn load(dir: Option<&Path>, app_name: &str, default_locale: &str) -> Result<Self, Vec<String>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Strings in HTML escaped as everywhere else in sesame (minijinja's own
        // escaping also turns `/` into `&#x2f;`, which makes links unreadable
        // in the source of the message).
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(s) if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() => {
                out.write_str(&escape(s)).map_err(minijinja::Error::from)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        // Where each template came from, for error messages.
        let mut origin = BTreeMap::new();
        let mut problems = Vec::new();
        let mut locales = BTreeSet::new();
        for (locale, file, source) in BUILT_IN {
            let name = format!("{locale}/{file}");
            if let Err(e) = env.add_template_owned(name.clone(), *source) {
                problems.push(describe(&format!("built-in {name}"), &e));
            }
            origin.insert(name, format!("built-in {locale}/{file}"));
            locales.insert((*locale).to_owned());
        }
        if let Some(dir) = dir {
            read_dir(dir, &mut env, &mut origin, &mut locales, &mut problems);
        }
        for (name, from) in &origin {
            if let Err(e) = check(&env, name) {
                problems.push(describe(from, &e));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            env: Arc::new(env),
            locales: Arc::new(locales),
            default_locale: default_locale.to_ascii_lowercase(),
            app_name: app_name.to_owned(),
        })
    }

    /// The locale a message is written in for a request that wants `wanted`
    /// (most wanted first): the first (or its shorter form) with templates,
    /// else the default locale.
    pub fn pick(&self, wanted: &[String]) -> String {
        wanted
            .iter()
            .flat_map(|tag| fallbacks(tag))
            .find(|tag| self.locales.contains(*tag))
            .map_or_else(|| self.default_locale.clone(), str::to_owned)
    }

    /// The default locale (`EMAIL_DEFAULT_LOCALE`), lower case.
    pub fn default_locale(&self) -> &str {
        &self.default_locale
    }

    /// The email with a one-time code, in `locale` (from [`Templates::pick`]).
    pub fn code(&self, locale: &str, to: &str, code: &str, valid_for: Duration) -> Result<Message, minijinja::Error> {
        let values = Values {
            email: to,
            expires_in: minutes(valid_for),
            code,
            link: "",
        };
        self.render(Kind::Code, locale, &values)
    }

    /// The email with a magic link, in `locale` (from [`Templates::pick`]).
    pub fn magic_link(
        &self,
        locale: &str,
        to: &str,
        link: &str,
        valid_for: Duration,
    ) -> Result<Message, minijinja::Error> {
        let values = Values {
            email: to,
            expires_in: minutes(valid_for),
            code: "",
            link,
        };
        self.render(Kind::Link, locale, &values)
    }

    fn render(&self, kind: Kind, locale: &str, values: &Values<'_>) -> Result<Message, minijinja::Error> {
        let ctx = match kind {
            Kind::Code => context! {
                app_name => self.app_name.as_str(), email => values.email,
                expires_in => values.expires_in, code => values.code,
            },
            Kind::Link => context! {
                app_name => self.app_name.as_str(), email => values.email,
                expires_in => values.expires_in, link => values.link,
            },
        };
        let [subject, text, html] = files(kind).map(|file| {
            let name = self.find(locale, &file);
            self.env.get_template(&name).and_then(|t| t.render(ctx.clone()))
        });
        Ok(Message {
            to: values.email.to_owned(),
            subject: one_line(&subject?),
            text: text?,
            html: html?,
        })
    }

    /// The name of the template for `file` in `locale`: the locale's own,
    /// else its shorter form's, else the default locale's, else English.
    fn find(&self, locale: &str, file: &str) -> String {
        fallbacks(locale)
            .chain(fallbacks(&self.default_locale))
            .map(|l| format!("{l}/{file}"))
            .find(|name| self.env.get_template(name).is_ok())
            .unwrap_or_else(|| format!("{BUILT_IN_FALLBACK}/{file}"))
    }
}

/// The override files of `dir`: one folder per locale, known file names only.
fn read_dir(
    dir: &Path,
    env: &mut Environment<'static>,
    origin: &mut BTreeMap<String, String>,
    locales: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("{}: cannot be read: {e}", dir.display()));
            return;
        }
    };
    let known: Vec<String> = [Kind::Code, Kind::Link].into_iter().flat_map(files).collect();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(locale) = parse_tag(&folder) else {
            problems.push(format!(
                "{}: the folder name is not a language tag such as `de` or `pt-BR`",
                path.display()
            ));
            continue;
        };
        let Ok(files) = std::fs::read_dir(&path) else {
            problems.push(format!("{}: cannot be read", path.display()));
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let file_path = file.path();
            if !known.contains(&name) {
                if name.ends_with(".txt") || name.ends_with(".html") {
                    problems.push(format!(
                        "{}: not a template name; expected one of {}",
                        file_path.display(),
                        known.join(", ")
                    ));
                }
                continue;
            }
            let source = match std::fs::read_to_string(&file_path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{}: cannot be read: {e}", file_path.display()));
                    continue;
                }
            };
            let template = format!("{locale}/{name}");
            let from = file_path.display().to_string();
            if let Err(e) = env.add_template_owned(template.clone(), source) {
                problems.push(describe(&from, &e));
                continue;
            }
            locales.insert(locale.clone());
            origin.insert(template, from);
        }
    }
}

/// Renders `name` once with sample values: an unknown variable, or any other
/// error at render time, shows now.
fn check(env: &Environment<'_>, name: &str) -> Result<(), minijinja::Error> {
    let sample = Values {
        email: "ada@example.com",
        expires_in: 10,
        code: "123456",
        link: "https://app.example.com/auth/verify?token=sample",
    };
    let ctx = if name.contains("/code.") {
        context! { app_name => "sesame", email => sample.email, expires_in => sample.expires_in, code => sample.code }
    } else {
        context! { app_name => "sesame", email => sample.email, expires_in => sample.expires_in, link => sample.link }
    };
    env.get_template(name)?.render(ctx).map(drop)
}

/// `<file>:<line>: <what>`, one line.
fn describe(file: &str, e: &minijinja::Error) -> String {
    let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    one_line(&format!("{file}{line}: {}{detail}", e.kind()))
}

/// Whitespace runs (line breaks included) as one space, trimmed: a subject is one header line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn minutes(d: Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Templates {
        Templates::load(None, "sesame", "en").expect("the built-in templates load")
    }

    #[test]
    fn the_code_is_in_the_subject_and_both_bodies() {
        let t = built_in();
        let m = t
            .code("en", "a@example.com", "123456", Duration::from_secs(600))
            .expect("renders");
        assert_eq!(m.subject, "sesame: Your sign-in code: 123456");
        assert!(m.text.contains("123456") && m.text.contains("10 minutes"));
        assert!(m.html.contains("123456"));
    }

    #[test]
    fn links_are_escaped_in_html() {
        let m = built_in()
            .magic_link(
                "en",
                "a@example.com",
                "https://x.example/v?token=a&b=\"c\"",
                Duration::from_secs(900),
            )
            .expect("renders");
        assert!(m.text.contains("https://x.example/v?token=a&b=\"c\""));
        assert!(
            m.html.contains("https://x.example/v?token=a&amp;b=&quot;c&quot;"),
            "{}",
            m.html
        );
        assert!(m.text.contains("15 minutes"));
    }

    #[test]
    fn a_hostile_app_name_is_escaped_in_html_only() {
        let t = Templates::load(None, "<script>alert(1)</script>", "en").expect("loads");
        let m = t
            .code("en", "a@example.com", "123456", Duration::from_secs(600))
            .expect("renders");
        assert!(m.subject.contains("<script>alert(1)</script>"));
        assert!(!m.html.contains("<script>"), "{}", m.html);
        assert!(m.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", m.html);
    }

    #[test]
    fn a_locale_falls_back_along_its_tag_then_to_the_default() {
        let t = Templates::load(None, "sesame", "de").expect("loads");
        assert_eq!(t.pick(&["de-at".to_owned()]), "de");
        assert_eq!(t.pick(&["fr".to_owned(), "de-ch".to_owned()]), "de");
        assert_eq!(t.pick(&["fr".to_owned()]), "de", "the default locale");
        assert_eq!(t.pick(&[]), "de");
        let m = t
            .code("de", "a@example.com", "123456", Duration::from_secs(600))
            .expect("renders");
        assert_eq!(m.subject, "sesame: Ihr Anmeldecode: 123456");
    }

    #[test]
    fn an_unknown_default_locale_still_writes_english() {
        let t = Templates::load(None, "sesame", "fr").expect("loads");
        assert_eq!(t.pick(&[]), "fr");
        let m = t
            .code("fr", "a@example.com", "1", Duration::from_secs(60))
            .expect("renders");
        assert!(m.subject.starts_with("sesame: Your sign-in code"));
    }

    #[test]
    fn every_built_in_template_exists_for_every_locale() {
        for locale in ["en", "de"] {
            for file in [Kind::Code, Kind::Link].into_iter().flat_map(files) {
                assert!(
                    BUILT_IN.iter().any(|(l, f, _)| *l == locale && *f == file),
                    "{locale}/{file}"
                );
            }
        }
    }
}
