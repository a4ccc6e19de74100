//! How servers are started: `postgresql.conf` settings and the startup deadline.

use std::time::Duration;

/// How long [`PgServer::start`](crate::PgServer::start) waits for a server that accepts
/// connections unless told otherwise (after `initdb`, which has its own deadline).
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings every server gets before the caller's: tests open connection pools.
const DEFAULT_SETTINGS: [(&str, &str); 1] = [("max_connections", "200")];

/// How PostgreSQL servers are started: `postgresql.conf` settings and the startup deadline.
///
/// Every server gets `max_connections = 200`; `fsync` stays on (PostgreSQL's default), so
/// commits are as durable, and as slow, as in production. `listen_addresses`, `port` and
/// `unix_socket_directories` belong to the harness (given on the command line, they win over
/// the file).
#[derive(Clone, Debug)]
pub struct PgOptions {
    settings: Vec<(String, String)>,
    startup_timeout: Option<Duration>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            settings: DEFAULT_SETTINGS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            startup_timeout: None,
        }
    }
}

impl PgOptions {
    /// The defaults: `max_connections = 200`, a 30 s startup deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `postgresql.conf` line `name = 'value'`, e.g. `("max_connections", "50")` or
    /// `("log_min_duration_statement", "0")`; a later setting of the same name wins. The value
    /// is quoted (PostgreSQL accepts quoted numbers and booleans too).
    pub fn with_setting(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.settings.push((name.into(), value.to_string()));
        self
    }

    /// How long to wait for the server to accept connections after it was spawned (also after
    /// a restart, which may include crash recovery).
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    pub(crate) fn startup_timeout(&self) -> Duration {
        self.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT)
    }

    /// The lines appended to `postgresql.conf`.
    pub(crate) fn conf_lines(&self) -> String {
        let mut out = String::from("\n# Added by pg-harness.\n");
        for (name, value) in &self.settings {
            out.push_str(&format!("{name} = {}\n", quote_literal(value)));
        }
        out
    }
}

/// `value` as a single-quoted SQL / `postgresql.conf` literal (quotes doubled; with
/// `standard_conforming_strings`, the default, backslashes are plain characters in SQL).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_quoted_and_later_ones_come_last() {
        let lines = PgOptions::new()
            .with_setting("max_connections", 50)
            .with_setting("application_name", "it's")
            .conf_lines();
        let max_default = lines.find("max_connections = '200'").unwrap();
        let max_ours = lines.find("max_connections = '50'").unwrap();
        assert!(max_default < max_ours);
        assert!(lines.contains("application_name = 'it''s'"));
    }
}
