//! Caller-chosen identifiers and names.

use std::fmt;

/// Longest id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest display name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Longest quote of caller input inside an error message, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// Quotes caller input for an error message: single-quoted, control
/// characters escaped, cut to 64 characters with the full length named, so
/// an error can neither carry a megabyte back nor break a log line.
pub fn echo(raw: &str) -> String {
    let mut quoted = String::from("'");
    for c in raw.chars().take(MAX_ECHO_CHARS) {
        if c.is_control() {
            quoted.extend(c.escape_default());
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    let chars = raw.chars().count();
    if chars > MAX_ECHO_CHARS {
        quoted.push_str(&format!("... ({chars} characters)"));
    }
    quoted
}

fn parse_id(raw: &str) -> Result<String, String> {
    check_id(raw).map(|()| raw.to_owned())
}

/// The rules of every caller-chosen id (see `parse`), without copying it.
pub fn check_id(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = raw.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(format!(
            "must be at most {MAX_ID_CHARS} characters (got {chars})"
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if raw.trim() != raw {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// 1 to 128 characters, no control characters, no surrounding
            /// whitespace.
            pub fn parse(raw: &str) -> Result<Self, String> {
                parse_id(raw).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A team's id, chosen by the caller (the CRM's id).
    TeamId
);
id_type!(
    /// A rep's id, chosen by the caller (the CRM's id).
    RepId
);

/// A human-readable name: 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        let chars = trimmed.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(format!(
                "must be at most {MAX_NAME_CHARS} characters (got {chars})"
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address as far as a KPI service needs to know: `local@domain`,
/// no spaces, at most 254 characters. Deliverability is the CRM's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars > MAX_EMAIL_CHARS {
            return Err(format!(
                "must be at most {MAX_EMAIL_CHARS} characters (got {chars})"
            ));
        }
        let valid = match raw.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an email address like name@example.com".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_to_128_characters_without_control_characters() {
        assert!(TeamId::parse("emea-west").is_ok());
        assert!(RepId::parse(&"é".repeat(128)).is_ok());
        assert_eq!(
            RepId::parse(&"x".repeat(129)),
            Err("must be at most 128 characters (got 129)".to_owned())
        );
        assert_eq!(TeamId::parse(""), Err("must not be empty".to_owned()));
        assert!(TeamId::parse("a\nb").is_err());
        assert!(TeamId::parse(" a").is_err());
    }

    #[test]
    fn echoes_are_short_and_escaped() {
        assert_eq!(echo("EUR"), "'EUR'");
        assert_eq!(echo("a\0b\n"), "'a\\u{0}b\\n'");
        let long = echo(&"x".repeat(1_000_000));
        assert_eq!(
            long,
            format!("'{}'... (1000000 characters)", "x".repeat(64))
        );
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Anna ").map(|n| n.0),
            Ok("Anna".into())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"n".repeat(201)).is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(Email::parse("anna@example.com").is_ok());
        for bad in [
            "anna",
            "@example.com",
            "anna@",
            "an na@example.com",
            "a@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
