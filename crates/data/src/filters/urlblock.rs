//! URL/domain blocklist in the UT1 format: per category, a `domains` file (one domain per line)
//! and a `urls` file (one `host/path` per line). A document is rejected when its URL's host,
//! or any parent domain of it (which covers the registered domain), is listed, or when its
//! `host/path` or a parent path is listed. Documents without a URL pass.

use super::{Filter, FilterDoc};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlBlocklistConfig {
    pub enabled: bool,
    /// Domain list files.
    pub domains: Vec<PathBuf>,
    /// URL list files.
    pub urls: Vec<PathBuf>,
    /// UT1 category directories; each contributes its `domains` and `urls` files.
    pub dirs: Vec<PathBuf>,
}

impl UrlBlocklistConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled && self.domains.is_empty() && self.urls.is_empty() && self.dirs.is_empty() {
            bail!("filters.url_blocklist is enabled but names no lists: set domains, urls or dirs");
        }
        Ok(())
    }
}

pub struct UrlBlocklist {
    domains: HashSet<String>,
    urls: HashSet<String>,
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read blocklist {} (filters.url_blocklist)",
            path.display()
        )
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.to_lowercase())
        .collect())
}

/// Host of a URL: scheme, user info, port and a trailing dot removed, lowercased.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if authority.starts_with('[') {
        authority.split(']').next()?.trim_start_matches('[')
    } else {
        authority.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_lowercase();
    (!host.is_empty()).then_some(host)
}

/// `host/path` without scheme, `www.`, query or fragment, lowercased, no trailing slash.
fn url_key(url: &str) -> Option<String> {
    let host = url_host(url)?;
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    let rest = url.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let path = rest
        .find('/')
        .map_or("", |i| &rest[i..])
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let key = format!("{host}{}", path.to_lowercase());
    Some(key.trim_end_matches('/').to_string())
}

fn normalize_domain(d: &str) -> String {
    d.trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_string()
}

impl UrlBlocklist {
    pub fn load(c: &UrlBlocklistConfig) -> Result<Self> {
        let mut domains = HashSet::new();
        let mut urls = HashSet::new();
        for f in &c.domains {
            domains.extend(read_lines(f)?.iter().map(|d| normalize_domain(d)));
        }
        for f in &c.urls {
            urls.extend(read_lines(f)?.into_iter().filter_map(|u| url_key(&u)));
        }
        for d in &c.dirs {
            let (df, uf) = (d.join("domains"), d.join("urls"));
            if !df.exists() && !uf.exists() {
                bail!(
                    "{}: a UT1 category directory needs a `domains` or `urls` file",
                    d.display()
                );
            }
            if df.exists() {
                domains.extend(read_lines(&df)?.iter().map(|d| normalize_domain(d)));
            }
            if uf.exists() {
                urls.extend(read_lines(&uf)?.into_iter().filter_map(|u| url_key(&u)));
            }
        }
        Ok(UrlBlocklist { domains, urls })
    }

    pub fn check(&self, url: &str) -> Option<&'static str> {
        let host = url_host(url)?;
        // The host and each parent domain with at least two labels.
        let mut h = host.as_str();
        loop {
            if self.domains.contains(h) {
                return Some("url_blocklist/domain");
            }
            match h.split_once('.') {
                Some((_, parent)) if parent.contains('.') => h = parent,
                _ => break,
            }
        }
        if !self.urls.is_empty() {
            let key = url_key(url)?;
            let mut k = key.as_str();
            loop {
                if self.urls.contains(k) {
                    return Some("url_blocklist/url");
                }
                match k.rfind('/') {
                    Some(i) => k = &k[..i],
                    None => break,
                }
            }
        }
        None
    }
}

impl Filter for UrlBlocklist {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        doc.url.and_then(|u| self.check(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hosts_and_paths() {
        assert_eq!(
            url_host("HTTPS://user@WWW.Example.com:8080/a?b").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            url_key("http://www.example.com/A/b/?q=1").as_deref(),
            Some("example.com/a/b")
        );
        let b = UrlBlocklist {
            domains: ["blocked-example.test".to_string()].into_iter().collect(),
            urls: ["fine-example.test/private".to_string()]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            b.check("https://blocked-example.test/x"),
            Some("url_blocklist/domain")
        );
        assert_eq!(
            b.check("http://a.b.blocked-example.test"),
            Some("url_blocklist/domain")
        );
        assert_eq!(b.check("http://notblocked-example.test"), None);
        assert_eq!(
            b.check("http://www.fine-example.test/private/page.html"),
            Some("url_blocklist/url")
        );
        assert_eq!(b.check("http://fine-example.test/public"), None);
        assert_eq!(b.check("not a url at all"), None);
    }
}
