//! List paging per AIP-158: a page size with a default and a cap, and an
//! opaque token that resumes after the last key of the previous page and is
//! only valid for the same query.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger requested page sizes are lowered to this.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Parses a requested page size: 0 is the default, above the cap is the cap,
/// negative is an error.
pub fn page_size(requested: i32) -> Result<u32, String> {
    match u32::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
        Err(_) => Err(format!("must not be negative (got {requested})")),
    }
}

/// Where a page starts: after `after` (exclusive), for the query described by
/// `query` (the request's other fields, so that a token cannot be replayed
/// against a different filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub query: String,
    pub after: String,
}

const TOKEN_VERSION: &str = "p1";
/// Longest cursor a token may carry: a sort key of a few ids.
const MAX_CURSOR_CHARS: usize = 4 * crate::domain::ids::MAX_ID_CHARS;
/// Longest token accepted (base64 of version, query and cursor).
const MAX_TOKEN_BYTES: usize = 4096;

impl PageToken {
    pub fn new(query: impl Into<String>, after: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            after: after.into(),
        }
    }

    pub fn encode(&self) -> String {
        let raw = format!("{TOKEN_VERSION}\n{}\n{}", self.query, self.after);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes a token and checks it belongs to `query`. An empty token is
    /// the first page (`None`).
    pub fn decode(token: &str, query: &str) -> Result<Option<Self>, String> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || "is not a page token issued by this service".to_owned();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let raw = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = raw.splitn(3, '\n');
        let (Some(TOKEN_VERSION), Some(token_query), Some(after)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        // Tokens are not signed: a cursor is caller input like any other,
        // so it gets the id rules before it reaches a query.
        if after.contains('\0') || after.chars().count() > MAX_CURSOR_CHARS {
            return Err(invalid());
        }
        if token_query != query {
            return Err("belongs to a request with different filters".into());
        }
        Ok(Some(Self::new(token_query, after)))
    }
}

/// One page to fetch: at most `size` items after the key `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: u32,
    pub after: Option<String>,
}

impl PageRequest {
    /// Parses `page_size` and `page_token` of a list whose other fields are
    /// described by `query`; both violations are reported together.
    pub fn parse(size: i32, token: &str, query: &str) -> Result<Self, crate::Error> {
        let mut v = crate::domain::Violations::new();
        let size = v.check("page_size", page_size(size));
        let token = v.check("page_token", PageToken::decode(token, query));
        v.finish(|| {
            Some(Self {
                size: size?,
                after: token?.map(|t| t.after),
            })
        })
    }

    /// How many rows to fetch: one more than the page, to know if there is
    /// a next one.
    pub fn fetch(&self) -> u32 {
        self.size.saturating_add(1)
    }
}

/// One page of a list and the token of the next (empty at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Cuts a fetch of `page.fetch()` rows down to one page and the token
    /// for the next, if there is more.
    pub fn cut(
        mut rows: Vec<T>,
        page: &PageRequest,
        query: &str,
        key: impl Fn(&T) -> String,
    ) -> Self {
        let size = page.size as usize;
        if rows.len() <= size {
            return Self {
                items: rows,
                next_page_token: String::new(),
            };
        }
        rows.truncate(size);
        let next_page_token = rows
            .last()
            .map(|last| PageToken::new(query, key(last)).encode())
            .unwrap_or_default();
        Self {
            items: rows,
            next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_caps_and_rejects_negatives() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(1000), Ok(1000));
        assert_eq!(page_size(5000), Ok(1000));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn a_token_round_trips_for_its_own_query_only() {
        let token = PageToken::new("team=a", "rep\n42").encode();
        assert_eq!(
            PageToken::decode(&token, "team=a"),
            Ok(Some(PageToken::new("team=a", "rep\n42")))
        );
        assert!(PageToken::decode(&token, "team=b").is_err());
        assert_eq!(PageToken::decode("", "team=a"), Ok(None));
        assert!(PageToken::decode("garbage!", "team=a").is_err());
        assert!(PageToken::decode(&URL_SAFE_NO_PAD.encode("x"), "").is_err());
    }

    #[test]
    fn a_forged_cursor_with_nul_or_of_any_length_is_refused() {
        let nul = PageToken::new("", "a\0b").encode();
        assert!(PageToken::decode(&nul, "").is_err());
        let long = PageToken::new("", "x".repeat(MAX_CURSOR_CHARS + 1)).encode();
        assert!(PageToken::decode(&long, "").is_err());
        let fits = PageToken::new("", "x".repeat(MAX_CURSOR_CHARS)).encode();
        assert!(PageToken::decode(&fits, "").is_ok());
        assert!(PageToken::decode(&"A".repeat(1 << 20), "").is_err());
    }
}
