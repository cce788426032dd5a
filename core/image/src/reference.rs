//! Image references (`registry.example:5000/team/app:1.2`, `alpine`, `…@sha256:…`),
//! normalised as docker does: no registry means `docker.io`, a one-component name there
//! means `library/<name>`, no tag and no digest means `:latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry an unqualified name refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path (`library/alpine`, `team/app`).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any (it wins over the tag when pulling).
    pub digest: Option<Digest>,
}

const MAX_REFERENCE: usize = 4096;

impl FromStr for Reference {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        let bad = |reason| ImageError::BadReference {
            reference: boxsock_core::echo::echo(s).to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > MAX_REFERENCE {
            return Err(bad("longer than 4096 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && (t.is_empty()
                || t.len() > 128
                || t.starts_with(['.', '-'])
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest.to_owned())
            }
            _ if !name.contains('/') => (DEFAULT_REGISTRY, format!("library/{name}")),
            _ => (DEFAULT_REGISTRY, name.to_owned()),
        };
        if registry.is_empty()
            || !registry.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad("bad registry host"));
        }
        for comp in path.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && comp.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && comp.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(bad(
                    "a repository path is lower-case [a-z0-9] components joined by . _ - and /",
                ));
            }
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        let r = Reference { registry: registry.to_owned(), repository: path, tag, digest };
        // Normalising adds `docker.io/` and `library/`: the limit holds for the name a
        // reference is stored and listed under, so that name always parses again.
        if r.to_string().len() > MAX_REFERENCE {
            return Err(bad("longer than 4096 bytes once normalised"));
        }
        Ok(r)
    }
}

impl Reference {
    /// The tag or digest the registry is asked for (`/v2/<repo>/manifests/<this>`).
    pub fn selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// `registry/repository:tag` (no digest): the name an image is listed under.
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.registry, self.repository),
            None => format!("{}/{}", self.registry, self.repository),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_limit_holds_for_the_normalised_name() {
        // Found by the fuzzer (CI, session 7): 4090 bytes parse, but `docker.io/library/`
        // made the listed name 4108 bytes, which did not parse again.
        let long = format!("{}:t", "a".repeat(4088));
        assert!(long.len() <= MAX_REFERENCE);
        let err = long.parse::<Reference>().unwrap_err().to_string();
        assert!(err.contains("once normalised"), "{err}");
        let fits = format!("{}:t", "a".repeat(4096 - "docker.io/library/:t".len()));
        let r: Reference = fits.parse().unwrap();
        assert_eq!(r.name().len(), MAX_REFERENCE);
        assert_eq!(r.name().parse::<Reference>().unwrap(), r);
    }

    #[test]
    fn references_normalise_like_docker() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r: Reference = "127.0.0.1:5000/team/app:1.2".parse().unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "team/app"));
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let d = Digest::of(b"x");
        let r: Reference = format!("localhost/a@{d}").parse().unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        for bad in ["", "UPPER", "a/../b", "a:", "a:-x", "a//b", "reg.io/a@sha256:zz"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
