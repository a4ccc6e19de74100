//! Finding the PostgreSQL binaries, and telling CI apart.

use std::path::{Path, PathBuf};

/// Whether the tests run under CI (`CI=true` or `CI=1`): then a missing PostgreSQL is an error.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("TRUE") | Ok("True") | Ok("1")
    )
}

/// What the harness runs from the server's bin dir.
const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

fn has_server_binaries(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// The directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`):
/// `$PG_BIN_DIR` when set (and it holds them), else the newest Debian-style
/// `/usr/lib/postgresql/<version>/bin` that holds them, else the directory of `initdb` on
/// `$PATH`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return has_server_binaries(&dir).then_some(dir);
    }
    newest_versioned_dir(Path::new("/usr/lib/postgresql")).or_else(initdb_on_path)
}

/// The newest `<root>/<version>/bin` with the server binaries; versions compare numerically
/// (`9.6` < `15` < `16`).
fn newest_versioned_dir(root: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn initdb_on_path() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file())
}

/// `psql`: next to the server binaries when it is there (Debian puts it there too), else on
/// `$PATH`, else `/usr/bin/psql`.
pub(crate) fn psql_binary(bin_dir: &Path) -> PathBuf {
    let beside = bin_dir.join("psql");
    if beside.is_file() {
        return beside;
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("psql"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/psql"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins_numerically() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16", "notaversion"] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for b in SERVER_BINARIES {
                std::fs::write(bin.join(b), "").unwrap();
            }
        }
        // 17 lacks the binaries: skipped.
        std::fs::create_dir_all(root.path().join("17").join("bin")).unwrap();
        assert_eq!(
            newest_versioned_dir(root.path()),
            Some(root.path().join("16").join("bin"))
        );
    }
}
