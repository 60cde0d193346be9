//! The [`Reader`]: turns variables into typed values and collects every problem
//! instead of stopping at the first. It knows forms (numbers, durations, URLs,
//! origin lists), not settings: names and defaults live in `sections`.

use std::{str::FromStr, time::Duration};

use url::Url;

use super::{ConfigError, MAX_DURATION, origin_of, parse_duration};

/// Reads variables through a lookup and collects every problem.
pub(super) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    /// `value` when nothing was wrong, else every problem at once.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// The trimmed value; unset and empty both mean "use the default".
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Records that `name` is not of the `expected` form; `got` is the value, if it may be shown.
    pub(super) fn problem(&mut self, name: &str, expected: &str, got: Option<&str>) {
        self.problems.push(match got {
            Some(v) => format!("{name}: expected {expected}, got {v:?}"),
            None => format!("{name}: expected {expected}"),
        });
    }

    /// A problem already written as one line, beginning with the variable's name.
    pub(super) fn line(&mut self, line: String) {
        self.problems.push(line);
    }

    /// A problem with a secret: the value is not repeated.
    pub(super) fn secret_problem(&mut self, name: &str, expected: &str) {
        self.problem(name, expected, None);
    }

    /// Free text, `default` when unset.
    pub(super) fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_owned())
    }

    /// Any [`FromStr`] type; `expected` describes its form.
    pub(super) fn parse<T: FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.problem(name, expected, Some(&v));
                default
            }),
        }
    }

    /// A whole number from `min` to `max`.
    pub(super) fn int_in(&mut self, name: &str, default: u32, min: u32, max: u32) -> u32 {
        let expected = format!("a whole number from {min} to {max}");
        match self.raw(name) {
            None => default,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.problem(name, &expected, Some(&v));
                    default
                }
            },
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub(super) fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name) {
            None => default,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    self.problem(name, "`true` or `false`", Some(&v));
                    default
                }
            },
        }
    }

    /// One of the named `options`, case-insensitive.
    pub(super) fn choice<T: Copy>(&mut self, name: &str, default: T, options: &[(&str, T)]) -> T {
        let Some(v) = self.raw(name) else {
            return default;
        };
        if let Some((_, t)) = options.iter().find(|(k, _)| k.eq_ignore_ascii_case(&v)) {
            return *t;
        }
        let names: Vec<String> = options.iter().map(|(k, _)| format!("`{k}`")).collect();
        self.problem(name, &format!("one of {}", names.join(", ")), Some(&v));
        default
    }

    /// A duration such as `90s`, `15m`, `1h`, `30d` (a bare number is seconds).
    pub(super) fn duration(&mut self, name: &str, default: &str, min: Duration) -> Duration {
        let fallback = parse_duration(default).unwrap_or(min);
        let Some(v) = self.raw(name) else {
            return fallback;
        };
        match parse_duration(&v) {
            Some(d) if d >= min && d <= MAX_DURATION => d,
            _ => {
                let expected = if min.is_zero() {
                    "a duration such as 30s, 15m, 1h or 30d, at most 3650d".to_owned()
                } else {
                    format!(
                        "a duration such as 30s, 15m, 1h or 30d, at least {} and at most 3650d",
                        humantime::format_duration(min)
                    )
                };
                self.problem(name, &expected, Some(&v));
                fallback
            }
        }
    }

    /// A [`duration`](Self::duration), or `None` when unset or equal to `never` (such as `none`).
    pub(super) fn optional_duration(
        &mut self,
        name: &str,
        never: &str,
        default: &str,
        min: Duration,
    ) -> Option<Duration> {
        match self.raw(name) {
            None => None,
            Some(v) if v.eq_ignore_ascii_case(never) => None,
            Some(_) => Some(self.duration(name, default, min)),
        }
    }

    /// An absolute `http` or `https` URL.
    #[expect(
        clippy::expect_used,
        reason = "defaults are literals checked by defaults_match_the_spec"
    )]
    pub(super) fn http_url(&mut self, name: &str, default: &str) -> Url {
        let fallback = Url::parse(default).expect("default URL is valid");
        let Some(v) = self.raw(name) else {
            return fallback;
        };
        match Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                self.problem(
                    name,
                    "an absolute http(s) URL such as https://app.example.com",
                    Some(&v),
                );
                fallback
            }
        }
    }

    /// A comma-separated list of origins (`https://app.example.com`); `None` when unset.
    pub(super) fn origins(&mut self, name: &str) -> Option<Vec<String>> {
        let v = self.raw(name)?;
        let mut out = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Url::parse(item) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && matches!(u.path(), "" | "/")
                        && u.query().is_none() =>
                {
                    out.push(origin_of(&u))
                }
                _ => self.problem(
                    name,
                    "a comma-separated list of origins such as https://app.example.com,http://localhost:3000",
                    Some(item),
                ),
            }
        }
        Some(out)
    }
}
