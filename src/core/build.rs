//! What this binary is: its version and the commit it was built from. `scripts/release` sets
//! `NSAPI_GIT_COMMIT` at build time; other builds (cargo, the Dockerfile) say `unknown` rather
//! than run git, so a build never depends on the checkout's `.git`.

/// The operator's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the release was built from, or `unknown`.
pub const GIT_COMMIT: &str = match option_env!("NSAPI_GIT_COMMIT") {
    Some(commit) if !commit.is_empty() => commit,
    _ => "unknown",
};

/// The compiler that built this binary (`rustc --version`, as build.rs read it).
pub const RUSTC: &str = env!("NSAPI_RUSTC_VERSION");

/// `0.1.0 (commit 1a2b3c4d5e6f)`: the version and the commit's first 12 characters.
pub fn describe() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let commit = GIT_COMMIT.get(..12).unwrap_or(GIT_COMMIT);
        format!("{VERSION} (commit {commit})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_crates_and_the_commit_is_named() {
        assert_eq!(VERSION, env!("CARGO_PKG_VERSION"));
        let text = describe();
        assert!(text.starts_with(VERSION), "{text}");
        assert!(text.contains("(commit "), "{text}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
